"""`mmgbm predict`: one row per input product, in input order, with one column per target.

Products without an image or text still get a prediction (the model treats the modality as missing). A model
is only applied to features made the way it was trained (same backbone, vectorizer, settings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmgbm.artifact import Artifact, check_fingerprints, load_artifact, model_dir
from mmgbm.catalogue import load_split, read_table
from mmgbm.config import Config, TargetConfig
from mmgbm.dataset import Modalities, load_modalities
from mmgbm.errors import MmgbmError
from mmgbm.model import Prediction
from mmgbm.targets import resolve_targets


def products_to_score(cfg: Config, split: str | None, input_path: Path | None) -> tuple[pd.DataFrame, str]:
    """The table to predict: `--input TABLE` if given, else the named split."""
    if input_path is not None:
        return read_table(Path(input_path), cfg.data.id_column), str(input_path)
    split = split or "test"
    return load_split(cfg, split, with_targets=False), f"split {split!r}"


def checked_artifact(cfg: Config, name: str, data: Modalities) -> Artifact:
    folder = model_dir(cfg, name)
    artifact = load_artifact(folder, name)
    check_fingerprints(artifact, data, folder)
    return artifact


def trained_target(artifact: Artifact) -> TargetConfig:
    """The target as the model was trained (column, task, log transform), whatever the config says now."""
    return TargetConfig(**artifact.config["targets"][artifact.name])


def output_values(artifact: Artifact, prediction: Prediction) -> np.ndarray:
    """Labels, or values on the original scale (prices in currency, not log1p)."""
    model = artifact.model
    if model.regression:
        return np.expm1(prediction.values) if trained_target(artifact).log_target else prediction.values
    return prediction.labels[:, 0]


def predict(cfg: Config, targets: list[str] | None = None, split: str | None = None, input_path: Path | None = None,
            probabilities: bool = False, top_k: int = 0) -> pd.DataFrame:
    """A frame: the id column, then per target its prediction and, on request, top-k labels with their
    probabilities (`<target>_top1`, `<target>_p1` ...) or every class's probability (`<target>_p_<class>`)."""
    if top_k < 0:
        raise MmgbmError(f"--top-k must be 0 or more (got {top_k})")
    names = resolve_targets(cfg, targets)
    frame, source = products_to_score(cfg, split, input_path)
    data = load_modalities(cfg, frame)
    out = {cfg.data.id_column: frame[cfg.data.id_column].to_numpy()}
    for name in names:
        artifact = checked_artifact(cfg, name, data)
        prediction = artifact.model.predict(data, frame)
        out[name] = output_values(artifact, prediction)
        if not artifact.model.regression:
            out.update(_class_columns(name, artifact.model.classes_, prediction, probabilities, top_k))
    return pd.DataFrame(out)


def _class_columns(name: str, classes: np.ndarray, prediction: Prediction, probabilities: bool,
                   top_k: int) -> dict[str, np.ndarray]:
    """Top-k follows the final label: the first is always the predicted one, also when it was copied from the
    text (label_in_text); the per-class probabilities are the model's own, over its training classes only."""
    cols: dict[str, np.ndarray] = {}
    labels, label_probs = prediction.labels, prediction.label_probabilities
    for i in range(min(top_k, labels.shape[1])):
        cols[f"{name}_top{i + 1}"] = labels[:, i]
        cols[f"{name}_p{i + 1}"] = np.round(label_probs[:, i], 6)
    if probabilities:
        cands, probs = prediction.candidates, prediction.probabilities
        full = np.zeros((len(cands), len(classes)))
        np.put_along_axis(full, cands, probs, axis=1)  # classes the model did not consider have probability 0
        cols.update({f"{name}_p_{c}": np.round(full[:, j], 6) for j, c in enumerate(classes)})
    return cols


def write_predictions(frame: pd.DataFrame, out: Path) -> Path:
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise MmgbmError(f"cannot write {out}: folder {out.parent} does not exist")
    frame.to_csv(out, index=False)
    return out
