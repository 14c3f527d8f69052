"""Seeded, stratified assignment of training rows to folds, and bounded samples of them.

Every row gets a position u in [0, 1) that is spread evenly within its class (or, for regression, within its
quantile bin), with a random offset per class. `floor(u * k)` is then a stratified k-fold that never crashes on
classes with one or two members, which sklearn's stratified splitters refuse or warn about.
"""

from __future__ import annotations

import numpy as np

REGRESSION_BINS = 10


def stratified_positions(strata: np.ndarray, seed: int) -> np.ndarray:
    """u in [0, 1) per row; within each stratum the rows' u are evenly spaced in a random order."""
    rng = np.random.default_rng(seed)
    u = np.empty(len(strata), dtype=np.float64)
    for value in np.unique(strata):
        rows = np.flatnonzero(strata == value)
        rows = rows[rng.permutation(len(rows))]
        u[rows] = (np.arange(len(rows)) + rng.random()) / len(rows)
    return u


def regression_strata(y: np.ndarray) -> np.ndarray:
    edges = np.quantile(y, np.linspace(0, 1, REGRESSION_BINS + 1)[1:-1])
    return np.searchsorted(edges, y)


def strata_for(y: np.ndarray, regression: bool) -> np.ndarray:
    return regression_strata(y) if regression else y


def fold_ids(y: np.ndarray, n_folds: int, seed: int, regression: bool = False) -> np.ndarray:
    u = stratified_positions(strata_for(y, regression), seed + 1)
    return np.minimum((u * n_folds).astype(np.int64), n_folds - 1)


def cap_rows(folds: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """`folds` with all but a random `max_rows` rows set to -1 (left out of fitting altogether)."""
    if len(folds) <= max_rows:
        return folds
    kept = np.random.default_rng(seed).choice(len(folds), max_rows, replace=False)
    capped = np.full_like(folds, -1)
    capped[kept] = folds[kept]
    return capped


def bounded_rows(strata: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Indices of at most `max_rows` rows, sorted: every row while there are no more; above, every stratum keeps
    min(its size, q) random rows with the largest q that fits, so rare classes keep all their rows and only the
    frequent ones are thinned (a uniform sample would drop a quarter of the rare classes' few examples too)."""
    if len(strata) <= max_rows:
        return np.arange(len(strata))
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    low, high = 0, int(counts.max())
    while low < high:  # the largest quota q with sum(min(count, q)) <= max_rows
        mid = (low + high + 1) // 2
        low, high = (mid, high) if np.minimum(counts, mid).sum() <= max_rows else (low, mid - 1)
    rng = np.random.default_rng(seed)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    kept = [
        rng.choice(order[start : start + count], min(count, low), replace=False) for start, count in zip(starts, counts)
    ]
    return np.sort(np.concatenate(kept))


def bounded_sample(X, y: np.ndarray, max_rows: int, regression: bool, seed: int):
    """(X, y) on at most `max_rows` rows, stratified by class (or target quantile): see `folds.bounded_rows`."""
    if X.shape[0] <= max_rows:
        return X, y
    rows = bounded_rows(strata_for(y, regression), max_rows, seed)
    return X[rows], y[rows]
