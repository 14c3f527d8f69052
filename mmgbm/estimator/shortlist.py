"""`ShortlistSVM`: one linear SVM per class, each learning only from the products that could be confused with it.

A one-vs-rest SVM fits every class against every product: rows x classes, 82% of a 60,000-product, 750-class
training run (1,030 of 1,255 s), and at 2,600 brands its dense weights (classes x ~51,000 n-grams) did not fit the
weight budget at all. Here each product first shortlists its `shortlist` nearest class centroids (cosine, the mean
unit TF-IDF row of each class's products); class c's SVM then learns from the products that shortlisted c or belong
to it, the negatives that matter. The cost is rows x (shortlist + 1), whatever the number of classes, and the
weights are sparse (only terms those products use). A product is scored for its shortlisted classes only, the ones
its class's SVM was trained to tell apart; the others stay unscored (NaN), as the kNN heads leave them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.svm import LinearSVC

from mmgbm.estimator.neighbours import KNN_CHUNK, transposed, unit_rows


class ShortlistSVM:
    """`fit(X, y)` on sparse rows and integer labels, then `decision_function(X)` -> (n, len(classes_)) scores,
    NaN outside each product's shortlist. `C`, `tol`, `max_iter` and `random_state` are LinearSVC's."""

    def __init__(
        self, shortlist: int = 30, C: float = 1.0, tol: float = 1e-2, max_iter: int = 30, random_state: int = 0
    ):
        self.shortlist = shortlist
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: sp.csr_matrix, y: np.ndarray) -> "ShortlistSVM":
        self.classes_, codes = np.unique(y, return_inverse=True)
        if not X.has_canonical_format:
            # Sorted once here, not by LinearSVC's input check on every class's rows (21 s of a 60,000-product fit).
            X = X.copy()
            X.sum_duplicates()
        n, n_classes = X.shape[0], len(self.classes_)
        members = sp.csr_matrix((np.ones(n, dtype=np.float32), (codes, np.arange(n))), shape=(n_classes, n))
        units = unit_rows(X)
        self.centroids_ = transposed(unit_rows(members @ units))
        # (class, product) pairs, sorted by class: every product's shortlist and its own class, once each.
        pairs = np.unique(
            np.column_stack([self._shortlisted(units), codes]).astype(np.int64) * n + np.arange(n)[:, None]
        )
        pair_class, pair_row = pairs // n, pairs % n
        bounds = np.searchsorted(pair_class, np.arange(n_classes + 1))
        weights, self.intercept_ = [], np.ones(n_classes, dtype=np.float32)
        for code in range(n_classes):
            rows = pair_row[bounds[code] : bounds[code + 1]]
            is_class = codes[rows] == code
            if is_class.all():  # no other product comes near this class: it wins wherever it is shortlisted
                weights.append(sp.csr_matrix((1, X.shape[1]), dtype=np.float32))
                continue
            svm = LinearSVC(C=self.C, tol=self.tol, max_iter=self.max_iter, random_state=self.random_state)
            svm.fit(X[rows], is_class)
            weights.append(sp.csr_matrix(svm.coef_.astype(np.float32)))
            self.intercept_[code] = svm.intercept_[0]
        self.weights_ = sp.vstack(weights).T.tocsr()  # (terms, classes): a product's scores are one product
        return self

    def decision_function(self, X: sp.csr_matrix) -> np.ndarray:
        short = self._shortlisted(unit_rows(X))
        scores = np.full((X.shape[0], len(self.classes_)), np.nan, dtype=np.float32)
        for start in range(0, X.shape[0], KNN_CHUNK):
            block = slice(start, start + KNN_CHUNK)
            full = (X[block] @ self.weights_).toarray() + self.intercept_
            np.put_along_axis(scores[block], short[block], np.take_along_axis(full, short[block], axis=1), axis=1)
        return scores

    def _shortlisted(self, units: sp.csr_matrix) -> np.ndarray:
        """(n, m) codes of each unit row's m most similar class centroids, m = min(shortlist, classes)."""
        n_classes = self.centroids_.shape[1]
        m = min(self.shortlist, n_classes)
        out = np.empty((units.shape[0], m), dtype=np.int64)
        for start in range(0, units.shape[0], KNN_CHUNK):
            sims = (units[start : start + KNN_CHUNK] @ self.centroids_).toarray()
            out[start : start + len(sims)] = (
                np.argpartition(-sims, m - 1, axis=1)[:, :m] if m < n_classes else np.arange(n_classes)
            )
        return out
