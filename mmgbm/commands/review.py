"""`mmgbm review`: the audit's suspects in a browser, one at a time, for a person to answer; answers become data.

For each target the page shows the suspects of `reports/<target>/audit.csv` (written by `mmgbm audit`), most likely
wrong first, with the photo, the title, the given and the suggested label, the confidence and the modalities that
suggest it. A reviewer keeps the given label, takes the suggestion or picks another of the target's classes; each
answer is appended to `<workdir>/labels/<target>.csv` (mmgbm.corrections), which train, evaluate and audit read.
The page is three static files (mmgbm/data/review: HTML, a little JavaScript, CSS) that fetch JSON from here:
nothing to build, nothing fetched from the internet.

Who may write: bound to this machine (a loopback address), decisions are taken only from pages of this service: a
request from another site's page (its Origin) or sent to a name that merely resolves here (DNS rebinding: its Host)
is refused, so a web page the reviewer happens to open cannot record answers. Bound to any other address, decisions
are refused unless a token is configured (MMGBM_REVIEW_TOKEN when the service starts), which every write must then
carry in the X-Review-Token header, compared in constant time.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name local types.
import hashlib
import hmac
import ipaddress
import os
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import quote, urlsplit

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mmgbm.catalogue import load_split, read_configured
from mmgbm.commands.artifact import MANIFEST, load_artifact
from mmgbm.commands.audit import COLUMNS as AUDIT_COLUMNS
from mmgbm.commands.audit import photo_preview
from mmgbm.commands.serve import PROBLEMS, Problem, answer_problems
from mmgbm.commands.targets import resolve_targets, target_values
from mmgbm.config import Config
from mmgbm.corrections import MAX_FIELD_CHARS, Decision, append_decision, now, read_decisions
from mmgbm.errors import MmgbmError
from mmgbm.features.photos import Photos
from mmgbm.workdir import labels_path, model_dir, report_dir

TOKEN_ENV = "MMGBM_REVIEW_TOKEN"
TOKEN_HEADER = "X-Review-Token"
PHOTO_BOX = (360, 480)
MAX_BODY_BYTES = 64 * 1024  # an answer is a few hundred bytes
DEFAULT_QUEUE = 50
# The page may run only its own script and style, talk only to this service and show photos from here or from the
# catalogue's photo URLs: an injected tag in a title could not run even if it escaped the page's text.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: http: https:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
ASSETS = {"review.js": "text/javascript", "review.css": "text/css"}
REVIEW_PROBLEMS = {
    **PROBLEMS,
    **{
        status: {"model": Problem, "description": text}
        for status, text in (
            (401, f"a token is configured and the request's {TOKEN_HEADER} header does not carry it"),
            (
                403,
                "decisions are not taken from here: another site's page, or a service open to the network without a "
                "token",
            ),
            (404, "no such photo"),
        )
    },
}


class ReviewTarget:
    """One target's suspects as its audit ranked them, the classes a reviewer may pick, and where answers go."""

    def __init__(self, cfg: Config, name: str, table: pd.DataFrame, catalogue: pd.DataFrame, places: Photos):
        self.cfg, self.name = cfg, name
        folder = model_dir(cfg, name)
        model = load_artifact(folder, name).model
        if model.regression:
            raise MmgbmError(f"target {name!r} is a regression; review answers the labels of classification targets")
        # The model's classes and every label the catalogue uses: a label whose training products were all
        # mislabelled is no class of the model, yet it is the right answer for them.
        used = target_values(
            catalogue, cfg.targets[name], cfg.data.splits["train"], model.label_names, cfg.data.id_column
        )
        self.classes = sorted({str(c) for c in model.classes_} | set(used.y))
        self.audit_path = report_dir(cfg, name) / "audit.csv"
        if not self.audit_path.is_file():
            raise MmgbmError(f"{self.audit_path}: no audit of {name!r} yet; run `mmgbm audit -t {name}` first")
        # Both recorded with every answer: which model ranked the suspect, in which audit.
        self.model_fingerprint = _fingerprint(folder / MANIFEST)
        self.audit_fingerprint = _fingerprint(self.audit_path)
        suspects = pd.read_csv(self.audit_path, dtype=str, keep_default_na=False)
        if not set(AUDIT_COLUMNS) <= set(suspects.columns):  # a path target's audit has more: read what it shares
            raise MmgbmError(f"{self.audit_path}: not an audit of this version; run `mmgbm audit -t {name}` again")
        self.suspects = suspects.set_index("id", drop=False)
        self.ids = frozenset(table[cfg.data.id_column])
        shown = table[table[cfg.data.id_column].isin(self.suspects.index)]
        self.places = places
        self.photos = (
            dict(zip(shown[cfg.data.id_column], places.paths(shown[cfg.data.image_column])))
            if cfg.data.image_column
            else {}
        )
        self.labels_path = labels_path(cfg, name)

    def decided(self) -> frozenset[str]:
        """Products decided so far, by anyone: read anew, since another reviewer's service may share the file."""
        decisions = read_decisions(self.cfg, self.name)
        return frozenset() if decisions is None else frozenset(decisions.latest.index)

    def progress(self, decided: frozenset[str]) -> dict[str, int]:
        done = int(self.suspects.index.isin(decided).sum())
        return {"suspects": len(self.suspects), "decided": done, "left": len(self.suspects) - done}

    def queue(self, limit: int) -> dict[str, Any]:
        decided = self.decided()
        waiting = self.suspects[~self.suspects.index.isin(decided)].head(limit)
        return {
            "target": self.name,
            "classes": self.classes,
            **self.progress(decided),
            "queue": [self._shown(row) for row in waiting.itertuples(index=False)],
        }

    def _shown(self, row) -> dict[str, Any]:
        path = self.photos.get(row.id, "")
        photo = (
            path
            if path and self.places.fetched(path)
            else (f"/review/{quote(self.name)}/photo?id={quote(row.id)}" if path else None)
        )
        return {
            "id": row.id,
            "title": row.title,
            "given": row.given_label,
            "suggested": row.suggested_label,
            "confidence": float(row.confidence_wrong),
            "modality": row.modality,
            "photo": photo,
        }

    def photo(self, product_id: str) -> Optional[bytes]:
        """A photo file of a suspect as a JPEG the page can show; None for none (URLs the page loads itself)."""
        preview = photo_preview(self.photos.get(product_id, ""), self.places, PHOTO_BOX)
        return preview if isinstance(preview, bytes) else None

    def decide(self, product_id: str, label: str, by: str) -> dict[str, Any]:
        """Record one answer: the given label and the suggestion come from the audit, not from the request."""
        if product_id not in self.ids:
            raise MmgbmError(f"product {product_id!r} is not in the training table; answer the suspects listed")
        if product_id not in self.suspects.index:
            raise MmgbmError(
                f"product {product_id!r} is not among the suspects of {self.audit_path}; only those are reviewed here"
            )
        if label not in self.classes:
            raise MmgbmError(f"{label!r} is not a class of {self.name!r}; pick one of its {len(self.classes)} classes")
        shown = self.suspects.loc[product_id]
        decision = Decision(
            product_id,
            self.name,
            shown["given_label"],
            shown["suggested_label"],
            label,
            by,
            now(),
            self.model_fingerprint,
            self.audit_fingerprint,
        )
        append_decision(self.labels_path, decision)
        return {"recorded": asdict(decision), **self.progress(self.decided())}


def _fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def reviewed_targets(cfg: Config, targets: list[str] | None) -> list[str]:
    """The named targets, or without names every target with an audit to review."""
    if targets:
        return resolve_targets(cfg, targets)
    audited = [n for n in resolve_targets(cfg, None) if (report_dir(cfg, n) / "audit.csv").is_file()]
    if not audited:
        raise MmgbmError("no audit to review yet; run `mmgbm audit -t TARGET` first, then `mmgbm review`")
    return audited


class ReviewService:
    """The reviewed targets, loaded once (the classes, the audit, the photos' places): no feature or network is
    loaded, so the page is up in seconds."""

    def __init__(self, cfg: Config, targets: list[str] | None = None):
        table = load_split(cfg, "train")
        catalogue = read_configured(cfg, cfg.data.splits["train"], "train")  # its held-out part's labels too
        places = Photos.of(cfg.data)
        self.targets = {
            name: ReviewTarget(cfg, name, table, catalogue, places) for name in reviewed_targets(cfg, targets)
        }


class Answer(BaseModel):
    """A reviewer's answer to one suspect."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(..., min_length=1, max_length=MAX_FIELD_CHARS, description="The product's id")
    decided: str = Field(
        ...,
        min_length=1,
        max_length=MAX_FIELD_CHARS,
        description="The label it should have: the given one to keep it, the suggested, or another "
        "of the target's classes",
    )
    by: str = Field("", max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$", description="Who answers (optional)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_review_app(service: ReviewService, host: str = "127.0.0.1", token: Optional[str] = None):
    """The FastAPI application of the review page; `host` is the address the service is bound to."""
    from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request
    from fastapi.responses import HTMLResponse, RedirectResponse, Response

    app = FastAPI(title="mmgbm review", version="1", summary="Answer the audit's suspect labels.")
    answer_problems(app, MAX_BODY_BYTES)
    Target = Literal[tuple(service.targets)]  # type: ignore[valid-type]
    page = resources.files("mmgbm").joinpath("data/review/review.html").read_text()

    def may_write(
        request: Request,
        x_review_token: Optional[str] = Header(
            None, description=f"The token of {TOKEN_ENV}, where the service was started with one"
        ),
    ) -> None:
        if token is not None:
            if x_review_token is None or not hmac.compare_digest(x_review_token.encode(), token.encode()):
                raise HTTPException(401, f"send the review token ({TOKEN_ENV}) in the {TOKEN_HEADER} header")
            return
        if not is_loopback(host):
            raise HTTPException(
                403,
                f"this service listens on {host}, beyond this machine; set {TOKEN_ENV} when "
                f"starting it to take decisions",
            )
        sent_to = request.headers.get("host", "")
        origin = request.headers.get("origin")
        if not is_loopback(urlsplit(f"//{sent_to}").hostname or "") or (origin and origin != f"http://{sent_to}"):
            raise HTTPException(403, "decisions are taken only from this service's own review page")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "targets": list(service.targets)}

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"/review/{quote(next(iter(service.targets)))}")

    @app.get("/assets/{name}", include_in_schema=False)
    def asset(name: Literal[tuple(ASSETS)]) -> Response:  # type: ignore[valid-type]
        text = resources.files("mmgbm").joinpath(f"data/review/{name}").read_text()
        return Response(text, media_type=ASSETS[name], headers=PAGE_HEADERS)

    # The page's refusals are JSON too: named as such, since FastAPI would document them as the page's HTML.
    @app.get(
        "/review/{target}",
        response_class=HTMLResponse,
        responses={
            status: {
                "description": answer["description"],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }
            for status, answer in PROBLEMS.items()
        },
    )
    def review_page(target: Target) -> HTMLResponse:  # type: ignore[valid-type]
        """The review page of a target (static: it reads the queue below)."""
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/review/{target}/queue", responses=PROBLEMS)
    def queue(
        target: Target,  # type: ignore[valid-type]
        limit: int = Query(DEFAULT_QUEUE, ge=1, le=1000, description="Suspects to return"),
    ) -> dict[str, Any]:
        """The target's classes, how many suspects are decided and left, and the next undecided ones."""
        return service.targets[target].queue(limit)

    @app.get(
        "/review/{target}/photo",
        response_class=Response,
        responses={
            200: {
                "description": "The photo",
                "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
            },
            **REVIEW_PROBLEMS,
        },
    )
    def photo(target: Target, id: str = Query(..., max_length=MAX_FIELD_CHARS)) -> Response:  # type: ignore
        """A suspect's photo as a small JPEG."""
        jpeg = service.targets[target].photo(id)
        if jpeg is None:
            raise HTTPException(404, f"no photo of product {id!r} to show")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/review/{target}/decisions", responses=REVIEW_PROBLEMS, dependencies=[Depends(may_write)])
    def decide(target: Target, answer: Answer = Body(...)) -> dict[str, Any]:  # type: ignore[valid-type]
        """Record an answer in <workdir>/labels/<target>.csv; returns the line written and what is left."""
        return service.targets[target].decide(answer.id, answer.decided, answer.by)

    return app


def review(cfg: Config, targets: list[str] | None = None, host: str = "127.0.0.1", port: int = 8000, say=print) -> None:
    """Load the audits once, then serve the review page until interrupted."""
    import uvicorn

    service = ReviewService(cfg, targets)
    token = os.environ.get(TOKEN_ENV) or None
    for name, target in service.targets.items():
        left = target.progress(target.decided())
        say(
            f"{name}: {left['left']:,} of {left['suspects']:,} suspects left to review at "
            f"http://{host}:{port}/review/{quote(name)}; decisions -> {target.labels_path}"
        )
    if token is None and not is_loopback(host):
        say(f"decisions are refused: the service listens on {host} and {TOKEN_ENV} is not set")
    uvicorn.run(create_review_app(service, host, token), host=host, port=port, log_level="warning")
