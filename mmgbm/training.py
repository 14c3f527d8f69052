"""`mmgbm train`: fit one `TargetModel` per target on the training split and save its artifact."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mmgbm.artifact import Artifact, model_dir, save_artifact
from mmgbm.catalogue import load_split
from mmgbm.config import Config
from mmgbm.dataset import Modalities, load_modalities
from mmgbm.errors import MmgbmError
from mmgbm.model import FUSED, TargetModel
from mmgbm.targets import check_binary, metadata_columns, resolve_targets, target_values


@dataclass
class TrainSummary:
    target: str
    folder: Path
    metrics: dict

    def describe(self) -> str:
        m = self.metrics
        unit = "MAE" if m["task"] == "regression" else "accuracy"
        val = m["validation"]
        chosen = m["choice"]
        sign = -1 if m["task"] == "regression" else 1
        heads = ", ".join(f"{n} {sign * v:.4f}" for n, v in val.items() if n != FUSED)
        return (
            f"{self.target}: {m['train_rows']:,} products ({m['dropped']}), {m['classes'] or 'regression'}"
            f"{' classes' if m['classes'] else ''}; validation {unit}: fused {sign * val[FUSED]:.4f} | {heads}; "
            f"predicts with {chosen}; {m['seconds']:.1f}s -> {self.folder}"
        )


def train(cfg: Config, targets: list[str] | None = None) -> list[TrainSummary]:
    """Train every named target (default: all), reading the training split and its features once."""
    names = resolve_targets(cfg, targets)
    frame = load_split(cfg, "train")
    data = load_modalities(cfg, frame)
    return [train_target(cfg, name, frame, data) for name in names]


def train_target(cfg: Config, name: str, frame: pd.DataFrame, data: Modalities) -> TrainSummary:
    started = time.perf_counter()
    target = cfg.targets[name]
    source = f"{cfg.data.splits['train']} (train)"
    values = target_values(frame, target, source)
    if values.keep.sum() < 2 * cfg.model.n_folds:
        raise MmgbmError(
            f"{source}: only {int(values.keep.sum())} products have a usable {target.column!r}; "
            f"need at least {2 * cfg.model.n_folds} to train target {name!r}"
        )
    if target.task == "binary":
        check_binary(name, values.y, source)
    if target.label_in_text is not None and target.label_in_text not in frame.columns:
        raise MmgbmError(f"{source}: no column {target.label_in_text!r} (label_in_text of target {name!r})")
    rows = values.keep.nonzero()[0]
    categorical, numeric = metadata_columns(cfg, target)
    model = TargetModel(target.task, cfg.model, categorical, numeric, target.label_in_text)
    model.fit(data.rows(rows), frame.iloc[rows].reset_index(drop=True), values.y)
    metrics = {
        "target": name,
        "column": target.column,
        "task": target.task,
        "train_rows": int(len(rows)),
        "dropped": values.describe(),
        "dropped_missing": values.dropped_missing,
        "dropped_nonpositive": values.dropped_nonpositive,
        "classes": 0 if model.regression else int(len(model.classes_)),
        "validation_rows": int(model.valid_.sum()),
        "validation": model.validation_,
        "choice": model.choice_,
        "modality_heads": model.modality_heads_,
        "label_in_text": model.chooser_summary(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    folder = model_dir(cfg, name)
    save_artifact(folder, Artifact(name, model, cfg.model_dump(mode="json"), data.fingerprints, metrics))
    return TrainSummary(name, folder, metrics)
