"""`mmgbm serve`: the trained models behind HTTP, for listings that arrive one at a time.

Models, vectorizers and the image encoder are loaded once at startup, so a request costs only its own features and
predictions. A target's model is loaded again when its current version changes (a retrain the gate let through,
`mmgbm models --use`): the new version is loaded beside the old, then swapped in between requests, and every answer
names the version it came from. A request is a JSON list of products keyed like the catalogue table (id, text,
metadata columns) with the photo as a path (`image_column`) or base64 bytes (`image_base64`); `/predict/upload`
takes one photo as a file.
Answers are batch `predict`'s for the same products: the same features (mmgbm.features.online) and the same
ranking. Whatever a client can get wrong is a 4xx with a one-line `detail`, and the service keeps serving.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name local types.
import base64
import binascii
import json
import os
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from mmgbm.commands.artifact import Artifact, check_fingerprints, load_artifact
from mmgbm.commands.normalise import check_normalisation
from mmgbm.commands.predict import estimator_call
from mmgbm.commands.targets import resolve_targets
from mmgbm.config import Config
from mmgbm.drift import ServedAnswers, records_drift
from mmgbm.errors import MmgbmError
from mmgbm.estimator import MMGBMPathClassifier, ProductMatrix
from mmgbm.estimator.base import MMGBMBase
from mmgbm.estimator.out_of_fold import silent
from mmgbm.estimator.path_classifier import deepest_confident
from mmgbm.features.online import BadProduct, OnlineFeatures, PostedImage
from mmgbm.stores import product_features
from mmgbm.workdir import CURRENT_POINTER, LEGACY_VERSION, current_version, target_models_dir, version_dir

IMAGE_BYTES_FIELD = "image_base64"
MAX_BODY_BYTES = 16 * 1024 * 1024  # 32 catalogue photos in base64 are ~1 MB; this leaves room for big uploads
MAX_PRODUCTS = 256
DEFAULT_TOP_K = 3
WATCH_SECONDS = 1.0  # how often the service looks whether a target's current version changed


@dataclass(frozen=True)
class ServedModel:
    model: MMGBMBase
    version: str
    pointer: tuple | None  # the current pointer's file identity (_identity) when the version was read from it


class PredictionService:
    """The loaded models and feature makers; `predict` is the whole request, usable without HTTP."""

    def __init__(self, cfg: Config, targets: list[str] | None = None):
        self.cfg = cfg
        # Models first: a missing one is a user error best reported before seconds of building the encoder.
        loaded = {name: self._load(name) for name in resolve_targets(cfg, targets)}
        self.features = OnlineFeatures(product_features(cfg))
        for _, folder, artifact in loaded.values():
            check_fingerprints(artifact, self.features.fingerprints, folder)
        # Replaced whole, never changed in place: a request reads it once and answers from the versions it names.
        self.served = {name: served for name, (served, _, _) in loaded.items()}
        self._swap = threading.Lock()
        self.product_model = product_model(cfg, self.features)
        # What the flat classifiers answer, counted for `mmgbm drift` under the folder of the version answering.
        self.answered = ServedAnswers(
            cfg, {name: folder for name, (served, folder, _) in loaded.items() if records_drift(served.model)}
        )
        # One request at a time: on a few cores parallel requests only fight over them (TensorFlow and LightGBM
        # each use every core), and the estimators were not written to be shared across threads.
        self._lock = threading.Lock()

    def predict(
        self, products: list[BaseModel], images: list[PostedImage], top_k: int, min_confidence: float = 0.0
    ) -> list[dict[str, Any]]:
        rows = [p.model_dump(exclude={self.cfg.data.image_column, IMAGE_BYTES_FIELD}) for p in products]
        frame = pd.DataFrame(rows, columns=[self.cfg.data.id_column, *self.features.columns])
        served = self.served
        with self._lock:
            matrix = self.features.products(frame, images)
            answers = {name: _answers(name, s.model, matrix, top_k, min_confidence) for name, s in served.items()}
        for name in self.answered.model_folders:
            ranked = [answer["top_k"][0] for answer in answers[name]]
            self.answered.add(name, [r["label"] for r in ranked], [r["probability"] for r in ranked])
        return [
            {
                "id": pid,
                "targets": {
                    name: {**per_product[i], "model_version": served[name].version}
                    for name, per_product in answers.items()
                },
            }
            for i, pid in enumerate(frame[self.cfg.data.id_column])
        ]

    @property
    def models(self) -> dict[str, MMGBMBase]:
        return {name: served.model for name, served in self.served.items()}

    @property
    def versions(self) -> dict[str, str]:
        return {name: served.version for name, served in self.served.items()}

    def _load(self, name: str) -> tuple[ServedModel, Path, Artifact]:
        """The target's current version, checked against the config, and the folder it was read from."""
        root = target_models_dir(self.cfg, name)
        pointer = _identity(root / CURRENT_POINTER)
        version = current_version(root)
        folder = version_dir(root, version)
        artifact = load_artifact(folder, name)
        check_normalisation(self.cfg, artifact, folder)
        return ServedModel(artifact.model, version or LEGACY_VERSION, pointer), folder, artifact

    def reload(self, say: Callable[[str], None] = silent) -> None:
        """Load each target whose current pointer changed since its model was read, beside the model it replaces,
        then swap it in. A version that cannot be served (damaged, trained on features made another way) is said
        and passed over: the service keeps answering with the version it has until the pointer moves again."""
        with self._swap:
            for name, served in self.served.items():
                pointer = _identity(target_models_dir(self.cfg, name) / CURRENT_POINTER)
                if pointer == served.pointer:
                    continue
                try:
                    new, folder, artifact = self._load(name)
                    check_fingerprints(artifact, self.features.fingerprints, folder)
                except MmgbmError as exc:
                    say(f"{name}: still serving version {served.version}, the current version cannot be: {exc}")
                    new = ServedModel(served.model, served.version, pointer)
                else:
                    say(f"{name}: serving version {new.version} (was {served.version})")
                    if name in self.answered.model_folders:  # drift counts the new version's answers apart
                        self.answered.model_folders[name] = folder
                self.served = {**self.served, name: new}

    def watch(self, say: Callable[[str], None] = silent, seconds: float = WATCH_SECONDS) -> threading.Event:
        """Reload every `seconds` in a background thread; setting the returned event stops it."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(seconds):
                self.reload(say)

        threading.Thread(target=loop, name="mmgbm-model-watch", daemon=True).start()
        return stop


class Problem(BaseModel):
    """Every 4xx answer: one line saying what is wrong with the request and how to fix it."""

    detail: str


# The answers a request can get besides 200, as the OpenAPI schema documents them.
PROBLEMS = {
    status: {"model": Problem, "description": text}
    for status, text in (
        (400, "the body could not be parsed (a broken multipart request)"),
        (413, "the body is over the size limit"),
        (422, "a product or a parameter is invalid: one line naming it"),
    )
}


def product_model(cfg: Config, features: OnlineFeatures) -> type[BaseModel]:
    """The request schema of one product, from the config: unknown fields, wrong types (a number where text is
    expected, `true` for a number) and blank ids are refused, so the schema says exactly what is accepted."""
    data = cfg.data
    fields: dict[str, Any] = {data.id_column: (Annotated[str, Field(min_length=1, pattern=r"\S")], ...)}
    for column in features.columns:
        kind = Annotated[float, Field(strict=True)] if column in data.numeric_columns else str
        fields[column] = (Optional[kind], None)
    config = ConfigDict(extra="forbid")
    if features.encoder is not None:
        no_photo = "; null or empty: no photo"
        fields[data.image_column] = (Optional[str], Field(None, description=f"The photo's path or URL{no_photo}"))
        fields[IMAGE_BYTES_FIELD] = (Optional[str], Field(None, description=f"The photo's bytes in base64{no_photo}"))
        photo = (data.image_column, IMAGE_BYTES_FIELD)
        # One photo per product: not both fields given (a string that is not empty), as posted_image refuses.
        both = {"required": list(photo), "properties": {f: {"type": "string", "minLength": 1} for f in photo}}
        config = ConfigDict(extra="forbid", json_schema_extra={"not": both})
    return create_model("Product", __config__=config, **fields)


def posted_image(cfg: Config, product: BaseModel) -> PostedImage:
    """The product's photo: its path, its bytes, or None. An empty string is no photo, as null is (and as an empty
    image cell is in a catalogue table)."""
    path = getattr(product, cfg.data.image_column or "", None) or None
    encoded = getattr(product, IMAGE_BYTES_FIELD, None) or None
    pid = getattr(product, cfg.data.id_column)
    if path is not None and encoded is not None:
        raise BadProduct(f"product {pid!r}: give {cfg.data.image_column!r} or {IMAGE_BYTES_FIELD!r}, not both")
    if encoded is None:
        return path
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadProduct(f"product {pid!r}: {IMAGE_BYTES_FIELD} is not valid base64") from None


def _answers(name: str, model, products: ProductMatrix, top_k: int, min_confidence: float) -> list[dict[str, Any]]:
    """Per product, batch predict's answer for one target as JSON values: the value on the target's own scale, or
    the label with the top-k ranking it heads (the first is always the label, also when copied from the text; null
    below `min_confidence`), or a path target's deepest node reaching `min_confidence` with its depth and each level
    of the whole answer with its probability."""
    if model.regression:
        return [{"value": float(v)} for v in estimator_call(name, model.predict, products)]
    if isinstance(model, MMGBMPathClassifier):
        nodes, probabilities = estimator_call(name, model.predict_path, products)
        paths, depths, confidences = deepest_confident(nodes, probabilities, min_confidence)
        return [
            {
                "label": path,
                "depth": int(depth),
                "probability": float(confidence),
                "levels": [
                    {"label": node.rsplit(model.separator, 1)[-1], "probability": float(p)}
                    for node, p in zip(answer, levels)
                    if node is not None
                ],
            }
            for path, depth, confidence, answer, levels in zip(paths, depths, confidences, nodes, probabilities)
        ]
    labels, probabilities = estimator_call(name, model.predict_top_k, products, top_k)
    return [
        {
            "label": str(ranked[0]) if p[0] >= min_confidence else None,
            "probability": float(p[0]),
            "top_k": [{"label": str(label), "probability": float(q)} for label, q in zip(ranked, p)],
        }
        for ranked, p in zip(labels, probabilities)
    ]


def create_app(service: PredictionService, max_body_bytes: int = MAX_BODY_BYTES):
    """The FastAPI application over a loaded service."""
    from fastapi import Body, Depends, FastAPI, File, Form, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    Product = service.product_model
    cfg = service.cfg

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.answered.flush()  # what was answered since the last flush, before the process ends

    app = FastAPI(
        title="mmgbm", version="1", summary="Product attributes from text, photo and metadata.", lifespan=lifespan
    )
    answer_problems(app, max_body_bytes)
    TopK = Query(DEFAULT_TOP_K, ge=1, le=20, description="Labels ranked per classification target.")
    MinConfidence = Query(
        0.0,
        ge=0.0,
        lt=1.0,
        description="A label below this probability is null; a path target "
        "answers the deepest node of its path whose probability reaches it, with its depth.",
    )

    @app.exception_handler(BadProduct)
    async def bad_product(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/health")
    def health() -> dict[str, Any]:
        encoder = service.features.encoder
        return {
            "status": "ok",
            "targets": list(service.models),
            "model_versions": service.versions,
            "image_encoder": None if encoder is None else encoder.backbone,
        }

    def known_parameters(request: Request) -> None:
        """A parameter the schema does not list is refused, not ignored: a misspelt `min_confidence` would
        silently fill labels below the confidence the client asked for."""
        unknown = sorted(set(request.query_params) - {"top_k", "min_confidence"})
        if unknown:
            raise MmgbmError(f"unknown parameter {unknown[0]!r}; the parameters are top_k and min_confidence")

    Checked = [Depends(known_parameters)]

    @app.post("/predict", responses=PROBLEMS, dependencies=Checked)
    def predict(
        products: list[Product] = Body(..., min_length=1, max_length=MAX_PRODUCTS),  # type: ignore[valid-type]
        top_k: int = TopK,
        min_confidence: float = MinConfidence,
    ) -> dict[str, Any]:
        """Predict every served target for a list of products (at most 256)."""
        images = [posted_image(cfg, p) for p in products]
        return {"predictions": service.predict(products, images, top_k, min_confidence)}

    if service.features.encoder is not None:

        @app.post("/predict/upload", responses=PROBLEMS, dependencies=Checked)
        def predict_upload(
            image: UploadFile = File(...),
            product: str = Form(..., description="The product as JSON"),
            top_k: int = TopK,
            min_confidence: float = MinConfidence,
        ) -> dict[str, Any]:
            """One product with its photo uploaded as a file; `product` holds its other fields as JSON."""
            try:
                posted = Product.model_validate(json.loads(product))
            except ValueError as exc:  # json's and pydantic's errors both derive from it
                errors = exc.errors() if isinstance(exc, ValidationError) else [{"loc": (), "msg": "not JSON"}]
                raise RequestValidationError([{**e, "loc": ("product", *e["loc"])} for e in errors]) from None
            if posted_image(cfg, posted) is not None:
                raise BadProduct("an uploaded product takes its photo from the file; leave out its image fields")
            return {"predictions": service.predict([posted], [image.file.read()], top_k, min_confidence)}

    app.openapi = lambda: _openapi(app, (cfg.data.image_column, IMAGE_BYTES_FIELD))
    return app


def answer_problems(app, max_body_bytes: int) -> None:
    """Every refusal a one-line {detail} (Problem): bodies over the limit before they are read, invalid requests
    located by their first error, a user's error (MmgbmError) in its own words."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc.errors())}, status_code=422)

    @app.exception_handler(MmgbmError)
    async def refused(request: Request, exc: MmgbmError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)


def _openapi(app, photo_fields: tuple[str, ...]) -> dict[str, Any]:
    """FastAPI's schema, with the upload's `product` part described as what it is: a Product as JSON (a multipart
    part of type application/json), not any string, without the fields of a photo (the upload's file is its photo)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        upload = schema["paths"].get("/predict/upload", {}).get("post")
        if upload is not None:
            generated = upload["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
            components = schema["components"]["schemas"]
            del components[generated.rsplit("/", 1)[1]]
            uploaded = {k: v for k, v in components["Product"].items() if k != "not"}
            uploaded["properties"] = {k: v for k, v in uploaded["properties"].items() if k not in photo_fields}
            components["UploadedProduct"] = {**uploaded, "title": "UploadedProduct"}
            upload["requestBody"] = {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["image", "product"],
                            "properties": {
                                "image": {"type": "string", "format": "binary", "description": "The product's photo"},
                                "product": {"$ref": "#/components/schemas/UploadedProduct"},
                            },
                        },
                        "encoding": {
                            "product": {"contentType": "application/json"},
                            "image": {"contentType": "image/jpeg, image/png, image/webp"},
                        },
                    }
                },
            }
        app.openapi_schema = schema
    return app.openapi_schema


def _identity(path: Path) -> tuple | None:
    """What changes when a file is replaced (os.replace gives it another inode) or rewritten; None when missing."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _one_line(errors: list[dict]) -> str:
    """FastAPI's list of validation errors as the first one, located by product number and field."""
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    where = ""
    if loc and loc[0].isdigit():
        where = f"product {loc[0]}" + (f", field {loc[1]!r}" if len(loc) > 1 else "") + ": "
    elif loc:
        where = f"{'.'.join(loc)}: "
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}{first.get('msg', 'invalid')}{more}".replace("\n", " ")


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413 before any of it is parsed, declared or streamed."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send) -> None:
        from fastapi.responses import JSONResponse

        detail = f"request body over {self.limit:,} bytes; send fewer products per request"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def serve(cfg: Config, targets: list[str] | None = None, host: str = "127.0.0.1", port: int = 8000, say=print) -> None:
    """Load everything once, then serve until interrupted."""
    import uvicorn

    service = PredictionService(cfg, targets)
    models = ", ".join(f"{name} (version {version})" for name, version in service.versions.items())
    say(f"serving {models} on http://{host}:{port} (API docs at /docs); a new current version is served as it comes")
    service.watch(say)
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
