"""Per-modality heads: small models on one feature block whose out-of-fold scores feed the LightGBM stacker.

LightGBM is poor at reading a 100,000-column sparse TF-IDF directly (slow, and it diverges on many classes);
a linear model or a cosine kNN on the same block is fast and strong. Each head turns its block into a few dense,
meaningful columns: one score per class for classification, one or a few predictions for regression.
Products without the modality get NaN rows, which LightGBM treats as missing.
Heads are scikit-learn estimators (parameters in the constructor, learned state in `_` attributes), so `clone`
handles them; `predict` gives their score columns, which a classifier keeps as each product's best classes
(`TopScores`).
"""

from __future__ import annotations

import re
import threading
import warnings
from contextlib import nullcontext

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from mmgbm.estimator.folds import bounded_rows, strata_for
from mmgbm.estimator.neighbours import NeighbourIndex
from mmgbm.estimator.row_view import RowView, take_rows
from mmgbm.estimator.shortlist import ShortlistSVM
from mmgbm.estimator.top_scores import ROW_BLOCK, TopScores

WORD = re.compile(r"\w+")
# Measured on 759 Flipkart categories: 30 coordinate-descent passes give the same accuracy as 1,000 in a tenth of
# the time; the few one-vs-rest problems that never converge (identical titles, different labels) cost the rest.
SVM_MAX_ITER = 30
SVM_TOL = 1e-2


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
        rows = np.flatnonzero(present[start:start + ROW_BLOCK])
        if len(rows):
            reducer.partial_fit(block[start + rows])
    return reducer


# liblinear (LinearSVC) draws its coordinate order from one process-wide generator (sklearn's newrand.h): two
# fits in threads of one process (a Dask worker with threads, joblib's threading backend) interleave its draws and
# each gets another model than its seed gives (0.0017 apart in a cluster test's out-of-fold scores, 5 of 40
# runs). One fit at a time per process; processes are unaffected.
LIBLINEAR = threading.Lock()
SCORE_STEP = 2.0 ** -12  # a power of two: grid points are exact in float32 for scores below 2048


class LinearHead(BaseEstimator):
    """Classification: a linear SVM on sparse text, ridge on dense image blocks; one score per class. Above
    2 x `shortlist` classes the SVM is a `ShortlistSVM` (each class learns from the products near it; the others
    unscored), one-vs-rest below. Regression: ridge, one prediction. Fitted on at most `max_rows` rows
    (`bounded_sample`): a one-vs-rest SVM costs rows x classes x iterations, 6.1x for 3x the rows at 750 classes
    (12,000 -> 36,000 products), while the kNN heads and the stacker keep reading every row."""

    def __init__(self, task: str = "multiclass", n_classes: int = 0, c: float = 1.0, sparse_alpha: float = 0.2,
                 dense_alpha: float = 10.0, max_rows: int = 50_000, shortlist: int = 30, seed: int = 0):
        self.task = task
        self.n_classes = n_classes
        self.shortlist = shortlist
        self.c = c
        self.sparse_alpha = sparse_alpha
        self.dense_alpha = dense_alpha
        self.max_rows = max_rows
        self.seed = seed

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
        with warnings.catch_warnings(), (LIBLINEAR if liblinear else nullcontext()):
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


class KnnHead(BaseEstimator):
    """Cosine nearest neighbours: per class the summed similarity of the k nearest training products; for
    regression the similarity-weighted mean target, the nearest product's target and its similarity.
    Cheap at any number of classes, and strong where catalogues hold near-duplicate products. Exact up to
    `exact_max_rows` training products, approximate above (see `neighbours`).

    With `projection_alpha` (classification), neighbours are searched in the space of a ridge classifier's class
    scores, learned on the same training rows (at most `projection_max_rows` of them): ImageNet embeddings spend
    most of their dimensions on what tells ImageNet's classes apart, and this keeps what tells the catalogue's
    apart. On the fashion photos it lifted image-only kNN from 79.8% to 84.7% (articleType) and from 45.6% to
    55.9% (baseColour)."""

    def __init__(self, task: str = "multiclass", n_classes: int = 0, n_neighbors: int = 20,
                 exact_max_rows: int = 20_000, projection_alpha: float | None = None,
                 projection_max_rows: int = 50_000, seed: int = 0):
        self.task = task
        self.n_classes = n_classes
        self.n_neighbors = n_neighbors
        self.exact_max_rows = exact_max_rows
        self.projection_alpha = projection_alpha
        self.projection_max_rows = projection_max_rows
        self.seed = seed

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
                *bounded_sample(X_learn, y_learn, self.projection_max_rows, False, self.seed))
        self.index_ = NeighbourIndex(self.exact_max_rows, seed=self.seed).fit(self._project(X))
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


# A dense block of at most this many columns (the photos' colour statistics, not an embedding) gets a BoostedHead.
BOOSTED_MAX_FEATURES = 256


class BoostedHead(BaseEstimator):
    """Boosted trees on a small dense block (a photo's colour statistics): one score per class, its log-probability.
    What names a colour is not linear in a histogram ("red" is a hue bin only with enough saturation and light),
    which ridge and cosine neighbours miss: on the fashion photos (20% held out, seed 0), baseColour from the
    colour statistics alone was 55.8% with ridge, 56.6% with an RBF kernel's ridge (Nystroem) and 59.8% with 60
    rounds of 15-leaf trees. One thread: multiclass trees on ~10,000 rows took 6.8 s on one core and 13 s on two.
    Fitted on at most `max_rows` rows (`bounded_sample`), as the linear heads are. The booster is kept as LightGBM's
    model text (what a model artifact can hold) and parsed once when used."""

    def __init__(self, n_classes: int = 0, rounds: int = 60, learning_rate: float = 0.2, num_leaves: int = 15,
                 max_rows: int = 50_000, seed: int = 0):
        self.n_classes = n_classes
        self.rounds = rounds
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_rows = max_rows
        self.seed = seed

    @property
    def n_outputs(self) -> int:
        return self.n_classes

    def fit(self, X, y: np.ndarray) -> "BoostedHead":
        X, y = bounded_sample(X, np.asarray(y), self.max_rows, False, self.seed)
        self.classes_ = np.unique(y)
        self.model_text_ = None
        if len(self.classes_) < 2:  # one class only: nothing to separate
            return self
        params = {"objective": "multiclass", "num_class": len(self.classes_), "learning_rate": self.learning_rate,
                  "num_leaves": self.num_leaves, "min_data_in_leaf": 20, "feature_fraction": 0.5, "lambda_l2": 1.0,
                  "max_bin": 63, "seed": self.seed, "deterministic": True, "force_row_wise": True,
                  "num_threads": 1, "verbose": -1}
        booster = lgb.train(params, lgb.Dataset(np.asarray(X, dtype=np.float32), np.searchsorted(self.classes_, y)),
                            num_boost_round=self.rounds)
        self.model_text_ = booster.model_to_string()
        return self

    def predict(self, X) -> np.ndarray:
        out = np.full((X.shape[0], self.n_classes), np.nan, dtype=np.float32)
        if self.model_text_ is None:
            out[:, self.classes_[0]] = 1.0
            return out
        if getattr(self, "_booster", None) is None:
            self._booster = lgb.Booster(model_str=self.model_text_)
        out[:, self.classes_] = np.log(np.clip(self._booster.predict(np.asarray(X, dtype=np.float32)), 1e-9, None))
        return out

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_booster"}  # saved as its text


class MentionHead(BaseEstimator):
    """Where the text names a class: for each class whose name occurs in the product's text as a run of words,
    the length of that run plus a bonus for appearing early (brands lead titles). Brand, category and colour
    names are usually written in the title itself, and a linear model or kNN over n-grams only sees that
    indirectly; this reads it directly, at any number of classes. Classes not mentioned stay unscored."""

    def __init__(self, class_names: tuple[str, ...] = (), max_words: int = 6):
        self.class_names = class_names
        self.max_words = max_words

    @property
    def n_outputs(self) -> int:
        return len(self.class_names)

    def fit(self, texts: np.ndarray, y: np.ndarray) -> "MentionHead":
        # Only classes present in these rows: out-of-fold scores must not know names the fold never saw.
        # Phrases are keyed by their words joined with spaces (words never contain one): plain data to store.
        self.phrases_: dict[str, list[int]] = {}
        for code in np.unique(y):
            words = mention_words(self.class_names[code])
            if 0 < len(words) <= self.max_words:
                self.phrases_.setdefault(" ".join(words), []).append(int(code))
        return self

    def predict(self, texts: np.ndarray) -> np.ndarray:
        out = np.full((len(texts), self.n_outputs), np.nan, dtype=np.float32)
        longest = max((p.count(" ") + 1 for p in self.phrases_), default=0)
        for row, text in enumerate(texts):
            words = mention_words(text)
            for start in range(len(words)):
                for length in range(1, min(longest, len(words) - start) + 1):
                    for code in self.phrases_.get(" ".join(words[start:start + length]), ()):
                        score = length + 1.0 / (1 + start)
                        if not out[row, code] >= score:
                            out[row, code] = score
        return out


def mention_words(text: str) -> list[str]:
    # Lower case, and a crude singular ("Necklaces" in a category, "Necklace" in a title).
    words = WORD.findall(str(text).lower())
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def bounded_sample(X, y: np.ndarray, max_rows: int, regression: bool, seed: int):
    """(X, y) on at most `max_rows` rows, stratified by class (or target quantile): see `folds.bounded_rows`."""
    if X.shape[0] <= max_rows:
        return X, y
    rows = bounded_rows(strata_for(y, regression), max_rows, seed)
    return X[rows], y[rows]


def out_of_fold(head, X, y: np.ndarray, folds: np.ndarray, present: np.ndarray, n_jobs: int | None = None,
                top_k: int | None = None, across=None):
    """Scores of every training row from a clone of `head` fitted on the other folds (unscored where absent), as
    `scored` gives them. The folds run as `n_jobs` joblib tasks: on local processes, or on a Dask cluster inside
    `joblib.parallel_config("dask")`. With `across`, a kNN head fitted on every row present, each row is scored by
    it from its neighbours outside its own fold instead (`KnnHead.searches_across_folds`)."""
    out = unscored(head, X.shape[0], top_k)
    rows = np.flatnonzero(present)
    fold_of = folds[rows]
    names = np.unique(fold_of)
    if len(names) < 2:  # the modality is in one fold only: nothing honest to score it with
        return out
    X, y = on_rows(X, rows), on_rows(y, rows)
    if across is not None:
        out[rows] = scored(across, X, top_k, (fold_of, fold_of))
        return out
    parts = Parallel(n_jobs=n_jobs)(
        delayed(_fold_scores)(clone(head), X, y, np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f), top_k)
        for f in names)
    for f, part in zip(names, parts):
        out[rows[fold_of == f]] = part
    return out


def _fold_scores(head, X, y: np.ndarray, train: np.ndarray, test: np.ndarray, top_k: int | None):
    return scored(head.fit(take_rows(X, train), y[train]), take_rows(X, test), top_k)


def fit_present(head, X, y: np.ndarray, present: np.ndarray):
    """A clone of `head` fitted on the rows that have the modality."""
    rows = np.flatnonzero(present)
    return clone(head).fit(on_rows(X, rows), on_rows(y, rows))


def fit_and_score(head, X, y: np.ndarray, folds: np.ndarray, present: np.ndarray, n_jobs: int | None = None,
                  top_k: int | None = None):
    """(`fit_present`, `out_of_fold`): a kNN head that searches across folds gets both from its one index, or,
    with a projection, from two (`halves_fit_and_score`)."""
    across = isinstance(head, KnnHead) and head.searches_across_folds(int(present.sum()))
    if across and head.projection_alpha is not None:
        return halves_fit_and_score(head, X, y, folds, present, n_jobs, top_k)
    fitted = fit_present(head, X, y, present)
    return fitted, out_of_fold(head, X, y, folds, present, n_jobs, top_k, across=fitted if across else None)


def halves_fit_and_score(head, X, y: np.ndarray, folds: np.ndarray, present: np.ndarray, n_jobs: int | None = None,
                         top_k: int | None = None):
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
        return fit_present(head, X, y, present), out_of_fold(head, X, y, folds, present, n_jobs, top_k)
    out = unscored(head, X.shape[0], top_k)
    X, y = on_rows(X, rows), on_rows(y, rows)
    parts = Parallel(n_jobs=n_jobs)(
        delayed(_half_scores)(clone(head), X, y, fold_of, np.flatnonzero(half == h), np.flatnonzero(half != h),
                              top_k, keep=h == 0)
        for h in (0, 1))
    for h, (_, part) in enumerate(parts):
        out[rows[half != h]] = part
    return parts[0][0], out


def _half_scores(head, X, y: np.ndarray, fold_of: np.ndarray, learn: np.ndarray, score: np.ndarray,
                 top_k: int | None, keep: bool):
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
