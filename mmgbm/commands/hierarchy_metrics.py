"""Scoring category paths: accuracy at each depth and of the whole path, hierarchical precision / recall / F1,
calibration at each depth, and how deep answers can be filled at a precision.

Hierarchical precision and recall are Kiritchenko et al.'s (2005): a path counts as the set of its nodes (the root's
children down to its end), and precision is the share of predicted nodes that are the product's, recall the share
of its nodes predicted, both summed over products. A coverage row is what `predict --min-confidence T` fills: every
product gets the deepest node of its answer whose probability reaches T, and a filled product is right when that
node is a node of its path; the row's T is the lowest at which the filled products are right at the precision.
"""

from __future__ import annotations

import numpy as np

from mmgbm.commands.metrics import calibration_metrics

PRECISIONS = (0.95, 0.98)
THRESHOLDS = 2001  # quantiles of the answers' probabilities tried as T


def path_metrics(
    truth: np.ndarray, nodes: np.ndarray, probabilities: np.ndarray, separator: str, partial: np.ndarray | None = None
) -> dict:
    """`truth` (n,) the products' paths; `nodes` (n, depth) the answer's node at each level (None past its end) and
    `probabilities` (n, depth) theirs, as `MMGBMPathClassifier.predict_path` gives them. `partial` (n,) marks the
    paths known only as far as they go (`MMGBMPathClassifier.partial_labels`): an answer below such a path is right
    where it goes through it, and its levels below are not scored."""
    n, depth = nodes.shape
    levels = [str(path).split(separator) for path in truth]
    truth_depth = np.array([len(path) for path in levels])
    width = max(depth, int(truth_depth.max()))
    true_nodes = np.array(
        [[separator.join(path[: d + 1]) if d < len(path) else None for d in range(width)] for path in levels],
        dtype=object,
    ).reshape(n, width)
    answered = nodes != None  # noqa: E711 (elementwise)
    right = answered & (nodes == true_nodes[:, :depth])  # the answer's node at that level is the product's
    rows_n = np.arange(n)
    through = right[rows_n, np.minimum(truth_depth, depth) - 1]  # the answer reaches the product's last level
    judged = answered.copy()  # levels whose answer is scored
    if partial is not None:
        below = np.asarray(partial, dtype=bool)[:, None] & (np.arange(depth)[None, :] >= truth_depth[:, None])
        right = np.where(below, answered & through[:, None], right)
        judged &= ~below
    by_depth = []
    for d in range(width):
        rows = truth_depth > d
        if rows.any():
            by_depth.append(
                {
                    "depth": d + 1,
                    "rows": int(rows.sum()),
                    "accuracy": float(right[rows, d].mean()) if d < depth else 0.0,
                }
            )
    shared, predicted, true = int((right & judged).sum()), int(judged.sum()), int(truth_depth.sum())
    precision, recall = shared / max(predicted, 1), shared / max(true, 1)
    answer = nodes[rows_n, np.maximum(answered.sum(axis=1) - 1, 0)]
    full = answer == np.asarray(truth, dtype=object)
    return {
        "rows": n,
        "full_path_accuracy": float(np.mean(full if partial is None else np.where(partial, through, full))),
        "depth_accuracy": by_depth,
        "hierarchical": {
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        },
        "calibration": [
            {
                "depth": d + 1,
                "rows": int(judged[:, d].sum()),
                **_without_coverage(calibration_metrics(right[judged[:, d], d], probabilities[judged[:, d], d])),
            }
            for d in range(depth)
            if judged[:, d].any()
        ],
        "coverage": [fill_at_precision(right, probabilities, goal) for goal in PRECISIONS],
    }


def fill_at_precision(right: np.ndarray, probabilities: np.ndarray, goal: float) -> dict:
    """The lowest threshold T whose filled products are right at least `goal` of the time, and the share of
    products then filled to each depth or deeper (None for T when no threshold reaches the goal)."""
    probs = np.nan_to_num(probabilities, nan=-1.0)
    candidates = np.unique(np.quantile(probs[probs >= 0], np.linspace(0, 1, THRESHOLDS)))
    rows = np.arange(len(probs))
    for threshold in candidates:  # ascending: the first that reaches the goal fills the most
        filled = (probs >= threshold).sum(axis=1)  # probabilities never grow down a path
        some = filled > 0
        correct = right[rows[some], filled[some] - 1]
        if some.any() and correct.mean() >= goal:
            return {
                "precision_goal": goal,
                "min_confidence": float(threshold),
                "precision": float(correct.mean()),
                "filled_to_depth": {str(d + 1): float(np.mean(filled > d)) for d in range(probs.shape[1])},
            }
    return {
        "precision_goal": goal,
        "min_confidence": None,
        "precision": None,
        "filled_to_depth": {str(d + 1): 0.0 for d in range(probs.shape[1])},
    }


def _without_coverage(calibration: dict) -> dict:
    return {key: value for key, value in calibration.items() if key != "coverage"}


def path_headline(metrics: dict) -> str:
    """Accuracy at each depth, of the whole path, hierarchical F1 and what is filled at the strictest precision."""
    depths = " / ".join(f"{row['accuracy']:.4f}" for row in metrics["depth_accuracy"])
    strict = metrics["coverage"][-1]
    filled = ", ".join(f"{share:.1%} to depth {d}" for d, share in strict["filled_to_depth"].items())
    at = (
        "no threshold reaches it"
        if strict["min_confidence"] is None
        else f"--min-confidence {strict['min_confidence']:.3f} fills {filled}"
    )
    return (
        f"accuracy by depth {depths}, full path {metrics['full_path_accuracy']:.4f}, hierarchical F1 "
        f"{metrics['hierarchical']['f1']:.4f}; at {strict['precision_goal']:.0%} precision {at}"
    )
