"""`TopScores`: a classification head's scores kept as each product's best classes, the form heads hand on.

The stacker reads a product's few candidate classes and a head alone predicts from its best ones, so nothing needs
a head's score of every class. Kept dense, the out-of-fold scores cost products x classes x heads: 5.5 GB at
200,000 products, 759 classes and nine heads, ~27 GB at a million. Kept as the best `k` classes (8 bytes each), they
cost the same at any number of classes, and ranking a class is reading its position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Products per block where every class is held at once (a head's scores before they are cut to the best, the
# stacker's ranks): 8,192 x 750 classes is ~25 MB per array.
ROW_BLOCK = 8192


@dataclass
class TopScores:
    """`classes` (n, k) int32 class codes best first, ties to the lower code, -1 past a product's last scored
    class; `scores` (n, k) float32, NaN where the class is -1. A product the head cannot score has no class."""

    classes: np.ndarray
    scores: np.ndarray
    n_classes: int

    @classmethod
    def unscored(cls, n: int, k: int, n_classes: int) -> "TopScores":
        k = min(k, n_classes)
        return cls(np.full((n, k), -1, dtype=np.int32), np.full((n, k), np.nan, dtype=np.float32), n_classes)

    @classmethod
    def from_dense(cls, dense: np.ndarray, k: int) -> "TopScores":
        """The best `k` of (n, classes) scores, NaN meaning unscored."""
        n, n_classes = dense.shape
        k = min(k, n_classes)
        filled = np.where(np.isnan(dense), -np.inf, dense).astype(np.float32, copy=False)
        if k < n_classes:
            # The k-th best score per product; of the classes tied at it, the lower codes are kept (argpartition
            # alone would keep any), so the kept set does not depend on how a machine partitions.
            kth = -np.partition(-filled, k - 1, axis=1)[:, k - 1 : k]
            above, tied = filled > kth, filled == kth
            # Counted in the narrowest integers that hold the classes: numpy's default int64 counts were half the
            # cost of a head's scores at 750 classes (a third to a fifth of that in int16).
            counts = np.cumsum(tied, axis=1, dtype=np.min_scalar_type(n_classes))
            keep = above | (tied & (counts <= k - above.sum(axis=1, keepdims=True)))
            top = np.nonzero(keep)[1].reshape(n, k)
        else:
            top = np.broadcast_to(np.arange(n_classes), (n, n_classes))
        values = np.take_along_axis(filled, top, axis=1)
        order = np.lexsort((top, -values), axis=1)
        classes = np.take_along_axis(top, order, axis=1).astype(np.int32)
        scores = np.take_along_axis(values, order, axis=1)
        unscored = np.isneginf(scores)
        classes[unscored], scores[unscored] = -1, np.nan
        return cls(classes, scores, n_classes)

    @classmethod
    def concatenate(cls, parts: list["TopScores"]) -> "TopScores":
        return cls(
            np.concatenate([p.classes for p in parts]), np.concatenate([p.scores for p in parts]), parts[0].n_classes
        )

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, rows) -> "TopScores":
        return TopScores(self.classes[rows], self.scores[rows], self.n_classes)

    def __setitem__(self, rows, other: "TopScores") -> None:
        self.classes[rows] = other.classes
        self.scores[rows] = other.scores

    @property
    def absent(self) -> np.ndarray:
        """Products without any score (the head's modality is missing)."""
        return self.classes[:, 0] < 0

    def dense(self) -> np.ndarray:
        """(n, classes) float32 scores, NaN for the classes not kept."""
        out = np.full((len(self), self.n_classes), np.nan, dtype=np.float32)
        rows, cols = np.nonzero(self.classes >= 0)
        out[rows, self.classes[rows, cols]] = self.scores[rows, cols]
        return out

    def ranks(self) -> np.ndarray:
        """(n, classes) int32 rank of every class (0 = best); the classes not kept all rank k."""
        out = np.full((len(self), self.n_classes), self.classes.shape[1], dtype=np.int32)
        rows, cols = np.nonzero(self.classes >= 0)
        out[rows, self.classes[rows, cols]] = cols
        return out
