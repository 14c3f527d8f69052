"""Out-of-fold machinery: every training product scored by a head that never saw it, and scores settled on a grid.

A head is fitted on the other folds and scores each fold; a kNN head that searches across folds scores every row
from one index, skipping its own fold's neighbours. The folds run as joblib tasks (local processes, or a Dask
cluster's workers).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone

from mmgbm.estimator.row_view import take_rows
from mmgbm.estimator.top_scores import ROW_BLOCK, TopScores

SCORE_STEP = 2.0**-12  # a power of two: grid points are exact in float32 for scores below 2048


def silent(*progress) -> None:
    """The default progress callback, of any signature: reports nothing."""


def out_of_fold(
    head,
    X,
    y: np.ndarray,
    folds: np.ndarray,
    present: np.ndarray,
    n_jobs: int | None = None,
    top_k: int | None = None,
    across=None,
    progress: Callable[[int, int], None] = silent,
):
    """Scores of every training row from a clone of `head` fitted on the other folds (unscored where absent), as
    `scored` gives them. The folds run as `n_jobs` joblib tasks: on local processes, or on a Dask cluster inside
    `joblib.parallel_config("dask")`; `progress(done, folds)` is told here, in this process, as each fold's scores
    come back. With `across`, a kNN head fitted on every row present, each row is scored by it from its neighbours
    outside its own fold instead (`KnnHead.searches_across_folds`)."""
    out = unscored(head, X.shape[0], top_k)
    rows = np.flatnonzero(present)
    fold_of = folds[rows]
    names = np.unique(fold_of)
    if len(names) < 2:  # the modality is in one fold only: nothing honest to score it with
        return out
    X, y = on_rows(X, rows), on_rows(y, rows)
    if across is not None:
        out[rows] = scored(across, X, top_k, (fold_of, fold_of))
        progress(len(names), len(names))
        return out
    # A generator: each fold's scores as they come back, not all of them at the end.
    parts = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_fold_scores)(clone(head), X, y, np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f), top_k)
        for f in names
    )
    for done, (f, part) in enumerate(zip(names, parts), start=1):
        out[rows[fold_of == f]] = part
        progress(done, len(names))
    return out


def _fold_scores(head, X, y: np.ndarray, train: np.ndarray, test: np.ndarray, top_k: int | None):
    return scored(head.fit(take_rows(X, train), y[train]), take_rows(X, test), top_k)


def fit_present(head, X, y: np.ndarray, present: np.ndarray):
    """A clone of `head` fitted on the rows that have the modality."""
    rows = np.flatnonzero(present)
    return clone(head).fit(on_rows(X, rows), on_rows(y, rows))


def fit_and_score(
    head,
    X,
    y: np.ndarray,
    folds: np.ndarray,
    present: np.ndarray,
    n_jobs: int | None = None,
    top_k: int | None = None,
    progress: Callable[[int, int], None] = silent,
):
    """(`fit_present`, `out_of_fold`): a kNN head that searches across folds gets both from its one index, or,
    with a projection, from two (`halves_fit_and_score`). `progress(done, folds)` is told 0 first, then the folds
    scored as they are."""
    progress(0, len(np.unique(folds[present])))
    across = getattr(head, "searches_across_folds", lambda n: False)(int(present.sum()))
    if across and getattr(head, "projection_alpha", None) is not None:
        return halves_fit_and_score(head, X, y, folds, present, n_jobs, top_k, progress)
    fitted = fit_present(head, X, y, present)
    return fitted, out_of_fold(
        head, X, y, folds, present, n_jobs, top_k, across=fitted if across else None, progress=progress
    )


def halves_fit_and_score(
    head,
    X,
    y: np.ndarray,
    folds: np.ndarray,
    present: np.ndarray,
    n_jobs: int | None = None,
    top_k: int | None = None,
    progress: Callable[[int, int], None] = silent,
):
    """A projected kNN head cross-fitted on two halves of the folds (even and odd): each half's clone learns its
    projection from that half's rows and indexes every row; the other half's rows are scored by it from their
    neighbours outside their own fold, so no row's position or neighbours know its label. The clone of the
    larger half (folds 0, 2, 4) is the fitted head: above `projection_max_rows` / 0.6 rows its projection learns
    from as many rows as one fitted on all of them. Two index builds where a fold each and a final one were six
    (10 of the 15 builds of a 120,000-product fit, the largest part of its time)."""
    rows = np.flatnonzero(present)
    fold_of = folds[rows]
    half = fold_of % 2
    if len(np.unique(half)) < 2:  # the modality is in one half only: no half to learn each one's projection
        return fit_present(head, X, y, present), out_of_fold(head, X, y, folds, present, n_jobs, top_k, None, progress)
    out = unscored(head, X.shape[0], top_k)
    X, y = on_rows(X, rows), on_rows(y, rows)
    parts = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_half_scores)(
            clone(head), X, y, fold_of, np.flatnonzero(half == h), np.flatnonzero(half != h), top_k, keep=h == 0
        )
        for h in (0, 1)
    )
    fitted, done = None, 0
    for h, (kept, part) in enumerate(parts):
        out[rows[half != h]] = part
        if h == 0:
            fitted = kept
        done += len(np.unique(fold_of[half != h]))  # the folds this half scored
        progress(done, len(np.unique(fold_of)))
    return fitted, out


def _half_scores(
    head, X, y: np.ndarray, fold_of: np.ndarray, learn: np.ndarray, score: np.ndarray, top_k: int | None, keep: bool
):
    """(the fitted head if `keep`, else None: a worker would send back its index for nothing; the scores)."""
    head.fit(X, y, projector_rows=learn)
    return head if keep else None, scored(head, take_rows(X, score), top_k, (fold_of[score], fold_of))


def on_rows(X, rows: np.ndarray):
    """X[rows]; X itself, not a copy, where the rows are all of it (text, a catalogue whose products all have
    photos): a copy of a million products' image block is 4 GB. A `RowView` (a dense block) is never copied."""
    return X if len(rows) == X.shape[0] else take_rows(X, rows)


def apply_head(head, X, present: np.ndarray, top_k: int | None = None):
    """`scored` on the rows that have the modality; the others unscored."""
    out = unscored(head, X.shape[0], top_k)
    rows = np.flatnonzero(present)
    if len(rows):
        out[rows] = scored(head, on_rows(X, rows), top_k)
    return out


def scored(head, X, top_k: int | None, folds: tuple[np.ndarray, np.ndarray] | None = None):
    """`head.predict(X)`, settled, ROW_BLOCK products at a time (every class's score, and a dense block's rows read
    through a `RowView`, exist for one block only); with `top_k` (classification), each product's best `top_k`
    classes. `folds` (the rows' folds, the training rows' folds) go to a kNN head's `predict`, each block's own."""

    def predict(start: int, stop: int) -> np.ndarray:
        block = X[start:stop]
        if folds is None:
            return settled(head.predict(block))
        return settled(head.predict(block, (folds[0][start:stop], folds[1])))

    starts = range(0, X.shape[0], ROW_BLOCK)
    if top_k is None:
        return np.concatenate([predict(start, start + ROW_BLOCK) for start in starts])
    return TopScores.concatenate([TopScores.from_dense(predict(start, start + ROW_BLOCK), top_k) for start in starts])


def unscored(head, n: int, top_k: int | None):
    """Scores of n products the head cannot score: no class kept, or NaN outputs."""
    if top_k is None:
        return np.full((n, head.n_outputs), np.nan, dtype=np.float32)
    return TopScores.unscored(n, top_k, head.n_outputs)


def settled(scores: np.ndarray) -> np.ndarray:
    """Scores on a grid of SCORE_STEP: the last bits in which machines, BLAS builds and row chunkings (a cluster
    scores parts of the rows) differ would otherwise break the exact ties of the heads' ranks and move the
    stacker's bin edges, and with them labels; no tree split needs finer scores."""
    return (np.round(scores / SCORE_STEP) * SCORE_STEP).astype(np.float32)
