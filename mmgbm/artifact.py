"""The model artifact: one directory per target that predicts without the training data.

    models/<target>/
        lightgbm.txt        the LightGBM stacker (LightGBM's own text format)
        model.joblib        heads, metadata encoder, image reducer, label encoding
        labels.json         class names in code order (classification) or the target transform (regression)
        config.json         the config snapshot it was trained with
        fingerprints.json   the feature stores' fingerprints; predict refuses features made another way
        metrics.json        training summary and validation figures
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

from mmgbm.config import Config
from mmgbm.dataset import Modalities
from mmgbm.errors import MmgbmError
from mmgbm.model import TargetModel
from mmgbm.stacking import load_booster

FILES = ("lightgbm.txt", "model.joblib", "labels.json", "config.json", "fingerprints.json", "metrics.json")


@dataclass
class Artifact:
    name: str
    model: TargetModel
    config: dict[str, Any]
    fingerprints: dict[str, dict]
    metrics: dict[str, Any]


def model_dir(cfg: Config, target: str) -> Path:
    return Path(cfg.workdir) / "models" / target


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
            booster.save_model(str(tmp / "lightgbm.txt"))
            joblib.dump(model, tmp / "model.joblib")
        finally:
            model.stacker_.booster_ = booster
        log_target = artifact.config["targets"][artifact.name].get("log_target", False)
        labels = ({"transform": "log1p" if log_target else "none"} if model.regression
                  else {"classes": model.classes_.tolist()})
        _write_json(tmp / "labels.json", labels)
        _write_json(tmp / "config.json", artifact.config)
        _write_json(tmp / "fingerprints.json", artifact.fingerprints)
        _write_json(tmp / "metrics.json", artifact.metrics)
        old = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.old"
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_artifact(folder: Path, name: str) -> Artifact:
    folder = Path(folder)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise MmgbmError(
            f"no trained model for target {name!r} in {folder} (missing {missing[0]}); run `mmgbm train --target {name}`"
        )
    try:
        model = joblib.load(folder / "model.joblib")
        model.stacker_.booster_ = load_booster(str(folder / "lightgbm.txt"))
        read = {f: json.loads((folder / f).read_text()) for f in ("config.json", "fingerprints.json", "metrics.json")}
    except Exception as exc:  # a truncated or foreign file: many exception types, one meaning to the user
        raise MmgbmError(f"{folder}: unreadable model ({type(exc).__name__}); retrain with `mmgbm train --target {name}`") from None
    return Artifact(name, model, read["config.json"], read["fingerprints.json"], read["metrics.json"])


def check_fingerprints(artifact: Artifact, data: Modalities, folder: Path) -> None:
    """Refuse features made with another backbone, vectorizer or settings than the model was trained on."""
    for key, trained in artifact.fingerprints.items():
        now = data.fingerprints.get(key)
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


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
