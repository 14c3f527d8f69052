"""`TargetModel`: everything learned for one target, from feature blocks to a prediction.

Fitting: per-modality heads (linear and cosine kNN on each text field; the same on PCA-reduced image
embeddings) are scored out-of-fold on the training rows, then a LightGBM stacker learns from those scores plus
the metadata, early-stopped on a seeded stratified validation split. The stack is kept only if it beats every
single head on that validation split; otherwise the best head predicts alone, so fusing never makes things worse.
At predict time the heads refitted on all training rows score the new products. With `label_in_text`, a
`PrefixChooser` fitted on the validation rows may then replace the label by the first words of a text column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmgbm.config import ModelConfig
from mmgbm.dataset import Modalities
from mmgbm.folds import fold_ids, validation_mask
from mmgbm.heads import ImageReducer, KnnHead, LinearHead, MentionHead, apply_head, fit_full, out_of_fold
from mmgbm.label_in_text import PrefixChooser
from mmgbm.metadata import MetadataEncoder
from mmgbm.stacking import CandidateReranker, RegressionStacker, lightgbm_params

FUSED = "fused"
STACK_MARGIN_SE = 2.0  # about a 5% chance of keeping a stack that is really no better than the head
WORDS = ".words"


@dataclass
class Prediction:
    """Classification: `candidates` (n, k) class codes best first with `probabilities` (the model's ranking of
    its classes), and `labels` (n, k) the ranked label strings with `label_probabilities`: the same, except where a
    label copied from the text comes first (it may be no class). Regression: `values`."""

    candidates: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None
    labels: np.ndarray | None = None
    label_probabilities: np.ndarray | None = None


class TargetModel:
    # Artifacts saved before `label_in_text` existed load without a chooser.
    chooser_: PrefixChooser | None = None

    def __init__(self, task: str, settings: ModelConfig, categorical: list[str], numeric: list[str],
                 label_in_text: str | None = None):
        self.task = task
        self.settings = settings
        self.categorical = categorical
        self.numeric = numeric
        self.label_in_text = label_in_text

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    # ---- fitting ------------------------------------------------------------------------------------------
    def fit(self, data: Modalities, meta_frame: pd.DataFrame, y: np.ndarray) -> "TargetModel":
        s = self.settings
        if self.regression:
            target = np.asarray(y, dtype=np.float64)
            self.median_ = float(np.median(target))
        else:
            self.classes_, target = np.unique(np.asarray(y).astype(str), return_inverse=True)
            self.class_counts_ = np.bincount(target, minlength=len(self.classes_))
            self.log_prior_ = np.log(self.class_counts_ / self.class_counts_.sum()).astype(np.float32)
        self.encoder_ = MetadataEncoder(self.categorical, self.numeric, s.rare_category_min_count).fit(meta_frame)
        meta = self.encoder_.transform(meta_frame)
        self.valid_ = validation_mask(target, s.valid_fraction, s.seed, self.regression)
        folds = fold_ids(target, s.n_folds, s.seed, self.regression)

        blocks = self._blocks(data, fit=True)
        self.heads_ = {}
        oof = {}
        for block, (X, present) in blocks.items():
            for kind, head in self._new_heads(block, X.shape[1] if X.ndim == 2 else 0):
                name = f"{block}.{kind}"
                oof[name] = out_of_fold(head, X, target, folds, present)
                self.heads_[name] = fit_full(head, X, target, present)
        names = list(self.heads_)
        if self.regression:
            self.stacker_ = RegressionStacker(names, lightgbm_params(s, s.regression_objective), s.max_rounds,
                                              s.early_stopping_rounds)
            self.stacker_.fit([oof[n] for n in names], meta, self.categorical, target, self.valid_)
        else:
            self.stacker_ = CandidateReranker(names, s.candidates, lightgbm_params(s, "binary"), s.max_rounds,
                                              s.early_stopping_rounds)
            self.stacker_.fit([oof[n] for n in names], meta, self.categorical, target, self.valid_, self.log_prior_)
        self._choose(oof, meta, target)
        if self.label_in_text is not None:
            # The validation rows' predictions come from models never fitted on them: honest, like new products.
            v = self.valid_
            honest = self._predict_with(self.choice_, {n: x[v] for n, x in oof.items()}, meta[v])
            counts = dict(zip(self.classes_.tolist(), self.class_counts_.tolist()))
            self.chooser_ = PrefixChooser(self.label_in_text, counts, s.seed, margin_se=STACK_MARGIN_SE).fit(
                meta_frame[self.label_in_text].to_numpy()[v], honest.labels, honest.label_probabilities,
                self.classes_[target[v]])
        return self

    def _new_heads(self, block: str, n_features: int):
        s = self.settings
        n_classes = 0 if self.regression else len(self.classes_)
        if block.endswith(WORDS):
            yield "mention", MentionHead(self.classes_.tolist())
            return
        if self.regression or n_classes * n_features <= s.linear_max_weights:
            yield "linear", LinearHead(self.task, n_classes, s.linear_c, s.text_ridge_alpha, s.image_alpha, s.seed)
        yield "knn", KnnHead(self.task, n_classes, s.knn_neighbors)

    def _blocks(self, data: Modalities, fit: bool = False) -> dict[str, tuple[object, np.ndarray]]:
        blocks = {f"text.{name}": (X, data.text_mask(name)) for name, X in data.text.items()}
        if not self.regression:
            # Mention heads read the words themselves; a model trained with them needs them at predict time.
            for name, words in data.words.items():
                blocks[f"text.{name}{WORDS}"] = (words, np.ones(len(words), dtype=bool))
        if fit:
            self.reducers_ = {}
        for name, X in data.dense().items():
            present = ~np.isnan(X).any(axis=1)
            if fit:
                self.reducers_[name] = ImageReducer(self.settings.image_components, self.settings.seed)
                self.reducers_[name].fit(X[present])
            if name in self.reducers_:
                blocks[name] = (self.reducers_[name].transform(X), present)
        return blocks

    def _choose(self, oof: dict[str, np.ndarray], meta: pd.DataFrame, target: np.ndarray) -> None:
        """Validation score of the stack and of every head. The stack is kept only when it beats the best head
        by more than two standard errors of their paired difference: on ~1,000 validation products a gain of
        a handful is noise, and then the simpler head generalises at least as well. Also the best head per
        modality, for the modality-alone figures."""
        v = self.valid_
        per_row = {FUSED: self._per_row(self._predict_with(FUSED, {n: x[v] for n, x in oof.items()}, meta[v]),
                                        target[v])}
        per_row.update({n: self._per_row(self._head_predict(s[v]), target[v]) for n, s in oof.items()})
        self.validation_ = {n: float(np.mean(r)) for n, r in per_row.items()}
        best_head = max((n for n in per_row if n != FUSED), key=self.validation_.get)
        gain = per_row[FUSED] - per_row[best_head]
        margin = np.std(gain, ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
        self.choice_ = FUSED if gain.mean() > STACK_MARGIN_SE * margin else best_head
        # Modality-alone figures use the head that did best out-of-fold on all training rows.
        train_scores = {n: float(np.mean(self._per_row(self._head_predict(s), target))) for n, s in oof.items()}
        self.modality_heads_ = {}
        for name in sorted(train_scores, key=train_scores.get, reverse=True):
            self.modality_heads_.setdefault(modality_of(name), name)

    def _per_row(self, prediction: Prediction, target: np.ndarray) -> np.ndarray:
        """Higher is better, per product: 1/0 for right/wrong, or minus the absolute error."""
        if self.regression:
            return -np.abs(prediction.values - target)
        return (prediction.candidates[:, 0] == target).astype(np.float64)

    def chooser_summary(self) -> dict | None:
        """Validation figures of the label-in-text chooser, or None without one."""
        if self.chooser_ is None:
            return None
        return {"column": self.chooser_.column, "kept": self.chooser_.kept_, **self.chooser_.validation_}

    # ---- predicting ---------------------------------------------------------------------------------------
    def head_scores(self, data: Modalities) -> dict[str, np.ndarray]:
        blocks = self._blocks(data)
        scores = {}
        for name, head in self.heads_.items():
            block = blocks.get(name.rsplit(".", 1)[0])
            # A block the input cannot provide (no text columns in an --input table) is a missing modality.
            scores[name] = (apply_head(head, *block) if block is not None
                            else np.full((len(data.ids), head.n_outputs), np.nan, dtype=np.float32))
        return scores

    def predict(self, data: Modalities, meta_frame: pd.DataFrame, source: str | None = None) -> Prediction:
        """Fused prediction (or the head chosen instead); `source` names a modality to predict from it alone."""
        scores = self.head_scores(data)
        head = self.choice_ if source is None else self.modality_heads_.get(source, source)
        prediction = self._predict_with(head, scores, self.encoder_.transform(meta_frame) if head == FUSED else None)
        if source is None and self.chooser_ is not None:
            # A table without the text column simply has no prefixes to copy: the model's labels stand.
            column = self.chooser_.column
            texts = meta_frame[column].to_numpy() if column in meta_frame else np.full(len(meta_frame), None)
            prediction.labels, prediction.label_probabilities = self.chooser_.apply(
                texts, prediction.labels, prediction.label_probabilities)
        return prediction

    def _predict_with(self, head: str, scores: dict[str, np.ndarray], meta: pd.DataFrame | None) -> Prediction:
        if head == FUSED:
            return self._stack_predict([scores[n] for n in self.heads_], meta)
        return self._head_predict(scores[head])

    def _stack_predict(self, scores: list[np.ndarray], meta: pd.DataFrame) -> Prediction:
        if self.regression:
            return Prediction(values=self.stacker_.predict(scores, meta))
        return self._ranked(*self.stacker_.predict(scores, meta))

    def _ranked(self, cands: np.ndarray, probs: np.ndarray) -> Prediction:
        return Prediction(candidates=cands, probabilities=probs, labels=self.classes_[cands].astype(object),
                          label_probabilities=probs)

    def _head_predict(self, scores: np.ndarray) -> Prediction:
        """One head alone; products it cannot score get the training median or the class prior."""
        missing = np.isnan(scores).all(axis=1)
        if self.regression:
            return Prediction(values=np.where(missing, self.median_, np.nan_to_num(scores[:, 0])))
        logits = np.where(np.isnan(scores), -np.inf, scores).astype(np.float64)
        logits[missing] = self.log_prior_
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        k = min(self.settings.candidates, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return self._ranked(order, np.take_along_axis(probs, order, axis=1))

    @property
    def modalities(self) -> list[str]:
        return list(self.modality_heads_)


def modality_of(feature_or_head: str) -> str:
    """'text.title.linear.score' -> 'text'; 'image.knn' -> 'image'; 'meta.season' -> 'metadata'."""
    first = feature_or_head.split(".", 1)[0]
    return {"text": "text", "image": "image", "meta": "metadata"}.get(first, "candidate")
