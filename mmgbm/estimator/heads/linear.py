"""The linear head: a linear SVM on sparse text, ridge on dense blocks; ridge for regression."""

from __future__ import annotations

import threading
import warnings
from contextlib import nullcontext

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge, RidgeClassifier
from sklearn.svm import LinearSVC

from mmgbm.estimator.folds import bounded_sample
from mmgbm.estimator.heads.registry import block_kind, register
from mmgbm.estimator.shortlist import ShortlistSVM

# Measured on 759 Flipkart categories: 30 coordinate-descent passes give the same accuracy as 1,000 in a tenth of
# the time; the few one-vs-rest problems that never converge (identical titles, different labels) cost the rest.
SVM_MAX_ITER = 30
SVM_TOL = 1e-2


# liblinear (LinearSVC) draws its coordinate order from one process-wide generator (sklearn's newrand.h): two
# fits in threads of one process (a Dask worker with threads, joblib's threading backend) interleave its draws and
# each gets another model than its seed gives (0.0017 apart in a cluster test's out-of-fold scores, 5 of 40
# runs). One fit at a time per process; processes are unaffected.
LIBLINEAR = threading.Lock()


class LinearHead(BaseEstimator):
    """Classification: a linear SVM on sparse text, ridge on dense image blocks; one score per class. Above
    2 x `shortlist` classes the SVM is a `ShortlistSVM` (each class learns from the products near it; the others
    unscored), one-vs-rest below. Regression: ridge, one prediction. Fitted on at most `max_rows` rows
    (`bounded_sample`): a one-vs-rest SVM costs rows x classes x iterations, 6.1x for 3x the rows at 750 classes
    (12,000 -> 36,000 products), while the kNN heads and the stacker keep reading every row."""

    def __init__(
        self,
        task: str = "multiclass",
        n_classes: int = 0,
        c: float = 1.0,
        sparse_alpha: float = 0.2,
        dense_alpha: float = 10.0,
        max_rows: int = 50_000,
        shortlist: int = 30,
        seed: int = 0,
    ):
        self.task = task
        self.n_classes = n_classes
        self.shortlist = shortlist
        self.c = c
        self.sparse_alpha = sparse_alpha
        self.dense_alpha = dense_alpha
        self.max_rows = max_rows
        self.seed = seed

    holds = (ShortlistSVM,)  # fitted state beyond scikit-learn's own types, which artifacts must trust

    @property
    def n_outputs(self) -> int:
        return 1 if self.task == "regression" else self.n_classes

    def fit(self, X, y: np.ndarray) -> "LinearHead":
        X, y = bounded_sample(X, y, self.max_rows, self.task == "regression", self.seed)
        alpha = self.sparse_alpha if sp.issparse(X) else self.dense_alpha
        self.only_class_ = None
        if self.task == "regression":
            self.model_ = Ridge(alpha=alpha)
        elif len(np.unique(y)) == 1:
            self.only_class_ = int(y[0])  # one class only: nothing to separate
            return self
        elif sp.issparse(X) and self.shortlisted(self.n_classes, self.shortlist):
            self.model_ = ShortlistSVM(self.shortlist, self.c, SVM_TOL, SVM_MAX_ITER, self.seed)
        elif sp.issparse(X):
            self.model_ = LinearSVC(C=self.c, tol=SVM_TOL, max_iter=SVM_MAX_ITER, random_state=self.seed)
        else:
            self.model_ = RidgeClassifier(alpha=alpha)
        liblinear = isinstance(self.model_, (LinearSVC, ShortlistSVM))
        with warnings.catch_warnings(), LIBLINEAR if liblinear else nullcontext():
            # The iteration cap is plenty for stacking features; full convergence buys nothing here.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_.fit(X, y)
        return self

    @staticmethod
    def shortlisted(n_classes: int, shortlist: int) -> bool:
        """Whether a sparse block's SVM is a `ShortlistSVM` (whose weights are sparse) rather than one-vs-rest."""
        return 0 < 2 * shortlist < n_classes

    def predict(self, X) -> np.ndarray:
        if self.task == "regression":
            return self.model_.predict(X).astype(np.float32)[:, None]
        out = np.full((X.shape[0], self.n_classes), np.nan, dtype=np.float32)
        if self.only_class_ is not None:
            out[:, self.only_class_] = 1.0
            return out
        scores = self.model_.decision_function(X)
        if scores.ndim == 1:  # two classes: sklearn returns the score of the second one only
            scores = np.column_stack([-scores, scores])
        out[:, self.model_.classes_] = scores
        return out


def _build(estimator, block: str, n_features: int) -> LinearHead | None:
    kind = block_kind(block)
    if kind == "words":
        return None
    if estimator.regression:
        return LinearHead(
            "regression",
            sparse_alpha=estimator.text_ridge_alpha,
            dense_alpha=estimator.image_alpha,
            max_rows=estimator.linear_max_products,
            seed=estimator.seed,
        )
    n_classes = len(estimator.classes_)
    sparse_weights = kind == "text" and LinearHead.shortlisted(n_classes, estimator.linear_shortlist)
    if sparse_weights or n_classes * n_features <= estimator.linear_max_weights:
        return LinearHead(
            "multiclass",
            n_classes,
            estimator.linear_c,
            dense_alpha=estimator.image_alpha,
            max_rows=estimator.linear_max_products,
            shortlist=estimator.linear_shortlist,
            seed=estimator.seed,
        )
    return None


register("linear", LinearHead, _build)
