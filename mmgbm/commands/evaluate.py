"""`mmgbm evaluate`: score trained models on a labelled split; write metrics.json and PNG reports per target.

Besides the fused model, each modality is scored alone (its best head), so the report shows what fusing adds.
On a Dask cluster, parts of the split are scored on the workers (mmgbm.cluster.score_rows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmgbm.catalogue import load_split
from mmgbm.cluster import score_rows
from mmgbm.commands.artifact import Artifact
from mmgbm.commands.metrics import calibration_metrics, classification_metrics, headline, regression_metrics
from mmgbm.commands.predict import checked_artifact, estimator_call
from mmgbm.commands.reports import confusion_png, importance_png, per_class_f1_png, reliability_png, scatter_png
from mmgbm.commands.hierarchy_metrics import path_headline, path_metrics
from mmgbm.commands.targets import recorded_target, resolve_targets, target_values
from mmgbm.config import Config
from mmgbm.corrections import correct_labels, corrections_note
from mmgbm.errors import MmgbmError
from mmgbm.estimator import FUSED, MMGBMPathClassifier, ProductMatrix
from mmgbm.stores import load_products
from mmgbm.workdir import report_dir

if TYPE_CHECKING:
    from distributed import Client


@dataclass
class EvaluationResult:
    target: str
    folder: Path
    metrics: dict

    def describe(self) -> str:
        m = self.metrics
        alone = "; ".join(f"{mod} alone {headline(v)}" for mod, v in m["modalities"].items())
        confidence = ""
        if "calibration" in m:
            c = m["calibration"]
            share = next(row for row in c["coverage"] if row["coverage"] == 0.9)
            confidence = (
                f"; calibration error {c['ece']:.3f}, the 90% most confident at accuracy "
                f"{share['accuracy']:.4f} (confidence >= {share['min_confidence']:.2f})"
            )
        if "path" in m:
            confidence += f"; {path_headline(m['path'])}"
        unseen = ", ".join(f"{col} {n:,}" for col, n in m["unseen_metadata_levels"].items() if n)
        unseen = f"; products with metadata levels unseen in training (read as missing): {unseen}" if unseen else ""
        return (
            f"{self.target} on {m['split']} ({m[FUSED]['rows']:,} products, {m['dropped']}"
            f"{corrections_note(m['corrections'])}): "
            f"fused {headline(m[FUSED])}" + (f"; {alone}" if alone else "") + confidence + unseen + f" -> {self.folder}"
        )


def evaluate(
    cfg: Config, targets: list[str] | None = None, split: str = "test", client: Client | None = None
) -> list[EvaluationResult]:
    names = resolve_targets(cfg, targets)
    frame = load_split(cfg, split, with_targets=False)
    products, fingerprints = load_products(cfg, frame)
    results = []
    for name in names:
        artifact = checked_artifact(cfg, name, fingerprints)
        info = artifact.target
        # Scored against the labels reviewers decided, where they decided one: a label known to be wrong would
        # count a right prediction as an error.
        labelled, corrections = correct_labels(cfg, name, frame, info.column)
        # The target as the model was trained (column, task, log transform, label names), whatever the config says
        # now; products whose label names no label are left out of the scores and counted.
        values = target_values(
            labelled,
            recorded_target(info.column, info.task, info.log_target, info.path),
            f"split {split!r}",
            None if artifact.model.regression else artifact.model.label_names,
            cfg.data.id_column,
        )
        if not values.keep.any():
            raise MmgbmError(f"split {split!r} has no labelled products for target {name!r} ({info.column!r})")
        model, truth = artifact.model, values.y
        score = _scorer(artifact)
        predicted = score_rows(client, partial(_predictions, name=name), products[values.keep], model=model)
        fused = predicted[FUSED]
        metrics = {
            "target": name,
            "split": split,
            "dropped": values.describe(),
            "dropped_no_label": values.dropped_no_label,
            "corrections": corrections,
            "predicts_with": model.choice_,
            FUSED: score(truth, fused),
            "modalities": {m: score(truth, predicted[m]) for m in model.modalities_},
            "importance_by_modality": model.importance_by_modality(),
            "unseen_metadata_levels": model.unseen_levels(products[values.keep]),
        }
        if not model.regression:
            metrics["calibration"] = calibration_metrics(fused == truth, predicted["probability"])
        if isinstance(model, MMGBMPathClassifier):
            metrics["path"] = path_metrics(
                truth,
                predicted["nodes"],
                predicted["node_probabilities"],
                model.separator,
                model.partial_labels(truth),
            )
        folder = report_dir(cfg, name)
        folder.mkdir(parents=True, exist_ok=True)
        metrics["pictures"] = [p.name for p in _pictures(folder, name, artifact, truth, fused, metrics)]
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        results.append(EvaluationResult(name, folder, metrics))
    return results


def _predictions(products: ProductMatrix, *, name: str, model) -> dict[str, np.ndarray]:
    """The fused prediction (with its probability, for classes) and each modality's alone, per product: the heads
    score the products once for all of them."""
    return estimator_call(name, model.predict_each, products)


def _scorer(artifact: Artifact):
    model = artifact.model
    if model.regression:
        return lambda truth, predicted: regression_metrics(truth, predicted, artifact.target.log_target)
    train_counts = {str(c): int(n) for c, n in zip(model.classes_, model.class_counts_)}
    # Labels copied from the text (label_in_text) may be no training class; they count as they are.
    return lambda truth, predicted: classification_metrics(truth, predicted, train_counts, model.n_folds)


def _pictures(
    folder: Path, name: str, artifact: Artifact, truth: np.ndarray, fused: np.ndarray, metrics: dict
) -> list[Path]:
    pictures = [importance_png(folder / "importance_by_modality.png", metrics["importance_by_modality"], name)]
    if artifact.model.regression:
        log = artifact.target.log_target
        scale = (np.log1p, "log1p(value)") if log else (np.asarray, "value")
        pictures.append(scatter_png(folder / "predicted_vs_true.png", scale[0](truth), scale[0](fused), name, scale[1]))
    else:
        pictures.append(confusion_png(folder / "confusion_matrix.png", truth, fused, name))
        pictures.append(per_class_f1_png(folder / "per_class_f1.png", metrics[FUSED]["per_class"], name))
        pictures.append(reliability_png(folder / "reliability.png", metrics["calibration"], name))
    return pictures
