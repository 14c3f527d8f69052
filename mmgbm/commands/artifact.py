"""The model artifact: one folder per target that predicts without the training data.

    models/<target>/
        manifest.json       format version, the target (name, column, task, log transform) and a SHA-256 per file
        estimator.joblib    the fitted MMGBMClassifier / MMGBMRegressor without its LightGBM stacker
        lightgbm.txt        the LightGBM stacker (LightGBM's own text format)
        labels.json         class names in code order (classification) or the target transform (regression)
        config.json         the config it was trained with, as JSON (provenance: predict reads the manifest)
        fingerprints.json   the feature stores' fingerprints; predict refuses features made another way
        metrics.json        training summary and validation figures

Every file is checked against the manifest before anything is loaded, and an artifact of another format version
is refused in one line that says to retrain.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb

from mmgbm import __version__
from mmgbm.errors import MmgbmError
from mmgbm.estimator.base import MMGBMBase

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
ESTIMATOR = "estimator.joblib"
BOOSTER = "lightgbm.txt"
JSON_FILES = ("labels.json", "config.json", "fingerprints.json", "metrics.json")


@dataclass
class TargetInfo:
    """What a model predicts, recorded in its manifest: commands read it rather than today's config."""

    name: str
    column: str
    task: str
    log_target: bool = False


@dataclass
class Artifact:
    target: TargetInfo
    model: MMGBMBase
    config: dict[str, Any]
    fingerprints: dict[str, dict]
    metrics: dict[str, Any]

    @property
    def name(self) -> str:
        return self.target.name


def save_artifact(folder: Path, artifact: Artifact) -> None:
    """Write into a fresh temporary folder, then swap it in: a crash never leaves half a model."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        model = artifact.model
        booster, model.stacker_.booster_ = model.stacker_.booster_, None
        try:
            booster.save_model(str(tmp / BOOSTER))
            joblib.dump(model, tmp / ESTIMATOR)
        finally:
            model.stacker_.booster_ = booster
        labels = ({"transform": "log1p" if artifact.target.log_target else "none"} if model.regression
                  else {"classes": [str(c) for c in model.classes_]})
        payloads = {"labels.json": labels, "config.json": artifact.config, "fingerprints.json": artifact.fingerprints,
                    "metrics.json": artifact.metrics}
        for name, payload in payloads.items():
            _write_json(tmp / name, payload)
        files = {name: _sha256(tmp / name) for name in (ESTIMATOR, BOOSTER, *JSON_FILES)}
        _write_json(tmp / MANIFEST, {"format_version": FORMAT_VERSION, "mmgbm_version": __version__,
                                     "target": vars(artifact.target), "files": files})
        old = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.old"
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_artifact(folder: Path, name: str) -> Artifact:
    """The artifact of target `name`, after checking its format version, its target and every file's checksum."""
    folder = Path(folder)
    retrain = f"retrain with `mmgbm train --target {name}`"
    if not folder.is_dir():
        raise MmgbmError(f"no trained model for target {name!r} in {folder}; run `mmgbm train --target {name}`")
    manifest = _read_json(folder / MANIFEST, retrain) if (folder / MANIFEST).is_file() else None
    if manifest is None or manifest.get("format_version") != FORMAT_VERSION:
        version = "an older format" if manifest is None else f"format {manifest.get('format_version')!r}"
        raise MmgbmError(f"{folder}: model written in {version}; this mmgbm reads format {FORMAT_VERSION}: {retrain}")
    try:
        target = TargetInfo(**manifest["target"])
        files = dict(manifest["files"])
    except (KeyError, TypeError) as exc:
        raise MmgbmError(f"{folder / MANIFEST}: incomplete manifest ({exc}); {retrain}") from None
    if target.name != name:
        raise MmgbmError(f"{folder} holds a model of target {target.name!r}, not {name!r}; {retrain}")
    for file in (ESTIMATOR, BOOSTER, *JSON_FILES):
        path = folder / file
        if file not in files or not path.is_file() or _sha256(path) != files[file]:
            raise MmgbmError(f"{path}: missing or changed since training (checksum mismatch); {retrain}")
    read = {f: _read_json(folder / f, retrain) for f in JSON_FILES}
    try:
        model = joblib.load(folder / ESTIMATOR)
        model.stacker_.booster_ = lgb.Booster(model_file=str(folder / BOOSTER))
    except Exception as exc:  # a foreign file with a valid checksum: many exception types, one meaning
        raise MmgbmError(f"{folder}: unreadable model ({type(exc).__name__}); {retrain}") from None
    return Artifact(target, model, read["config.json"], read["fingerprints.json"], read["metrics.json"])


def check_fingerprints(artifact: Artifact, fingerprints: dict[str, dict], folder: Path) -> None:
    """Refuse features made with another backbone, vectorizer or settings than the model was trained on."""
    for key, trained in artifact.fingerprints.items():
        now = fingerprints.get(key)
        if now is None:
            raise MmgbmError(
                f"model {folder} was trained with {key} features, which the config no longer provides; "
                f"enable them again or retrain with `mmgbm train --target {artifact.name}`"
            )
        if now != trained:
            diff = sorted(k for k in set(now) | set(trained) if now.get(k) != trained.get(k))
            raise MmgbmError(
                f"{key} features differ from those model {folder} was trained on ({', '.join(diff)} changed); "
                f"retrain with `mmgbm train --target {artifact.name}` or restore the original features"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path, retrain: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MmgbmError(f"{path}: unreadable ({type(exc).__name__}); {retrain}") from None


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
