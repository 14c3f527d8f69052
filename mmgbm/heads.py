"""Per-modality heads: small models on one feature block whose out-of-fold scores feed the LightGBM stacker.

LightGBM is poor at reading a 100,000-column sparse TF-IDF directly (slow, and it diverges on many classes);
a linear model or a cosine kNN on the same block is fast and strong. Each head turns its block into a few dense,
meaningful columns: one score per class for classification, one or a few predictions for regression.
Products without the modality get NaN rows, which LightGBM treats as missing.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge, RidgeClassifier
from sklearn.preprocessing import StandardScaler, normalize
from sklearn.svm import LinearSVC

KNN_CHUNK = 2048
WORD = re.compile(r"\w+")
# Measured on 759 Flipkart categories: 30 coordinate-descent passes give the same accuracy as 1,000 in a tenth of
# the time; the few one-vs-rest problems that never converge (identical titles, different labels) cost the rest.
SVM_MAX_ITER = 30
SVM_TOL = 1e-2


class ImageReducer:
    """Standardise, then optionally PCA to `n_components` (0 keeps every dimension)."""

    def __init__(self, n_components: int = 0, seed: int = 0):
        self.n_components = n_components
        self.seed = seed

    def fit(self, X: np.ndarray) -> "ImageReducer":
        self.scaler_ = StandardScaler().fit(X)
        n = min(self.n_components, X.shape[0] - 1, X.shape[1])
        self.pca_ = PCA(n_components=n, random_state=self.seed).fit(self.scaler_.transform(X)) if n > 0 else None
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        present = ~np.isnan(X).any(axis=1)
        dim = self.pca_.n_components_ if self.pca_ is not None else X.shape[1]
        out = np.full((X.shape[0], dim), np.nan, dtype=np.float32)
        if present.any():
            reduced = self.scaler_.transform(X[present])
            out[present] = self.pca_.transform(reduced) if self.pca_ is not None else reduced
        return out


class LinearHead:
    """Sparse text: linear SVM scores (ridge for regression). Dense image embeddings: ridge,
    whose closed form takes a second where an SVM or logistic regression takes minutes on 1,280 dimensions,
    for a point or two less accuracy that the stacker recovers. Classes absent from a fold get NaN scores."""

    def __init__(self, task: str, n_classes: int = 0, c: float = 0.5, sparse_alpha: float = 0.2,
                 dense_alpha: float = 10.0, seed: int = 0):
        self.task = task
        self.n_classes = n_classes
        self.c = c
        self.sparse_alpha = sparse_alpha
        self.dense_alpha = dense_alpha
        self.seed = seed

    @property
    def n_outputs(self) -> int:
        return 1 if self.task == "regression" else self.n_classes

    def fit(self, X, y: np.ndarray) -> "LinearHead":
        alpha = self.sparse_alpha if sp.issparse(X) else self.dense_alpha
        if self.task == "regression":
            self.model_ = Ridge(alpha=alpha)
        elif len(np.unique(y)) == 1:
            self.model_ = None  # one class only: nothing to separate
            self.only_class_ = int(y[0])
            return self
        elif sp.issparse(X):
            self.model_ = LinearSVC(C=self.c, tol=SVM_TOL, max_iter=SVM_MAX_ITER, random_state=self.seed)
        else:
            self.model_ = RidgeClassifier(alpha=alpha)
        with warnings.catch_warnings():
            # The default iteration cap is plenty for stacking features; full convergence buys nothing here.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_.fit(X, y)
        return self

    def transform(self, X) -> np.ndarray:
        if self.task == "regression":
            return self.model_.predict(X).astype(np.float32)[:, None]
        out = np.full((X.shape[0], self.n_classes), np.nan, dtype=np.float32)
        if self.model_ is None:
            out[:, self.only_class_] = 1.0
            return out
        scores = self.model_.decision_function(X)
        if scores.ndim == 1:  # two classes: sklearn returns the score of the second one only
            scores = np.column_stack([-scores, scores])
        out[:, self.model_.classes_] = scores
        return out


class KnnHead:
    """Cosine nearest neighbours: per class the summed similarity of the k nearest training products; for
    regression the similarity-weighted mean target, the nearest product's target and its similarity.
    Cheap at any number of classes, and strong where catalogues hold near-duplicate products."""

    def __init__(self, task: str, n_classes: int = 0, n_neighbors: int = 20):
        self.task = task
        self.n_classes = n_classes
        self.n_neighbors = n_neighbors

    @property
    def n_outputs(self) -> int:
        return 3 if self.task == "regression" else self.n_classes

    def fit(self, X, y: np.ndarray) -> "KnnHead":
        self.X_ = _unit_rows(X)
        self.y_ = np.asarray(y)
        return self

    def transform(self, X) -> np.ndarray:
        Q = _unit_rows(X)
        k = min(self.n_neighbors, self.X_.shape[0])
        out = np.zeros((Q.shape[0], self.n_outputs), dtype=np.float32)
        for start in range(0, Q.shape[0], KNN_CHUNK):
            sims = Q[start:start + KNN_CHUNK] @ self.X_.T
            sims = sims.toarray() if sp.issparse(sims) else np.asarray(sims)
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top_sims = np.clip(np.take_along_axis(sims, top, axis=1), 0, None).astype(np.float32)
            rows = np.arange(start, start + len(top))
            if self.task == "regression":
                order = np.argmax(top_sims, axis=1)
                weights = top_sims + 1e-6
                targets = self.y_[top]
                out[rows, 0] = (weights * targets).sum(axis=1) / weights.sum(axis=1)
                out[rows, 1] = targets[np.arange(len(top)), order]
                out[rows, 2] = top_sims[np.arange(len(top)), order]
            else:
                np.add.at(out, (np.repeat(rows, k), self.y_[top].ravel()), top_sims.ravel())
        if self.task != "regression":
            # No neighbour of a class is no evidence for it: unscored, so it ranks below every scored class.
            out[out == 0] = np.nan
        return out


class MentionHead:
    """Where the text names a class: for each class whose name occurs in the product's text as a run of words,
    the length of that run plus a bonus for appearing early (brands lead titles). Brand, category and colour
    names are usually written in the title itself, and a linear model or kNN over n-grams only sees that
    indirectly; this reads it directly, at any number of classes. Classes not mentioned stay unscored."""

    def __init__(self, class_names: list[str], max_words: int = 6):
        self.class_names = class_names
        self.max_words = max_words

    @property
    def n_outputs(self) -> int:
        return len(self.class_names)

    def fit(self, texts: np.ndarray, y: np.ndarray) -> "MentionHead":
        # Only classes present in these rows: out-of-fold scores must not know names the fold never saw.
        self.phrases_: dict[tuple[str, ...], list[int]] = {}
        for code in np.unique(y):
            words = tuple(mention_words(self.class_names[code]))
            if 0 < len(words) <= self.max_words:
                self.phrases_.setdefault(words, []).append(int(code))
        return self

    def transform(self, texts: np.ndarray) -> np.ndarray:
        out = np.full((len(texts), self.n_outputs), np.nan, dtype=np.float32)
        longest = max((len(p) for p in self.phrases_), default=0)
        for row, text in enumerate(texts):
            words = mention_words(text)
            for start in range(len(words)):
                for length in range(1, min(longest, len(words) - start) + 1):
                    for code in self.phrases_.get(tuple(words[start:start + length]), ()):
                        score = length + 1.0 / (1 + start)
                        if not out[row, code] >= score:
                            out[row, code] = score
        return out


def mention_words(text: str) -> list[str]:
    # Lower case, and a crude singular ("Necklaces" in a category, "Necklace" in a title).
    words = WORD.findall(str(text).lower())
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def _unit_rows(X):
    if sp.issparse(X):
        return normalize(sp.csr_matrix(X, dtype=np.float32))
    return normalize(np.asarray(X, dtype=np.float32))


def out_of_fold(head, X, y: np.ndarray, folds: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Scores of every training row from a copy of `head` fitted on the other folds; NaN where absent."""
    out = np.full((X.shape[0], head.n_outputs), np.nan, dtype=np.float32)
    for fold in np.unique(folds):
        fit_rows = np.flatnonzero((folds != fold) & present)
        score_rows = np.flatnonzero((folds == fold) & present)
        if len(fit_rows) and len(score_rows):
            out[score_rows] = clone_head(head).fit(X[fit_rows], y[fit_rows]).transform(X[score_rows])
    return out


def fit_full(head, X, y: np.ndarray, present: np.ndarray):
    return head.fit(X[np.flatnonzero(present)], y[present])


def apply_head(head, X, present: np.ndarray) -> np.ndarray:
    out = np.full((X.shape[0], head.n_outputs), np.nan, dtype=np.float32)
    rows = np.flatnonzero(present)
    if len(rows):
        out[rows] = head.transform(X[rows])
    return out


def clone_head(head):
    return type(head)(**{k: v for k, v in vars(head).items() if not k.endswith("_")})
