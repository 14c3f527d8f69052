"""Scoring predictions: accuracy, macro and weighted F1 and a per-class table; MAE/RMSE on both price scales."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, train_counts: dict[str, int], rare_below: int
) -> dict:
    """Labels are strings. Classes never seen in training cannot be predicted; they are counted, not hidden."""
    y_true = np.asarray(y_true, dtype=str)
    y_pred = np.asarray(y_pred, dtype=str)
    labels = np.unique(np.concatenate([y_true, y_pred]))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = [
        {
            "class": str(c),
            "support": int(s),
            "train_support": int(train_counts.get(c, 0)),
            "precision": round(float(p), 4),
            "recall": round(float(r), 4),
            "f1": round(float(f), 4),
        }
        for c, p, r, f, s in zip(labels, precision, recall, f1, support)
        if s > 0 or p > 0
    ]
    unseen = ~np.isin(y_true, list(train_counts))
    rare = np.array([0 < train_counts.get(c, 0) < rare_below for c in y_true], dtype=bool)
    return {
        "rows": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "unseen_class_rows": int(unseen.sum()),
        "unseen_classes": sorted(set(y_true[unseen].tolist())),
        "rare_class_rows": int(rare.sum()),
        "rare_class_accuracy": float(np.mean(y_true[rare] == y_pred[rare])) if rare.any() else None,
        "per_class": sorted(per_class, key=lambda row: -row["support"]),
    }


CALIBRATION_BINS = 10
COVERAGES = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)


def calibration_metrics(correct: np.ndarray, confidence: np.ndarray) -> dict:
    """Expected calibration error over equal-width confidence bins, the bins themselves (for a reliability
    diagram), and accuracy when only the most confident share of products is auto-filled."""
    correct = np.asarray(correct, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    which = np.minimum((confidence * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    bins = []
    for b in range(CALIBRATION_BINS):
        rows = which == b
        if rows.any():
            bins.append(
                {
                    "low": b / CALIBRATION_BINS,
                    "high": (b + 1) / CALIBRATION_BINS,
                    "rows": int(rows.sum()),
                    "confidence": float(confidence[rows].mean()),
                    "accuracy": float(correct[rows].mean()),
                }
            )
    ece = sum(r["rows"] * abs(r["accuracy"] - r["confidence"]) for r in bins) / max(len(correct), 1)
    order = np.argsort(-confidence, kind="stable")
    coverage = []
    for share in COVERAGES:
        n = max(1, int(round(share * len(order))))
        top = order[:n]
        coverage.append(
            {
                "coverage": share,
                "rows": n,
                "accuracy": float(correct[top].mean()),
                "min_confidence": float(confidence[top].min()),
            }
        )
    return {"ece": float(ece), "bins": bins, "coverage": coverage}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, log_target: bool) -> dict:
    """Inputs on the target's own scale; a log target is also scored on log1p, the scale it was learned on."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    err = y_pred - y_true
    out = {"rows": int(len(err)), "mae": float(np.mean(np.abs(err)))}
    if log_target:
        log_err = np.log1p(np.clip(y_pred, 0, None)) - np.log1p(y_true)
        out.update({"mae_log": float(np.mean(np.abs(log_err))), "rmse_log": float(np.sqrt(np.mean(log_err**2)))})
    else:
        out["rmse"] = float(np.sqrt(np.mean(err**2)))
    return out


def headline(metrics: dict) -> str:
    """The one or two numbers a person looks at first."""
    if "accuracy" in metrics:
        return f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"
    if "mae_log" in metrics:
        return f"MAE(log) {metrics['mae_log']:.4f}, RMSE(log) {metrics['rmse_log']:.4f}, MAE {metrics['mae']:.2f}"
    return f"MAE {metrics['mae']:.4f}, RMSE {metrics['rmse']:.4f}"
