"""Dense (image) blocks standardised, and optionally reduced by PCA, before the heads read them."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmgbm.estimator.top_scores import ROW_BLOCK


def dense_reducer(n_components: int, n_rows: int, n_features: int, seed: int):
    """Standardise image blocks, then optionally PCA to `n_components` (0 keeps every dimension)."""
    n = min(n_components, n_rows - 1, n_features)
    return make_pipeline(StandardScaler(), PCA(n_components=n, random_state=seed)) if n > 0 else StandardScaler()


def fit_reducer(reducer, block: np.ndarray, present: np.ndarray):
    """`reducer` fitted on the rows present; a plain scaler ROW_BLOCK rows at a time (`partial_fit`, the same
    statistics): a copy of a million photos' B0 embeddings is 4.8 GB, and float64 statistics of it twice that."""
    if not isinstance(reducer, StandardScaler):
        # float32 first: a pipeline's scaler would standardise a float16 block (`ProductMatrix`) in float16.
        return reducer.fit(block[present].astype(np.float32))
    for start in range(0, len(block), ROW_BLOCK):
        rows = np.flatnonzero(present[start : start + ROW_BLOCK])
        if len(rows):
            reducer.partial_fit(block[start + rows])
    return reducer
