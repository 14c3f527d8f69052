"""`mmgbm predict`: one row per input product, in input order, with one column per target.

Products without an image or text still get a prediction (the model treats the modality as missing); a photo that
is not in the image store as it is now (a new table, a changed file) is embedded on the fly. A model
is only applied to features made the way it was trained (same backbone, vectorizer, settings). On a Dask cluster,
parts of the products are scored on the workers, each sent every model once, and put back in input order.
What each flat classification target answered (label and probability, counted) is kept for `mmgbm drift`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mmgbm.catalogue import load_split, read_configured
from mmgbm.cluster import score_rows
from mmgbm.commands.artifact import Artifact, check_fingerprints, load_artifact
from mmgbm.commands.normalise import check_normalisation
from mmgbm.commands.targets import resolve_targets
from mmgbm.config import Config
from mmgbm.drift import record_batch, records_drift
from mmgbm.errors import MmgbmError
from mmgbm.estimator import MMGBMPathClassifier, ProductMatrix
from mmgbm.estimator.path_classifier import deepest_confident
from mmgbm.features.atomic import write_atomically
from mmgbm.stores import load_products
from mmgbm.workdir import model_dir

if TYPE_CHECKING:
    from distributed import Client


def products_to_score(cfg: Config, split: str | None, input_path: Path | None) -> tuple[pd.DataFrame, str]:
    """The table to predict: `--input TABLE` if given, else the named split."""
    if input_path is not None:
        return read_configured(cfg, Path(input_path), "input"), str(input_path)
    split = split or "test"
    return load_split(cfg, split, with_targets=False), f"split {split!r}"


def checked_artifact(cfg: Config, name: str, fingerprints: dict[str, dict]) -> Artifact:
    folder = model_dir(cfg, name)
    artifact = load_artifact(folder, name)
    check_fingerprints(artifact, fingerprints, folder)
    check_normalisation(cfg, artifact, folder)
    return artifact


def estimator_call(name: str, call, *args):
    """Run an estimator method; its ValueError (bad input) becomes the one-line error naming the target."""
    try:
        return call(*args)
    except ValueError as exc:
        raise MmgbmError(f"target {name!r}: {exc}") from None


def predict(
    cfg: Config,
    targets: list[str] | None = None,
    split: str | None = None,
    input_path: Path | None = None,
    probabilities: bool = False,
    top_k: int = 0,
    min_confidence: float = 0.0,
    client: Client | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> pd.DataFrame:
    """A frame: the id column, then per target its prediction and, on request, top-k labels with their
    probabilities (`<target>_top1`, `<target>_p1` ...) or every class's probability (`<target>_p_<class>`).
    With `min_confidence`, labels whose calibrated probability is below it are left empty (only what is safe to
    auto-fill is filled) and `<target>_confidence` is written; a path target then writes the deepest node of its
    answer whose probability reaches it, with `<target>_depth` (see `_path_columns`). Photos not in the image store as
    they are now (a new table, a changed file) are embedded on the fly, and `say` is told how many."""
    if top_k < 0:
        raise MmgbmError(f"--top-k must be 0 or more (got {top_k})")
    if not 0.0 <= min_confidence < 1.0:
        raise MmgbmError(f"--min-confidence must be in [0, 1) (got {min_confidence})")
    names = resolve_targets(cfg, targets)
    frame, _ = products_to_score(cfg, split, input_path)
    products, fingerprints = load_products(cfg, frame, embed_new_photos=say)
    out = {cfg.data.id_column: frame[cfg.data.id_column].to_numpy()}
    for name in names:
        artifact = checked_artifact(cfg, name, fingerprints)
        columns = partial(
            _target_columns, name=name, probabilities=probabilities, top_k=top_k, min_confidence=min_confidence
        )
        scored = score_rows(client, columns, products, model=artifact.model)
        if records_drift(artifact.model):
            answered = [scored.pop(key) for key in _answered_keys(name)]
            record_batch(cfg, name, model_dir(cfg, name), *answered)
        out.update(scored)
    return pd.DataFrame(out)


def _answered_keys(name: str) -> tuple[str, str]:
    """The columns holding the label a classifier ranked first and its probability, whatever `min_confidence` left
    empty: what drift records (mmgbm.drift), taken out before the frame is made."""
    return f"{name}\0answered", f"{name}\0confidence"


def _target_columns(
    products: ProductMatrix, *, name: str, model, probabilities: bool, top_k: int, min_confidence: float
) -> dict[str, np.ndarray]:
    """Values on the target's own scale (prices, not log1p), or labels: top-k follows the final label (the first is
    always the predicted one, also when copied from the text); per-class probabilities are the model's own."""
    if model.regression:
        return {name: estimator_call(name, model.predict, products)}
    if isinstance(model, MMGBMPathClassifier):
        return _path_columns(
            products, name=name, model=model, probabilities=probabilities, min_confidence=min_confidence
        )
    labels, label_probs = estimator_call(name, model.predict_top_k, products, max(top_k, 1))
    cols = {name: labels[:, 0], **dict(zip(_answered_keys(name), (labels[:, 0], label_probs[:, 0])))}
    if min_confidence > 0:
        cols[name] = np.where(label_probs[:, 0] >= min_confidence, labels[:, 0], None)
        cols[f"{name}_confidence"] = np.round(label_probs[:, 0], 6)
    for i in range(min(top_k, labels.shape[1])):
        cols[f"{name}_top{i + 1}"] = labels[:, i]
        cols[f"{name}_p{i + 1}"] = np.round(label_probs[:, i], 6)
    if probabilities:
        full = estimator_call(name, model.predict_proba, products)
        cols.update({f"{name}_p_{c}": np.round(full[:, j], 6) for j, c in enumerate(model.classes_)})
    return cols


def _path_columns(
    products: ProductMatrix, *, name: str, model: MMGBMPathClassifier, probabilities: bool, min_confidence: float
) -> dict[str, np.ndarray]:
    """The answer's path; with `min_confidence` its deepest node that reaches it (empty where not even the first
    level does) with `<target>_depth` and `<target>_confidence`, that node's probability; with `probabilities` the
    probability of the answer's node at each level (`<target>_p_depth1` ...)."""
    nodes, node_probs = estimator_call(name, model.predict_path, products)
    path, depth, confidence = deepest_confident(nodes, node_probs, min_confidence)
    cols = {name: path}
    if min_confidence > 0:
        cols[f"{name}_depth"] = depth
        cols[f"{name}_confidence"] = np.round(confidence, 6)
    if probabilities:
        cols.update({f"{name}_p_depth{d + 1}": np.round(node_probs[:, d], 6) for d in range(node_probs.shape[1])})
    return cols


def write_predictions(frame: pd.DataFrame, out: Path) -> Path:
    """Write the CSV atomically: a full disk or a killed run never leaves a half submission under its name."""
    out = Path(out)
    if out.is_dir():
        raise MmgbmError(f"--out {out} is a folder; give a file name, e.g. {out / 'submission.csv'}")
    if not out.parent.is_dir():
        raise MmgbmError(f"cannot write {out}: folder {out.parent} does not exist")
    return write_atomically(out, lambda tmp: frame.to_csv(tmp, index=False))


def written_summary(frame: pd.DataFrame, path: Path) -> str:
    """What `write_predictions` wrote: the products, and the columns of the CSV, the id column among them."""
    return f"{len(frame):,} products x {len(frame.columns)} columns -> {path}"
