"""Pictures of an evaluation: confusion matrix of the most frequent classes, per-class F1, and the stacker's
feature importance summed per modality (image / text / metadata / candidate), or predicted vs true values.

Figures are drawn with matplotlib's object API (`Figure`), never pyplot: writing a PNG must not change the
backend of a notebook that imported mmgbm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

TOP_CLASSES = 20
F1_CLASSES = 40


def confusion_png(path: Path, y_true: np.ndarray, y_pred: np.ndarray, title: str) -> Path:
    classes, counts = np.unique(y_true, return_counts=True)
    top = classes[np.argsort(-counts, kind="stable")][:TOP_CLASSES]
    keep = np.isin(y_true, top)
    matrix = confusion_matrix(y_true[keep], y_pred[keep], labels=top).astype(float)
    matrix /= np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    size = 3 + 0.4 * len(top)
    fig, ax = _subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(top)), top, rotation=90, fontsize=8)
    ax.set_yticks(range(len(top)), top, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: confusion of the {len(top)} most frequent classes (row-normalised)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def per_class_f1_png(path: Path, per_class: list[dict], title: str) -> Path:
    rows = per_class[:F1_CLASSES]  # already sorted by support
    fig, ax = _subplots(figsize=(7, 1.5 + 0.22 * len(rows)))
    ax.barh([f"{r['class']} (n={r['support']})" for r in rows][::-1], [r["f1"] for r in rows][::-1], color="#4878a8")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_title(f"{title}: F1 of the {len(rows)} most frequent classes", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    return _save(fig, path)


def importance_png(path: Path, shares: dict[str, float], title: str) -> Path:
    fig, ax = _subplots(figsize=(6, 3))
    ax.bar(list(shares), [100 * v for v in shares.values()], color="#6a9f58")
    ax.set_ylabel("% of total split gain")
    ax.set_title(f"{title}: what the LightGBM stacker used, by modality", fontsize=9)
    return _save(fig, path)


def reliability_png(path: Path, calibration: dict, title: str) -> Path:
    """Accuracy against confidence per bin: on the diagonal when the probabilities mean what they say."""
    bins = calibration["bins"]
    fig, ax = _subplots(figsize=(5, 5))
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    ax.bar(centres, [b["accuracy"] for b in bins], width=0.09, color="#4878a8", label="accuracy")
    ax.plot(
        [b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#c44e52", label="mean confidence"
    )
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1)
    for centre, b in zip(centres, bins):
        ax.annotate(str(b["rows"]), (centre, b["accuracy"]), ha="center", va="bottom", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("predicted probability of the label")
    ax.set_ylabel("share right")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{title}: reliability (calibration error {calibration['ece']:.3f})", fontsize=9)
    return _save(fig, path)


def scatter_png(path: Path, y_true: np.ndarray, y_pred: np.ndarray, title: str, axis: str) -> Path:
    fig, ax = _subplots(figsize=(5, 5))
    ax.scatter(y_true, y_pred, s=3, alpha=0.3)
    lo, hi = float(np.min(y_true)), float(np.max(y_true))
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
    ax.set_xlabel(f"true {axis}")
    ax.set_ylabel(f"predicted {axis}")
    ax.set_title(f"{title}: predicted vs true", fontsize=9)
    return _save(fig, path)


def _subplots(figsize: tuple[float, float]):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
