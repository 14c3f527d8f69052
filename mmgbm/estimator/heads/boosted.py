"""The boosted head: trees on a small dense block (a photo's colour statistics), for the targets it tells."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
from scipy.special import log_softmax
from sklearn.base import BaseEstimator

from mmgbm.estimator.folds import bounded_sample
from mmgbm.estimator.heads.registry import block_kind, register
from mmgbm.estimator.tree_blocks import raw_scores

# A dense block of at most this many columns (the photos' colour statistics, not an embedding) gets a BoostedHead.
BOOSTED_MAX_FEATURES = 256
ROUNDS_PER_BLOCK = 10  # of one tree per class each (see tree_blocks)
LOG_FLOOR = np.log(1e-9)  # a class the trees rule out still ranks, below every other


class BoostedHead(BaseEstimator):
    """Boosted trees on a small dense block (a photo's colour statistics): one score per class, its log-probability.
    What names a colour is not linear in a histogram ("red" is a hue bin only with enough saturation and light),
    which ridge and cosine neighbours miss (the figures: README, "How it models"). One thread: multiclass trees on
    this many rows ran faster on one core than on two. Fitted on at most `max_rows` rows (`bounded_sample`), as the
    linear heads are. The booster is kept as LightGBM's model text (what a model artifact can hold) and parsed once
    when used."""

    def __init__(
        self,
        n_classes: int = 0,
        rounds: int = 60,
        learning_rate: float = 0.2,
        num_leaves: int = 15,
        max_rows: int = 50_000,
        seed: int = 0,
    ):
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
        params = {
            "objective": "multiclass",
            "num_class": len(self.classes_),
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": 20,
            "feature_fraction": 0.5,
            "lambda_l2": 1.0,
            "max_bin": 63,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,
            "verbose": -1,
        }
        booster = lgb.train(
            params,
            lgb.Dataset(np.asarray(X, dtype=np.float32), np.searchsorted(self.classes_, y)),
            num_boost_round=self.rounds,
        )
        self.model_text_ = booster.model_to_string()
        return self

    def predict(self, X) -> np.ndarray:
        out = np.full((X.shape[0], self.n_classes), np.nan, dtype=np.float32)
        if self.model_text_ is None:
            out[:, self.classes_[0]] = 1.0
            return out
        if getattr(self, "_booster", None) is None:
            self._booster = lgb.Booster(model_str=self.model_text_)
        raw = raw_scores(self._booster, np.asarray(X, dtype=np.float32), ROUNDS_PER_BLOCK)
        out[:, self.classes_] = np.maximum(log_softmax(raw, axis=1), LOG_FLOOR)
        return out

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_booster"}  # saved as its text


def _build(estimator, blocks: dict, oof: dict, target: np.ndarray):
    """A `BoostedHead` on each small dense block whose heads tell the target out-of-fold at least as well as every
    other dense block's (a colour, not a category), for targets of at most `boosted_max_classes` classes: on
    targets an embedding tells better its trees added nothing for their cost."""
    if estimator.regression or len(estimator.classes_) > estimator.boosted_max_classes:
        return
    dense = [block for block in blocks if block_kind(block) == "dense"]
    best = {
        block: max(
            (
                float(np.mean(estimator._head_per_row(oof[name], target)))
                for name in estimator.heads_
                if name.rsplit(".", 1)[0] == block
            ),
            default=0.0,
        )
        for block in dense
    }
    for block in dense:
        if blocks[block][0].shape[1] <= BOOSTED_MAX_FEATURES and best[block] >= max(best.values()):
            yield (
                block,
                BoostedHead(len(estimator.classes_), max_rows=estimator.linear_max_products, seed=estimator.seed),
            )


register("boosted", BoostedHead, _build, after_others=True)
