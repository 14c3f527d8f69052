"""The cosine kNN heads: plain, and searching in the space of a ridge classifier's class scores."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import RidgeClassifier

from mmgbm.estimator.folds import bounded_sample
from mmgbm.estimator.heads.registry import block_kind, register
from mmgbm.estimator.neighbours import NeighbourIndex
from mmgbm.estimator.row_view import RowView, take_rows


class KnnHead(BaseEstimator):
    """Cosine nearest neighbours: per class the summed similarity of the k nearest training products; for
    regression the similarity-weighted mean target, the nearest product's target and its similarity.
    Cheap at any number of classes, and strong where catalogues hold near-duplicate products. Exact up to
    `exact_max_rows` training products (dense rows wider than `dense_dims` in that many SVD directions), approximate
    above (see `neighbours`).

    With `projection_alpha` (classification), neighbours are searched in the space of a ridge classifier's class
    scores, learned on the same training rows (at most `projection_max_rows` of them): ImageNet embeddings spend
    most of their dimensions on what tells ImageNet's classes apart, and this keeps what tells the catalogue's
    apart (bench_image_features.py measures it)."""

    def __init__(
        self,
        task: str = "multiclass",
        n_classes: int = 0,
        n_neighbors: int = 20,
        exact_max_rows: int = 20_000,
        dense_dims: int = 0,
        projection_alpha: float | None = None,
        projection_max_rows: int = 50_000,
        seed: int = 0,
    ):
        self.task = task
        self.n_classes = n_classes
        self.n_neighbors = n_neighbors
        self.exact_max_rows = exact_max_rows
        self.dense_dims = dense_dims
        self.projection_alpha = projection_alpha
        self.projection_max_rows = projection_max_rows
        self.seed = seed

    holds = (NeighbourIndex,)  # fitted state beyond scikit-learn's own types, which artifacts must trust

    @property
    def n_outputs(self) -> int:
        return 3 if self.task == "regression" else self.n_classes

    def fit(self, X, y: np.ndarray, projector_rows: np.ndarray | None = None) -> "KnnHead":
        """With `projector_rows`, the projection learns from those rows only (every row is still indexed): see
        `halves_fit_and_score`."""
        self.projector_ = None
        y = np.asarray(y)
        X_learn, y_learn = (X, y) if projector_rows is None else (take_rows(X, projector_rows), y[projector_rows])
        if self.projection_alpha is not None and len(np.unique(y_learn)) > 1:
            self.projector_ = RidgeClassifier(alpha=self.projection_alpha).fit(
                *bounded_sample(X_learn, y_learn, self.projection_max_rows, False, self.seed)
            )
        self.index_ = NeighbourIndex(self.exact_max_rows, dense_dims=self.dense_dims, seed=self.seed).fit(
            self._project(X)
        )
        self.y_ = y
        return self

    def _project(self, X):
        """The rows in the projector's class-score space, read through a `RowView` a block of rows at a time: at
        800,000 products and 750 classes they were 2.4 GB of float32 at once."""
        if self.projector_ is None:
            return X
        return RowView(X, transform=self._class_scores, width=max(2, len(self.projector_.classes_)))

    def _class_scores(self, rows) -> np.ndarray:
        scores = self.projector_.decision_function(rows)
        return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores

    def searches_across_folds(self, n_rows: int) -> bool:
        """Whether out-of-fold scores come from an index of all `n_rows` training rows, each row's neighbours in
        its own fold skipped (`predict` with `folds`), instead of an index per fold: for approximate search.
        Building the folds' indexes was a third of training at 60,000 products. Without a projection that is one
        index; a projection learns from labels, so two (`halves_fit_and_score`)."""
        return n_rows > self.exact_max_rows

    def predict(self, X, folds: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Scores of the rows of X; with `folds` (the rows' folds, the training rows' folds), from neighbours
        outside each row's own fold only (some 2k + 1 are searched; slots past the last one outside stay empty)."""
        k = self.n_neighbors
        sims, neighbours = self.index_.search(self._project(X), k if folds is None else 2 * k + 1)
        sims = np.clip(sims, 0, None)
        found = np.ones(sims.shape, dtype=bool)
        if folds is not None:
            outside = folds[1][neighbours] != folds[0][:, None]
            first = np.argsort(~outside, axis=1, kind="stable")[:, :k]
            found = np.take_along_axis(outside, first, axis=1)
            sims = np.where(found, np.take_along_axis(sims, first, axis=1), 0)
            neighbours = np.take_along_axis(neighbours, first, axis=1)
        targets = self.y_[neighbours]
        if self.task == "regression":
            weights = np.where(found, sims + 1e-6, 0)
            with np.errstate(invalid="ignore"):  # no neighbour outside the row's fold: NaN, unscored
                mean = (weights * targets).sum(axis=1) / weights.sum(axis=1)
            nearest = np.where(found[:, 0], targets[:, 0], np.nan)
            return np.column_stack([mean, nearest, np.where(found[:, 0], sims[:, 0], np.nan)]).astype(np.float32)
        out = np.zeros((X.shape[0], self.n_classes), dtype=np.float32)
        rows = np.repeat(np.arange(X.shape[0]), sims.shape[1])
        np.add.at(out, (rows, targets.ravel()), sims.ravel())
        # No neighbour of a class is no evidence for it: unscored, so it ranks below every scored class.
        out[out == 0] = np.nan
        return out


def _search(estimator) -> dict:
    """The estimator's neighbour-search settings, which its kNN heads share."""
    return {
        "n_neighbors": estimator.knn_neighbors,
        "exact_max_rows": estimator.knn_exact_max_rows,
        "dense_dims": estimator.knn_dense_dims,
        "seed": estimator.seed,
    }


def _build(estimator, block: str, n_features: int) -> KnnHead | None:
    if block_kind(block) == "words":
        return None
    if estimator.regression:
        return KnnHead("regression", **_search(estimator))
    return KnnHead("multiclass", len(estimator.classes_), **_search(estimator))


def _build_projected(estimator, block: str, n_features: int) -> KnnHead | None:
    if estimator.regression or block_kind(block) != "dense" or not estimator.image_knn_projection:
        return None
    return KnnHead(
        "multiclass",
        len(estimator.classes_),
        projection_alpha=estimator.image_alpha,
        projection_max_rows=estimator.linear_max_products,
        **_search(estimator),
    )


register("knn", KnnHead, _build)
register("knn_projected", KnnHead, _build_projected)
