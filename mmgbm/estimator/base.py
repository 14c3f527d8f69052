"""What the classifier and the regressor share: heads per modality, out-of-fold scores, the stacker and the gate.

Fitting: per-modality heads (on each text field; on each dense image block after standardising) are scored
out-of-fold on the training rows (seeded stratified folds), then a LightGBM stacker learns from those scores plus
the metadata, cross-fitted over the same folds, so every training product has an honest prediction from the stack
and from every head. The stack is kept only if it clearly beats every single head on all those products
(`selection.choose_predictor`); otherwise the best head predicts alone, so fusing never makes things worse. At
predict time the heads refitted on all training rows score the products; a product the chosen head cannot score
(its modality is missing) is predicted by the best head that can.
Subclasses say what differs by task: target encoding, which stacker, and how a head alone predicts; the heads
come from the registry (mmgbm.estimator.heads), each kind building itself for the task and block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from mmgbm.estimator.folds import cap_rows, fold_ids
from mmgbm.estimator.dense_blocks import dense_reducer, fit_reducer
from mmgbm.estimator.heads import HEAD_KINDS, WORDS
from mmgbm.estimator.out_of_fold import apply_head, fit_and_score, silent, unscored
from mmgbm.estimator.metadata import MetadataEncoder
from mmgbm.estimator.products import ProductMatrix
from mmgbm.estimator.row_view import RowView
from mmgbm.estimator.selection import FUSED, choose_predictor
from mmgbm.estimator.top_scores import TopScores


@dataclass
class Prediction:
    """Classification: `candidates` (n, k) class codes best first with `probabilities` (the model's ranking of
    its classes), and `labels` (n, k) the ranked labels with `label_probabilities`: the same, except where a
    label copied from the text comes first (it may be no class). Regression: `values` on the model's scale."""

    candidates: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None
    labels: np.ndarray | None = None
    label_probabilities: np.ndarray | None = None


class MMGBMBase(BaseEstimator):
    """Not for direct use: `MMGBMClassifier` and `MMGBMRegressor` hold the parameters."""

    regression = False
    _top_k: int | None = None  # classes a head keeps per product (`TopScores`); None: its dense outputs

    # ---- fitting ------------------------------------------------------------------------------------------
    def check_params(self) -> None:
        """ValueError for parameters that contradict each other; `fit` calls it first."""

    def fit(self, X: ProductMatrix, y, progress: Callable[[str, int, int], None] = silent) -> "MMGBMBase":
        """Learn from the products `X` and their targets `y`. `progress(stage, done, total)` is told, in this
        process, each stage of the fit as it goes: every head's folds scored ("head text.title.linear folds", done
        of total), the stacker's boosting rounds, and what the task adds (the label-in-text chooser). It is an
        argument of `fit`, not a parameter of the estimator: it concerns one run, so it is neither cloned nor saved
        with the model."""
        self.check_params()
        X = check_products(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"y has shape {y.shape}; expected one target per product ({len(X)})")
        if len(X) < 2 * self.n_folds:
            raise ValueError(
                f"{len(X)} products cannot be split into {self.n_folds} folds; need at least "
                f"{2 * self.n_folds} (or lower n_folds)"
            )
        target = self._encode_target(y)
        self.metadata_ = MetadataEncoder(
            tuple(self.categorical_columns), tuple(self.numeric_columns), self.rare_category_min_count
        ).fit(X.meta)
        meta = self.metadata_.transform(X.meta)
        folds = fold_ids(target, self.n_folds, self.seed, self.regression)

        self.reducers_ = {}
        for name, block in X.dense.items():
            present = X.dense_present(name)
            if present.any():
                reducer = dense_reducer(self.image_components, int(present.sum()), block.shape[1], self.seed)
                self.reducers_[name] = fit_reducer(reducer, block, present)
        self.heads_ = {}
        oof = {}
        blocks = self._blocks(X)
        for block, (B, _) in blocks.items():
            for kind in HEAD_KINDS:
                head = None if kind.after_others else kind.build(self, block, B.shape[1] if B.ndim == 2 else 0)
                if head is not None:
                    self._fit_head(blocks, block, kind.name, head, target, folds, oof, progress)
        # Heads worth their cost only where the others' out-of-fold scores show what their block tells the target.
        for kind in HEAD_KINDS:
            for block, head in kind.build(self, blocks, oof, target) if kind.after_others else ():
                self._fit_head(blocks, block, kind.name, head, target, folds, oof, progress)
        if not self.heads_:
            raise ValueError("no feature block to learn from: give the products text or dense (image) features")
        # The stacker's own folds: fewer than the heads' (its LightGBM fits are the costly part of training) and
        # drawn independently of them; a few dozen features need no more than `stack_max_products` to learn from.
        stack_folds = cap_rows(
            fold_ids(target, self.stack_folds, self.seed + 1, self.regression), self.stack_max_products, self.seed
        )
        self.stacker_ = self._fit_stacker([oof[n] for n in self.heads_], meta, target, stack_folds, progress)
        honest = self._select(oof, target)
        self._fit_after_selection(X, honest, oof, target, progress)
        return self

    def _fit_head(
        self,
        blocks: dict,
        block: str,
        kind: str,
        head,
        target: np.ndarray,
        folds: np.ndarray,
        oof: dict,
        progress: Callable[[str, int, int], None],
    ) -> None:
        B, present = blocks[block]
        name = f"{block}.{kind}"
        self.heads_[name], oof[name] = fit_and_score(
            head, B, target, folds, present, self.n_jobs, self._top_k, folds_told(progress, f"head {name}")
        )

    def _head_per_row(self, scores, target: np.ndarray) -> np.ndarray:
        """One head's out-of-fold score of each training product, as the gate compares them."""
        return self._per_row(self._head_predict(scores), target)

    def _blocks(self, X: ProductMatrix) -> dict[str, tuple[object, np.ndarray]]:
        """Block name -> (features, which products have them); dense blocks standardised by the fitted reducers."""
        blocks = {f"text.{name}": (matrix, X.text_present(name)) for name, matrix in X.text.items()}
        if not self.regression:
            # Mention heads read the words themselves.
            for name, words in X.words.items():
                blocks[f"text.{name}{WORDS}"] = (words, np.ones(len(words), dtype=bool))
        for name, block in X.dense.items():
            if name in self.reducers_:
                # Standardised as the heads read it: a copy of a million photos' embeddings is 4.8 GB.
                reducer = self.reducers_[name]
                view = RowView(block, transform=reducer.transform, width=len(reducer.get_feature_names_out()))
                blocks[name] = (view, X.dense_present(name))
        return blocks

    def _lightgbm_params(self, objective: str) -> dict:
        params = {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": 0.9,
            "cat_smooth": 10,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbose": -1,
        }
        params.update(self.lightgbm_params or {})
        return params

    def _select(self, oof: dict[str, np.ndarray], target: np.ndarray) -> Prediction:
        """Out-of-fold score of the stack and of every head on every training product, and the gate's choice;
        heads ranked by that score give each modality's best head and the fallback order. Returns the chosen
        predictor's honest (out-of-fold) prediction of every training product."""
        # Each head's prediction is scored and dropped (nine at once were 2.3 GB at 800,000 products); the chosen
        # one is made again.
        per_row = {FUSED: self._per_row(self._stack_oof(), target)}
        per_row.update({n: self._head_per_row(s, target) for n, s in oof.items()})
        self.validation_ = {n: float(np.mean(r)) for n, r in per_row.items()}
        # Its noise, which a gate comparing this model with another needs (mmgbm.model_versions).
        self.validation_se_ = {n: float(np.std(r) / np.sqrt(len(r))) for n, r in per_row.items()}
        self.choice_ = choose_predictor(
            per_row, self.selection_margin_se, self.selection_min_gain, perfect=0.0 if self.regression else 1.0
        )
        self.head_order_ = sorted(oof, key=self.validation_.get, reverse=True)
        self.modality_heads_ = {}
        for name in self.head_order_:
            self.modality_heads_.setdefault(modality_of(name), name)
        if self.choice_ == FUSED:
            return self._stack_oof()
        return self._with_fallback(self.choice_, oof, self._head_predict(oof[self.choice_]))

    def _fit_after_selection(
        self,
        X: ProductMatrix,
        honest: Prediction,
        oof: dict,
        target: np.ndarray,
        progress: Callable[[str, int, int], None],
    ) -> None:
        """Hook for what learns from the chosen predictor's honest predictions of the training products."""

    # ---- predicting ---------------------------------------------------------------------------------------
    @property
    def modalities_(self) -> list[str]:
        """Modalities the model can predict from alone ("text", "image")."""
        check_is_fitted(self, "modality_heads_")
        return list(self.modality_heads_)

    def head_scores(self, X: ProductMatrix, names: list[str] | None = None) -> dict[str, np.ndarray | TopScores]:
        """Head name -> its scores of the products: each product's best classes (classification) or its outputs;
        of the heads `names`, or all of them."""
        blocks = self._blocks(X)
        scores = {}
        for name in self.heads_ if names is None else names:
            head = self.heads_[name]
            block = blocks.get(name.rsplit(".", 1)[0])
            # A block the input cannot provide (no text columns in an --input table) is a missing modality.
            scores[name] = (
                apply_head(head, *block, self._top_k) if block is not None else unscored(head, len(X), self._top_k)
            )
        return scores

    def _prediction(
        self, X: ProductMatrix, modality: str | None = None, scores: dict[str, np.ndarray | TopScores] | None = None
    ) -> Prediction:
        """The chosen predictor (stack or head), or with `modality` the best head of that modality alone; from
        `scores` where the heads' scores of X are at hand (`head_scores`), else scoring only the heads it reads."""
        check_is_fitted(self, "choice_")
        X = check_products(X)
        if modality is not None and modality not in self.modality_heads_:
            raise ValueError(f"unknown modality {modality!r}; the model has: {', '.join(self.modality_heads_)}")
        if modality is not None:  # that modality's evidence only: a product without it gets the prior
            head = self.modality_heads_[modality]
            return self._head_predict((scores or self.head_scores(X, [head]))[head])
        scores = scores or self.head_scores(X)
        if self.choice_ == FUSED:
            return self._stack_predict([scores[n] for n in self.heads_], self.metadata_.transform(X.meta))
        return self._with_fallback(self.choice_, scores, self._head_predict(scores[self.choice_]))

    def _with_fallback(self, head: str, scores: dict[str, np.ndarray], prediction: Prediction) -> Prediction:
        """Products the head cannot score (its modality is missing) take the best head that can score them, so a
        photo without text is predicted from the photo, never from the prior while any modality is there."""
        missing = unscorable(scores[head])
        for other in self.head_order_:
            rows = np.flatnonzero(missing & ~unscorable(scores[other]))
            if len(rows):
                filler = self._head_predict(scores[other][rows])
                for name, values in vars(filler).items():
                    if values is not None:
                        getattr(prediction, name)[rows] = values
                missing[rows] = False
        return prediction

    def unseen_levels(self, X: ProductMatrix) -> dict[str, int]:
        """Per categorical metadata column, products whose level was never seen in training (read as missing)."""
        check_is_fitted(self, "metadata_")
        return self.metadata_.count_unseen(check_products(X).meta)

    def importance_by_modality(self) -> dict[str, float]:
        """Share of the stacker's total split gain per modality (image / text / metadata / candidate)."""
        booster = self.stacker_.booster_
        totals: dict[str, float] = {}
        for name, gain in zip(booster.feature_name(), booster.feature_importance(importance_type="gain")):
            totals[modality_of(name)] = totals.get(modality_of(name), 0.0) + float(gain)
        total = sum(totals.values()) or 1.0
        return {k: v / total for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def check_products(X) -> ProductMatrix:
    if not isinstance(X, ProductMatrix):
        raise ValueError(f"X must be a ProductMatrix (ids, text, words, dense blocks, meta), not {type(X).__name__}")
    return X


def folds_told(progress: Callable[[str, int, int], None], what: str) -> Callable[[int, int], None]:
    """`progress` as the out-of-fold functions tell it, (done, folds): the stage "<what> folds"."""
    return lambda done, total: progress(f"{what} folds", done, total)


def unscorable(scores: np.ndarray | TopScores) -> np.ndarray:
    """Products a head has no score for."""
    return scores.absent if isinstance(scores, TopScores) else np.isnan(scores).all(axis=1)


def modality_of(feature_or_head: str) -> str:
    """'text.title.linear.score' -> 'text'; 'image.colour.knn' -> 'image'; 'meta.season' -> 'metadata'."""
    first = feature_or_head.split(".", 1)[0]
    return {"text": "text", "image": "image", "meta": "metadata"}.get(first, "candidate")
