"""`MMGBMClassifier`: a product attribute with a fixed set of labels (category, colour, gender, brand).

Heads per text field: a linear SVM, a cosine kNN and a mention head (class names written in the text); per image
block: ridge and kNN, and boosted trees on a small one (colour statistics) where it tells the target best. The
stacker re-ranks each product's most promising candidate classes with one binary LightGBM, so thousands of classes
stay cheap. Probabilities are calibrated by one temperature fitted on every training product's out-of-fold
prediction. With `label_in_text`, a `PrefixChooser` fitted on those honest predictions may replace the label by the
first words of that metadata column (a brand leading a title), so labels never seen in training can be predicted.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from mmgbm.estimator.base import MMGBMBase, Prediction, check_products
from mmgbm.estimator.calibration import apply_temperature, fit_temperature
from mmgbm.estimator.label_in_text import PrefixChooser
from mmgbm.estimator.label_names import LabelNames
from mmgbm.estimator.products import ProductMatrix
from mmgbm.estimator.selection import FUSED
from mmgbm.estimator.stacking import CandidateReranker
from mmgbm.estimator.top_scores import ROW_BLOCK, TopScores

CHOOSER_STAGE = "label-in-text chooser"


class MMGBMClassifier(ClassifierMixin, MMGBMBase):
    """Multimodal classifier over a `ProductMatrix`; see the module docstring. Parameters: metadata roles
    (`categorical_columns`, `numeric_columns`, `rare_category_min_count`), the LightGBM stacker (`learning_rate`,
    `num_leaves`, `min_data_in_leaf`, `max_rounds`, `early_stopping_rounds` on the folds' mean loss,
    `lightgbm_params` passed through; cross-fitted over `stack_folds` folds on at most `stack_max_products`),
    the heads (`n_folds`, `knn_neighbors`, exact search up to `knn_exact_max_rows` training products, wide dense rows in
    `knn_dense_dims` SVD directions, `linear_c`,
    `linear_max_weights` (dense weights; a text SVM over 2 x `linear_shortlist` classes is a `ShortlistSVM`, whose
    weights are sparse), `linear_max_products` the linear and boosted heads and projections learn from,
    `image_components`, `image_alpha`, `image_knn_projection`: a kNN head in the space of a ridge classifier's
    scores on each image block besides the plain one; `boosted_max_classes`: see `heads.boosted`; `head_top_k`
    classes each head keeps per product, at least `candidates`), `candidates` per product re-ranked,
    `selection_margin_se` and `selection_min_gain` of the stack-vs-head gate, `label_in_text` (a column of
    `X.meta`) with `label_names` (a `LabelNames` its prefixes are read through: `y` is expected in its canonical
    names), `seed`, `num_threads` of LightGBM (0 = all cores) and `n_jobs` for the heads' folds (joblib: None =
    one at a time, -1 = all cores, or a Dask cluster's workers under `joblib.parallel_config("dask")`)."""

    def __init__(
        self,
        *,
        categorical_columns=(),
        numeric_columns=(),
        rare_category_min_count: int = 5,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 20,
        max_rounds: int = 2000,
        early_stopping_rounds: int = 50,
        lightgbm_params: dict | None = None,
        n_folds: int = 5,
        stack_folds: int = 3,
        stack_max_products: int = 200_000,
        knn_neighbors: int = 20,
        knn_exact_max_rows: int = 20_000,
        knn_dense_dims: int = 256,
        linear_c: float = 1.0,
        linear_max_weights: int = 100_000_000,
        linear_max_products: int = 50_000,
        linear_shortlist: int = 30,
        image_components: int = 0,
        image_alpha: float = 10.0,
        image_knn_projection: bool = True,
        boosted_max_classes: int = 64,
        head_top_k: int = 32,
        candidates: int = 20,
        selection_margin_se: float = 2.0,
        selection_min_gain: float = 0.05,
        label_in_text: str | None = None,
        label_names: LabelNames | None = None,
        seed: int = 42,
        num_threads: int = 0,
        n_jobs: int | None = None,
    ):
        self.categorical_columns = categorical_columns
        self.numeric_columns = numeric_columns
        self.rare_category_min_count = rare_category_min_count
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds
        self.lightgbm_params = lightgbm_params
        self.n_folds = n_folds
        self.stack_folds = stack_folds
        self.stack_max_products = stack_max_products
        self.knn_neighbors = knn_neighbors
        self.knn_exact_max_rows = knn_exact_max_rows
        self.knn_dense_dims = knn_dense_dims
        self.linear_c = linear_c
        self.linear_max_weights = linear_max_weights
        self.linear_max_products = linear_max_products
        self.linear_shortlist = linear_shortlist
        self.image_components = image_components
        self.image_alpha = image_alpha
        self.image_knn_projection = image_knn_projection
        self.boosted_max_classes = boosted_max_classes
        self.head_top_k = head_top_k
        self.candidates = candidates
        self.selection_margin_se = selection_margin_se
        self.selection_min_gain = selection_min_gain
        self.label_in_text = label_in_text
        self.label_names = label_names
        self.seed = seed
        self.num_threads = num_threads
        self.n_jobs = n_jobs

    # ---- public API ---------------------------------------------------------------------------------------
    def predict(self, X: ProductMatrix) -> np.ndarray:
        """The label of each product (with `label_in_text`, possibly a label copied from the text)."""
        return self.predict_top_k(X, 1)[0][:, 0]

    def predict_proba(self, X: ProductMatrix) -> np.ndarray:
        """(n, len(classes_)) calibrated probabilities; classes outside a product's candidates get 0."""
        prediction = self._calibrated(self._prediction(X))
        return self._dense(prediction.candidates, prediction.probabilities)

    @property
    def oof_proba_(self) -> np.ndarray:
        """(n_train, len(classes_)) out-of-fold calibrated probabilities of the training products, in fit order
        (ids in `train_ids_`): from models that never saw the product, like sklearn's `oob_decision_function_`."""
        check_is_fitted(self, "oof_candidates_")
        return self._dense(self.oof_candidates_, self.oof_probabilities_)

    @property
    def oof_proba_by_modality_(self) -> dict[str, np.ndarray]:
        """Per modality, its best head's out-of-fold probabilities of the training products."""
        check_is_fitted(self, "oof_by_modality_")
        return {m: self._dense(c, p) for m, (c, p) in self.oof_by_modality_.items()}

    def predict_top_k(self, X: ProductMatrix, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities), each (n, k'), best first, k' = min(k, candidates): the first label is always
        `predict`'s, also when it was copied from the text."""
        if k < 1:
            raise ValueError(f"k must be at least 1 (got {k})")
        prediction = self._labelled(X)
        return prediction.labels[:, :k], prediction.label_probabilities[:, :k]

    def predict_alone(self, X: ProductMatrix, modality: str) -> np.ndarray:
        """Labels from one modality's best head alone ("text", "image"): what fusing is compared with."""
        return self._prediction(X, modality).labels[:, 0]

    def predict_each(self, X: ProductMatrix) -> dict[str, np.ndarray]:
        """`predict`'s labels (key "fused") with their probability ("probability"), and each modality's
        `predict_alone`, from one scoring of the heads: what an evaluation compares."""
        scores = self.head_scores(check_products(X))
        labelled = self._labelled(X, scores)
        out = {FUSED: labelled.labels[:, 0], "probability": labelled.label_probabilities[:, 0]}
        out.update({m: self._prediction(X, m, scores).labels[:, 0] for m in self.modalities_})
        return out

    def chooser_summary(self) -> dict | None:
        """Validation figures of the label-in-text chooser, or None without one."""
        check_is_fitted(self, "choice_")
        if self.chooser_ is None:
            return None
        return {"column": self.chooser_.column, "kept": self.chooser_.kept_, **self.chooser_.validation_}

    def _dense(self, candidates: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        full = np.zeros((len(candidates), len(self.classes_)))
        np.put_along_axis(full, candidates, probabilities, axis=1)
        return full

    def _calibrated(self, prediction: Prediction) -> Prediction:
        prediction.probabilities = apply_temperature(prediction.probabilities, self.temperature_)
        prediction.label_probabilities = prediction.probabilities
        return prediction

    def _labelled(self, X: ProductMatrix, scores: dict | None = None) -> Prediction:
        prediction = self._calibrated(self._prediction(X, scores=scores))
        if self.chooser_ is not None:
            # A table without the text column simply has no prefixes to copy: the model's labels stand.
            column = self.chooser_.column
            texts = X.meta[column].to_numpy() if column in X.meta else np.full(len(X), None)
            prediction.labels, prediction.label_probabilities = self.chooser_.apply(
                texts, prediction.labels, prediction.label_probabilities
            )
        return prediction

    # ---- what the base class asks of a task ---------------------------------------------------------------
    @property
    def _top_k(self) -> int:
        return self.head_top_k

    def check_params(self) -> None:
        if self.head_top_k < self.candidates:
            raise ValueError(
                f"head_top_k ({self.head_top_k}) must be at least candidates ({self.candidates}): "
                "the stacker's candidates come from the heads' best classes"
            )

    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        if pd.isna(y).any():
            raise ValueError("y has missing labels; drop those products or fill them in")
        self.classes_, target = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has a single class ({self.classes_[0]!r}); a classifier needs at least two")
        self.class_counts_ = np.bincount(target, minlength=len(self.classes_))
        self.log_prior_ = np.log(self.class_counts_ / self.class_counts_.sum()).astype(np.float32)
        if self.label_in_text is not None and not np.issubdtype(self.classes_.dtype, np.str_):
            self.classes_ = self.classes_.astype(str)  # labels copied from text are strings; so must classes be
        return target

    def _mention_names(self) -> tuple[str, ...]:
        """What the mention heads look for in the text, per class: its name."""
        return tuple(str(c) for c in self.classes_)

    def _fit_stacker(
        self, scores: list[np.ndarray], meta, target: np.ndarray, folds: np.ndarray, progress: Callable
    ) -> CandidateReranker:
        return CandidateReranker(
            list(self.heads_),
            self.candidates,
            self._lightgbm_params("binary"),
            self.max_rounds,
            self.early_stopping_rounds,
        ).fit(scores, meta, list(self.categorical_columns), target, folds, self.log_prior_, progress)

    def _stack_oof(self) -> Prediction:
        return self._ranked(*self.stacker_.oof_)

    def _fit_after_selection(
        self, X: ProductMatrix, honest: Prediction, oof: dict, target: np.ndarray, progress: Callable
    ) -> None:
        """Calibrate on the honest predictions, keep them (out-of-fold probabilities, for audits), then fit the
        label-in-text chooser on them: they come from models never fitted on their product, like new products."""
        self.temperature_ = fit_temperature(honest.probabilities, honest.candidates, target)
        honest = self._calibrated(honest)
        # Strings, not Python objects: an artifact stores an object array as one node per id, and loading the
        # 9,590 of fashion's was a third of loading its model.
        self.train_ids_ = X.ids.astype(str)
        self.oof_candidates_, self.oof_probabilities_ = honest.candidates, honest.probabilities
        self.oof_by_modality_ = {}
        for modality, head in self.modality_heads_.items():
            alone = self._head_predict(oof[head])
            self.oof_by_modality_[modality] = (alone.candidates, alone.probabilities)
        self.chooser_ = None
        if self.label_in_text is None:
            return
        if self.label_in_text not in X.meta:
            raise ValueError(f"no column {self.label_in_text!r} in X.meta (label_in_text)")
        counts = dict(zip(self.classes_.tolist(), self.class_counts_.tolist()))
        progress(CHOOSER_STAGE, 0, 1)
        self.chooser_ = PrefixChooser(
            self.label_in_text, counts, self.seed, margin_se=self.selection_margin_se, names=self.label_names
        ).fit(X.meta[self.label_in_text].to_numpy(), honest.labels, honest.label_probabilities, self.classes_[target])
        progress(CHOOSER_STAGE, 1, 1)

    def _stack_predict(self, scores: list[np.ndarray], meta) -> Prediction:
        return self._ranked(*self.stacker_.predict(scores, meta))

    def _head_predict(self, scores: TopScores) -> Prediction:
        """One head alone: a softmax over the classes it kept (the calibration renormalises over the candidates
        anyway); products it cannot score get the class prior."""
        k = min(self.candidates, scores.classes.shape[1])
        logits = scores.scores[:, :k].astype(np.float64)
        probs = np.exp(logits - logits[:, :1])
        probs[np.isnan(probs)] = 0.0  # classes past the last one scored
        probs /= np.clip(probs.sum(axis=1, keepdims=True), 1e-300, None)
        cands = scores.classes[:, :k].astype(np.intp)
        missing = scores.absent
        by_prior = np.argsort(-self.log_prior_, kind="stable")
        cands[missing], probs[missing] = by_prior[:k], np.exp(self.log_prior_[by_prior[:k]])
        short = np.flatnonzero((cands < 0).any(axis=1))
        if len(short):  # fewer than k classes scored: the rest, with no probability, in prior order
            cands[short] = _padded(cands[short], by_prior)
        return self._ranked(cands, probs)

    def _ranked(self, cands: np.ndarray, probs: np.ndarray) -> Prediction:
        return Prediction(
            candidates=cands, probabilities=probs, labels=self.classes_[cands].astype(object), label_probabilities=probs
        )

    @staticmethod
    def _per_row(prediction: Prediction, target: np.ndarray) -> np.ndarray:
        return (prediction.candidates[:, 0] == target).astype(np.float64)


def _padded(cands: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows of distinct class codes whose -1 slots are filled, in turn, by the first classes of `order` the row does
    not hold yet; ROW_BLOCK rows at a time. A row holds at most k classes, so the first 2k of `order` suffice."""
    out = cands.copy()
    pool = order[: 2 * cands.shape[1]]
    for start in range(0, len(out), ROW_BLOCK):
        block = out[start : start + ROW_BLOCK]
        free = ~(pool[None, :, None] == block[:, None, :]).any(axis=2)
        fill = pool[np.argsort(~free, axis=1, kind="stable")]  # per row its free classes first, in `order`
        holes = block < 0
        nth_hole = np.where(holes, np.cumsum(holes, axis=1) - 1, 0)
        block[holes] = np.take_along_axis(fill, nth_hole, axis=1)[holes]
    return out
