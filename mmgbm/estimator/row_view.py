"""`RowView`: a dense feature block seen through a selection of its rows and a per-row transform, never copied whole.

A million products' B0 embeddings are 4.8 GB. Standardising them for the heads made one more copy, and each fold's
training rows another, at the peak of training. The heads read a dense block only by row blocks (`X[start:stop]`)
and row samples (`X[rows]`), which a view hands over transformed, as arrays; a view of a view (`take`) is a view.
`np.asarray` reads a view whole, as sklearn's estimators do on small catalogues (exact kNN, models fitted on every
row when there are fewer than their `max_rows`).
"""

from __future__ import annotations

import numpy as np


class RowView:
    """Rows `rows` of `block` (all of them when None), passed through `transform` (e.g. a fitted scaler's) when
    read; `width` columns of float32 come out (the block's own number without a transform), as the heads compute."""

    ndim = 2

    def __init__(self, block: np.ndarray, rows: np.ndarray | None = None, transform=None, width: int | None = None):
        self.block = block
        self.rows = rows
        self.transform = transform
        self.width = block.shape[1] if width is None else width

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.block) if self.rows is None else len(self.rows)), self.width

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows: np.ndarray) -> "RowView":
        """The view of these of its rows (positions in this view)."""
        return RowView(self.block, rows if self.rows is None else self.rows[rows], self.transform, self.width)

    def __getitem__(self, key) -> np.ndarray:
        """The rows at `key` (a slice or integer positions), read and transformed: an array."""
        if isinstance(key, slice):
            raw = self.block[key] if self.rows is None else self.block[self.rows[key]]
        else:
            raw = self.block[np.asarray(key) if self.rows is None else self.rows[key]]
        # float32 before the transform: a float16 block (`ProductMatrix`) standardised in float16 would lose digits.
        raw = raw.astype(np.float32, copy=False)
        return raw if self.transform is None else self.transform(raw).astype(np.float32, copy=False)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype, copy=False)


def take_rows(X, rows: np.ndarray):
    """X[rows]: a view for a `RowView`, a copy of those rows for an array or sparse matrix."""
    return X.take(rows) if isinstance(X, RowView) else X[rows]
