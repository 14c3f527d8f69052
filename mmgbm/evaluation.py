"""`mmgbm evaluate`: score trained models on a labelled split; write metrics.json and PNG reports per target.

Besides the fused model, each modality is scored alone (its best head), so the report shows what fusing adds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmgbm.catalogue import load_split
from mmgbm.config import Config
from mmgbm.dataset import load_modalities
from mmgbm.errors import MmgbmError
from mmgbm.metrics import classification_metrics, headline, regression_metrics
from mmgbm.model import FUSED
from mmgbm.prediction import checked_artifact, trained_target
from mmgbm.reports import confusion_png, importance_by_modality, importance_png, per_class_f1_png, scatter_png
from mmgbm.targets import resolve_targets, target_values


@dataclass
class EvaluationResult:
    target: str
    folder: Path
    metrics: dict

    def describe(self) -> str:
        m = self.metrics
        alone = "; ".join(f"{mod} alone {headline(v)}" for mod, v in m["modalities"].items())
        return (f"{self.target} on {m['split']} ({m[FUSED]['rows']:,} products, {m['dropped']}): "
                f"fused {headline(m[FUSED])}" + (f"; {alone}" if alone else "") + f" -> {self.folder}")


def report_dir(cfg: Config, target: str) -> Path:
    return Path(cfg.workdir) / "reports" / target


def evaluate(cfg: Config, targets: list[str] | None = None, split: str = "test") -> list[EvaluationResult]:
    names = resolve_targets(cfg, targets)
    frame = load_split(cfg, split, with_targets=False)
    data = load_modalities(cfg, frame)
    results = []
    for name in names:
        artifact = checked_artifact(cfg, name, data)
        target = trained_target(artifact)
        values = target_values(frame, target, f"split {split!r}")
        if not values.keep.any():
            raise MmgbmError(f"split {split!r} has no labelled products for target {name!r} ({target.column!r})")
        rows = values.keep.nonzero()[0]
        sub, sub_frame = data.rows(rows), frame.iloc[rows].reset_index(drop=True)
        model = artifact.model
        score = _scorer(artifact, target.log_target)
        truth = values.y
        fused = model.predict(sub, sub_frame)
        metrics = {
            "target": name, "split": split, "dropped": values.describe(), "predicts_with": model.choice_,
            FUSED: score(truth, fused),
            "modalities": {m: score(truth, model.predict(sub, sub_frame, source=m)) for m in model.modalities},
            "importance_by_modality": importance_by_modality(model.stacker_.booster_),
        }
        folder = report_dir(cfg, name)
        folder.mkdir(parents=True, exist_ok=True)
        metrics["pictures"] = [p.name for p in _pictures(folder, name, model, truth, fused, metrics)]
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        results.append(EvaluationResult(name, folder, metrics))
    return results


def _scorer(artifact, log_target: bool):
    model = artifact.model
    if model.regression:
        return lambda truth, p: regression_metrics(truth, p.values, log_target)
    train_counts = {str(c): int(n) for c, n in zip(model.classes_, model.class_counts_)}
    # Labels copied from the text (label_in_text) may be no training class; they count as they are.
    return lambda truth, p: classification_metrics(truth, p.labels[:, 0], train_counts, model.settings.n_folds)


def _pictures(folder: Path, name: str, model, truth: np.ndarray, fused, metrics: dict) -> list[Path]:
    pictures = [importance_png(folder / "importance_by_modality.png", metrics["importance_by_modality"], name)]
    if model.regression:
        pictures.append(scatter_png(folder / "predicted_vs_true.png", truth, fused.values, name, "value (model scale)"))
    else:
        predicted = fused.labels[:, 0]
        pictures.append(confusion_png(folder / "confusion_matrix.png", truth, predicted, name))
        pictures.append(per_class_f1_png(folder / "per_class_f1.png", metrics[FUSED]["per_class"], name))
    return pictures
