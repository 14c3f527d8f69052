"""Versions of each target's model, and the gate that makes a new one current.

    models/<target>/
        <version>/          a trained model (mmgbm.commands.artifact), named by the time it was trained:
                            20261208T021530-1a2b3c4d (UTC, then random hex so two trainings in one second differ);
                            its manifest's provenance holds the data fingerprint, settings, code version and
                            out-of-fold score
        current             the name of the version predict, evaluate and serve load, replaced atomically
        gate.jsonl          the gate's decisions, one JSON line each: version, decision, the scores compared
        .lock               held while the pointer is read, compared and moved

Every `train` writes a new version; the gate moves `current` to it only when its out-of-fold score is not worse
than the current version's beyond their noise (MARGIN_SE standard errors of the difference), or when forced. A
refused version is kept and listed as refused, so that a person can read why and promote it without retraining
(`mmgbm models --use`); it counts towards `models.keep` like any other. A model mmgbm wrote into models/<target>/
before versions is the version "legacy": loaded, compared and pruned like the others.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import secrets
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from mmgbm import __version__
from mmgbm.commands.artifact import BOOSTERS, ESTIMATOR, JSON_FILES, MANIFEST, load_artifact, read_manifest
from mmgbm.errors import MmgbmError
from mmgbm.workdir import CURRENT_POINTER, LEGACY_VERSION, VERSION_NAME, current_version, version_dir

# `mmgbm train` exits with this when the gate refused a target's new version (1 is any other error).
REFUSED_EXIT_CODE = 3
MARGIN_SE = 2.0
GATE_LOG = "gate.jsonl"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Score:
    """The out-of-fold score of the predictor a model uses, in its metric's own direction, with its standard
    error over the `n` training products it was measured on."""

    metric: str  # "accuracy" (higher is better) or "MAE" (lower is better)
    value: float
    se: float
    n: int

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "MAE"

    def shortfall(self, other: Score) -> float:
        """How much worse this score is than `other` (negative: better)."""
        return other.value - self.value if self.higher_is_better else self.value - other.value

    def describe(self) -> str:
        return f"{self.metric} {self.value:.4f}"


def model_score(metrics: dict[str, Any]) -> Score:
    """A model's Score from its metrics.json. Its standard error is the per-product spread recorded at training;
    a model trained before that was recorded takes it from accuracy and n (sqrt(p(1-p)/n), exact for right/wrong
    products) or, for MAE, the MAE over sqrt(n) (absolute errors spread about as widely as their mean)."""
    choice, n = metrics["choice"], int(metrics["train_rows"])
    regression = metrics["task"] == "regression"
    signed = float(metrics["validation"][choice])  # higher is better: minus the MAE for regression
    value = -signed if regression else signed
    se = (metrics.get("validation_se") or {}).get(choice)
    if se is None:
        se = value / math.sqrt(n) if regression else math.sqrt(max(value * (1 - value), 0.0) / n)
    return Score("MAE" if regression else "accuracy", value, float(se), n)


def new_version_name(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def data_fingerprint(ids: pd.Series, labels: Any, fingerprints: dict[str, dict]) -> str:
    """What the model learnt from: its products' ids and labels, and how their features were made."""
    table = pd.DataFrame({"id": pd.Series(ids).astype(str).to_numpy(), "label": pd.Series(labels).astype(str)})
    digest = hashlib.sha256(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    digest.update(json.dumps(fingerprints, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def provenance(version: str, data: str, settings: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """The manifest's record of a version: what `mmgbm models` lists and the gate compares."""
    return {
        "version": version,
        "created": _now(),
        "data_fingerprint": data,
        "settings": settings,
        "mmgbm_version": __version__,
        "validation": metrics["validation"],
        "score": asdict(model_score(metrics)),
    }


@dataclass
class Version:
    name: str
    folder: Path
    created: datetime
    score: Score | None
    state: str  # current, refused or kept

    def describe(self) -> str:
        score = "no score" if self.score is None else f"{self.score.describe()} ± {self.score.se:.4f}"
        return f"{self.name}  {self.created:%Y-%m-%d %H:%M} UTC  {score}  {self.state}"


def versions(root: Path) -> list[Version]:
    """The target's versions in `root`, oldest first."""
    current = current_version(root)
    last_decision = {d["version"]: d.get("decision") for d in _decisions(root)}
    found = []
    names = [p.name for p in root.iterdir() if VERSION_NAME.fullmatch(p.name)] if root.is_dir() else []
    for name in names + [LEGACY_VERSION]:
        folder = version_dir(root, name)
        manifest = read_manifest(folder)
        if manifest is None:  # not a model (legacy: none was written before versions)
            continue
        record = manifest.get("provenance") or {}
        created = (
            datetime.fromisoformat(record["created"])
            if "created" in record
            else datetime.fromtimestamp((folder / MANIFEST).stat().st_mtime, timezone.utc)
        )
        state = "current" if name == current or (current is None and name == LEGACY_VERSION) else "kept"
        if state == "kept" and last_decision.get(name) == "refused":
            state = "refused"
        found.append(Version(name, folder, created, _score(folder, record), state))
    return sorted(found, key=lambda v: v.created)


def _score(folder: Path, record: dict[str, Any]) -> Score | None:
    if "score" in record:
        return Score(**record["score"])
    try:  # a legacy model: its metrics.json says the same
        return model_score(_read_json(folder / "metrics.json"))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class GateResult:
    """What the gate made of a target's new version."""

    target: str
    version: str
    score: Score
    current: Version | None  # the version that was current when the gate compared
    promoted: bool
    forced: bool = False
    margin: float | None = None
    pruned: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return not self.promoted

    def describe(self) -> str:
        """A clause of train's summary line."""
        if self.refused:
            return f"version {self.version} refused by the gate, {self.current.name} stays current"
        pruned = f"; removed {len(self.pruned)} old version(s) (models.keep)" if self.pruned else ""
        if self.current is None:
            return f"version {self.version} is current (the first){pruned}"
        how = "forced past the gate" if self.forced else "passed the gate"
        return f"version {self.version} is current ({how}; was {self.current.name}){pruned}"

    def refusal(self) -> str:
        """The one line that says why, and how to promote it anyway."""
        old, new = self.current.score, self.score
        return (
            f"{self.target}: version {self.version}'s out-of-fold {new.describe()} is worse than current version "
            f"{self.current.name}'s {old.value:.4f} by {new.shortfall(old):.4f}, beyond the gate's margin "
            f"{self.margin:.4f} ({MARGIN_SE:g} standard errors); predictions keep coming from {self.current.name}. "
            f"Check the training labels, or promote it anyway: `mmgbm models --target {self.target} --use "
            f"{self.version}` (or train with --force)"
        )


def publish(root: Path, target: str, version: str, keep: int, force: bool = False) -> GateResult:
    """Make the saved `version` current if the gate lets it (or `force`), record the decision beside it, and
    remove the oldest versions beyond `keep`, never the current one."""
    with _locked(root):
        listed = {v.name: v for v in versions(root)}
        new = listed[version]
        current = next((v for v in listed.values() if v.state == "current"), None)
        result = GateResult(target, version, new.score, current, promoted=True)
        comparable = current is not None and current.score is not None and current.score.metric == new.score.metric
        if comparable:
            result.margin = MARGIN_SE * math.hypot(new.score.se, current.score.se)
            result.promoted = force or new.score.shortfall(current.score) <= result.margin
        result.forced = force and comparable and new.score.shortfall(current.score) > result.margin
        _record(root, result)
        if result.promoted:
            _point(root, version)
        result.pruned = _prune(root, keep)
    return result


def use(root: Path, target: str, version: str) -> str:
    """Make `version` current after checking that it loads; returns the line to print."""
    listed = {v.name: v for v in versions(root)}
    if version not in listed:
        known = ", ".join(listed) or "none"
        raise MmgbmError(f"target {target!r} has no model version {version!r} (versions: {known}); see `mmgbm models`")
    load_artifact(listed[version].folder, target)
    with _locked(root):
        was = current_version(root) or (LEGACY_VERSION if LEGACY_VERSION in listed else None)
        if was == version:
            return f"{target}: version {version} is already current"
        _point(root, version)
        _append(root, {"version": version, "decision": "used", "at": _now(), "against": was})
    return f"{target}: version {version} is current (was {was or 'none'})"


def _decisions(root: Path) -> list[dict[str, Any]]:
    try:
        lines = (root / GATE_LOG).read_text().splitlines()
    except FileNotFoundError:
        return []
    decisions = []
    for line in lines:
        try:
            decisions.append(json.loads(line))
        except ValueError:  # a line cut short by a full disk: the others still count
            continue
    return [d for d in decisions if isinstance(d, dict) and "version" in d]


def _record(root: Path, result: GateResult) -> None:
    decision = "promoted" if result.promoted else "refused"
    against = result.current
    record = {
        "version": result.version,
        "decision": "forced" if result.forced else decision,
        "at": _now(),
        "against": None if against is None else against.name,
        "against_score": None if against is None or against.score is None else asdict(against.score),
        "margin": result.margin,
    }
    _append(root, record)


def _append(root: Path, record: dict[str, Any]) -> None:
    """One line more in the target's log of decisions; callers hold the lock, so one writer at a time."""
    with open(root / GATE_LOG, "a") as log:
        log.write(json.dumps(record) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _point(root: Path, version: str) -> None:
    _replace_text(root / CURRENT_POINTER, version + "\n")


def _replace_text(path: Path, text: str) -> None:
    """Write beside, then rename over: a reader sees the old text or the new, never half of it."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(root: Path, keep: int) -> list[str]:
    listed = versions(root)
    removable = [v for v in listed if v.state != "current"]
    doomed = removable[: max(len(listed) - keep, 0)]
    for version in doomed:
        _remove(root, version)
    return [v.name for v in doomed]


def _remove(root: Path, version: Version) -> None:
    if version.name == LEGACY_VERSION:  # its files lie in root beside the versions: the manifest first unmakes it
        for name in (MANIFEST, ESTIMATOR, *BOOSTERS, *JSON_FILES):
            (root / name).unlink(missing_ok=True)
        return
    # Renamed first, so that a listing never meets half a folder.
    aside = root / f".{version.name}.{uuid.uuid4().hex}.tmp"
    os.replace(version.folder, aside)
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One gate at a time per target: two trainings finishing together must not both compare against the same
    current version and each move the pointer."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
