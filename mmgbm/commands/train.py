"""`mmgbm train`: turn the config into estimator parameters, fit one estimator per target, save its artifact.

This is the edge where the config ends: the estimator package sees only flat parameters and a `ProductMatrix`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mmgbm.catalogue import load_split
from mmgbm.cluster import joblib_on
from mmgbm.commands.artifact import Artifact, TargetInfo, save_artifact
from mmgbm.commands.normalise import normalisation
from mmgbm.commands.targets import (
    check_binary,
    check_no_label,
    metadata_columns,
    min_training_rows,
    path_settings,
    resolve_targets,
    target_names,
    target_values,
)
from mmgbm.config import Config, TargetConfig
from mmgbm.corrections import correct_labels, corrections_note
from mmgbm.errors import MmgbmError
from mmgbm.estimator import FUSED, MMGBMClassifier, MMGBMRegressor, ProductMatrix
from mmgbm.estimator.base import MMGBMBase
from mmgbm.estimator.label_names import LabelNames
from mmgbm.estimator.out_of_fold import silent
from mmgbm.estimator.path_classifier import MMGBMPathClassifier
from mmgbm.model_versions import GateResult, data_fingerprint, new_version_name, provenance, publish
from mmgbm.stores import load_products
from mmgbm.workdir import target_models_dir

if TYPE_CHECKING:
    from distributed import Client

# Every `model:` setting is the estimators' parameter of the same name (their defaults are the config's: checked
# by a test), except these two, named for the config's reader.
RENAMED = {"params": "lightgbm_params", "regression_objective": "objective"}
# Estimator parameters that come from elsewhere in the config: the data's column roles and the target's settings.
FROM_TARGET = (
    "categorical_columns",
    "numeric_columns",
    "label_in_text",
    "log_target",
    "label_names",
    "separator",
    "partial_paths",
)
# Stages of training besides the estimator's own (`MMGBMBase.fit`).
READING = "reading the training table and its features"
SAVING = "saving"


@dataclass
class TrainSummary:
    target: str
    folder: Path
    metrics: dict
    gate: GateResult

    def describe(self) -> str:
        m = self.metrics
        unit = "MAE" if m["task"] == "regression" else "accuracy"
        val = m["validation"]
        sign = -1 if m["task"] == "regression" else 1
        heads = ", ".join(f"{n} {sign * v:.4f}" for n, v in val.items() if n != FUSED)
        classes = f"{m['classes']} classes" if m["classes"] else "regression"
        return (
            f"{self.target}: {m['train_rows']:,} products ({m['dropped']}{corrections_note(m['corrections'])}), "
            f"{classes}; out-of-fold {unit}: "
            f"fused {sign * val[FUSED]:.4f} | {heads}; predicts with {m['choice']}"
            f"{chooser_note(m.get('label_in_text'))}; {m['seconds']:.1f}s -> {self.folder}; {self.gate.describe()}"
        )


def chooser_note(chooser: dict | None) -> str:
    """The label-in-text chooser's choice (kept or not) and its out-of-fold accuracy beside the model's, as a clause
    of the summary; '' for a target without one. Read with .get: its figures are the chooser's to extend."""
    if not chooser:
        return ""
    verdict = "kept" if chooser.get("kept") else "not kept"
    own, model = chooser.get("chooser"), chooser.get("model")
    if own is None:  # not fitted: too few products where a prefix of the text is the label
        figures = "too little to learn from" + ("" if model is None else f" (the model's out-of-fold {model:.4f})")
    else:
        figures = f"out-of-fold accuracy {own:.4f}" + ("" if model is None else f" vs the model's {model:.4f}")
    if chooser.get("kept") and "new_labels" in chooser:
        figures += ", copies labels never seen in training" if chooser["new_labels"] else ", copies known labels only"
    return f"; label-in-text chooser ({chooser.get('column')}): {verdict}, {figures}"


def build_estimator(cfg: Config, target: TargetConfig, names: LabelNames | None = None) -> MMGBMBase:
    """The unfitted estimator for one target: each `model:` setting it takes, the target's own, and the label
    names its labels are given in."""
    kind = {"regression": MMGBMRegressor, "path": MMGBMPathClassifier}.get(target.task, MMGBMClassifier)
    takes = kind().get_params()
    settings = {RENAMED.get(name, name): value for name, value in cfg.model.model_dump().items()}
    params = {name: value for name, value in settings.items() if name in takes}
    params["lightgbm_params"] = dict(cfg.model.params) or None
    categorical, numeric = metadata_columns(cfg, target)
    params.update(categorical_columns=tuple(categorical), numeric_columns=tuple(numeric))
    if kind is MMGBMRegressor:
        params["log_target"] = target.log_target
    elif kind is MMGBMPathClassifier:
        params.update(separator=target.separator, partial_paths=target.partial_paths)
    else:
        params.update(label_in_text=target.label_in_text, label_names=names)
    return kind(**params)


def train(
    cfg: Config,
    targets: list[str] | None = None,
    client: Client | None = None,
    progress: Callable[[str, int, int], None] = silent,
    say: Callable[[str], None] = silent,
    force: bool = False,
) -> list[TrainSummary]:
    """Train every named target (default: all), reading the training split and its features once, each into a new
    version that the gate makes current unless it scores worse than the current one beyond their noise (`force`
    makes it current regardless; mmgbm.model_versions); with a Dask `client`, the estimators' folds run on its
    workers. `progress(stage, done, total)` is told each stage as it goes
    (reading, then per target "<target>: <stage>": its heads' folds, the stacker's rounds, the label-in-text
    chooser, saving) and `say` each target's summary as soon as it is trained."""
    names = resolve_targets(cfg, targets)
    for name in names:  # before seconds of reading features
        try:
            build_estimator(cfg, cfg.targets[name]).check_params()
        except ValueError as exc:
            raise MmgbmError(f"model settings: {exc}; change them in the config's model section") from None
    progress(READING, 0, 1)
    frame = load_split(cfg, "train")
    products, fingerprints = load_products(cfg, frame)
    progress(READING, 1, 1)
    summaries = []
    for name in names:
        summaries.append(
            train_target(cfg, name, frame, products, fingerprints, client, _of_target(progress, name), force)
        )
        say(summaries[-1].describe())
    return summaries


def _of_target(progress: Callable[[str, int, int], None], name: str) -> Callable[[str, int, int], None]:
    """`progress` with each stage named for the target it is part of."""
    return lambda stage, done, total: progress(f"{name}: {stage}", done, total)


def train_target(
    cfg: Config,
    name: str,
    frame: pd.DataFrame,
    products: ProductMatrix,
    fingerprints: dict[str, dict],
    client: Client | None = None,
    progress: Callable[[str, int, int], None] = silent,
    force: bool = False,
) -> TrainSummary:
    started = time.perf_counter()
    target = cfg.targets[name]
    source = f"{cfg.data.splits['train']} (train)"
    frame, corrections = correct_labels(cfg, name, frame, target.column)
    names = target_names(cfg, name, frame)
    values = target_values(frame, target, source, names, cfg.data.id_column)
    check_no_label(name, target, values, source)
    if values.keep.sum() < min_training_rows(cfg):
        raise MmgbmError(
            f"{source}: only {int(values.keep.sum())} products have a usable {' / '.join(target.source_columns)!r}; "
            f"need at least {min_training_rows(cfg)} to train target {name!r}"
        )
    if target.task == "binary":
        check_binary(name, values.y, source)
    if target.label_in_text is not None and target.label_in_text not in frame.columns:
        raise MmgbmError(f"{source}: no column {target.label_in_text!r} (label_in_text of target {name!r})")
    model = build_estimator(cfg, target, names)
    try:
        with joblib_on(client):
            model.fit(products[values.keep], values.y, progress)
    except ValueError as exc:  # the estimator's word on bad input, as one line naming the target
        raise MmgbmError(f"{source}: cannot train target {name!r}: {exc}") from None
    metrics = {
        "target": name,
        "column": target.column,
        "task": target.task,
        "train_rows": int(values.keep.sum()),
        "dropped": values.describe(),
        "dropped_missing": values.dropped_missing,
        "dropped_nonpositive": values.dropped_nonpositive,
        "dropped_no_label": values.dropped_no_label,
        "corrections": corrections,
        "normalise": normalisation(names),
        "classes": 0 if model.regression else int(len(model.classes_)),
        "validation": model.validation_,
        "validation_se": model.validation_se_,
        "choice": model.choice_,
        "modality_heads": model.modality_heads_,
        "label_in_text": None if model.regression else model.chooser_summary(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    root, version = target_models_dir(cfg, name), new_version_name()
    info = TargetInfo(name, target.column, target.task, target.log_target, normalisation(names), path_settings(target))
    data = data_fingerprint(frame[cfg.data.id_column][values.keep], values.y, fingerprints)
    settings = {"model": cfg.model.model_dump(mode="json"), "target": target.model_dump(mode="json")}
    progress(SAVING, 0, 1)
    save_artifact(
        root / version,
        Artifact(info, model, cfg.model_dump(mode="json"), fingerprints, metrics),
        provenance(version, data, settings, metrics),
    )
    gate = publish(root, name, version, cfg.models.keep, force)
    progress(SAVING, 1, 1)
    return TrainSummary(name, root / version, metrics, gate)
