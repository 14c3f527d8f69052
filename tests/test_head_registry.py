"""Heads are registered in one place (mmgbm.estimator.heads): the estimators build theirs from the registry and
artifacts trust exactly the types it names. Moving the heads onto it changed no prediction: the classifier's
probabilities and the regressor's values on a fixed synthetic catalogue equal those recorded by the code before
the registry (commit 16a6875, `np.savez(GOLDEN, **predictions())`), bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator

from mmgbm.commands.artifact import Artifact, TargetInfo, load_artifact, save_artifact, trusted_type_names
from mmgbm.estimator import MMGBMClassifier, MMGBMRegressor, ProductMatrix
from mmgbm.estimator.heads import HEAD_KINDS, block_kind, register
from tests.test_estimator import FAST, one_hot_block, text_block

GOLDEN = Path(__file__).parent / "data" / "golden_predictions.npz"


def catalogue(n: int = 300, seed: int = 7) -> tuple[ProductMatrix, np.ndarray, np.ndarray]:
    """Every kind of block a head reads: sparse text, its words, an embedding-like block and a small colour-like
    block (boosted trees), with a price that follows the class."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, n)
    names = np.array(["boots", "dress", "shirt", "watch"])
    words = np.array(
        [f"{'acme' if i % 3 else 'zeta'} {names[c]} {rng.integers(100)}" for i, c in enumerate(codes)], dtype=object
    )
    meta = pd.DataFrame({"season": rng.choice(["summer", "winter", None], n), "year": rng.integers(2010, 2020, n)})
    dense = {"image": one_hot_block(codes, 16, rng, noise=1.2), "image.colour": one_hot_block(codes, 6, rng, 0.9)}
    X = ProductMatrix(np.arange(n).astype(str), {"title": text_block(codes, rng)}, {"title": words}, dense, meta)
    price = np.array([10.0, 40.0, 25.0, 300.0])[codes] * rng.lognormal(0, 0.2, n)
    return X, names[codes], price


def predictions() -> dict[str, np.ndarray]:
    X, y, price = catalogue()
    train, test = slice(0, 240), slice(240, None)
    settings = dict(FAST, categorical_columns=("season",), numeric_columns=("year",))
    classifier = MMGBMClassifier(**settings).fit(X[train], y[train])
    regressor = MMGBMRegressor(log_target=True, **settings).fit(X[train], price[train])
    return {
        "heads": np.array(list(classifier.heads_) + list(regressor.heads_)),
        "proba": classifier.predict_proba(X[test]),
        "price": regressor.predict(X[test]),
    }


def test_predictions_are_those_recorded_before_the_registry():
    golden, now = np.load(GOLDEN), predictions()
    assert now["heads"].tolist() == golden["heads"].tolist()  # every kind of head, in the stacker's order
    assert np.array_equal(now["proba"], golden["proba"]) and np.array_equal(now["price"], golden["price"])


class NearestPriceHead(BaseEstimator):
    """A head a user might add: for regression on a dense block, the target of the training product whose first
    feature is closest. One class and one `register` call make it part of every regressor."""

    n_outputs = 1

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, X, y: np.ndarray) -> "NearestPriceHead":
        first = first_feature(X)
        order = np.argsort(first)
        self.keys_, self.values_ = first[order], np.asarray(y)[order]
        return self

    def predict(self, X) -> np.ndarray:
        at = np.clip(np.searchsorted(self.keys_, first_feature(X)), 0, len(self.keys_) - 1)
        return self.values_[at].astype(np.float32)[:, None]


def first_feature(X) -> np.ndarray:
    return np.asarray(X[0 : X.shape[0]])[:, 0]  # a dense block is read by rows (a `RowView`)


@pytest.fixture
def nearest_price_head():
    register(
        "nearest_price",
        NearestPriceHead,
        lambda est, block, n: NearestPriceHead(est.seed) if est.regression and block_kind(block) == "dense" else None,
    )
    yield
    HEAD_KINDS.pop()


def test_a_registered_head_is_fitted_stacked_judged_and_saved(nearest_price_head, tmp_path: Path):
    X, _, price = catalogue()
    model = MMGBMRegressor(log_target=True, **FAST).fit(X, price)
    assert {"image.nearest_price", "image.colour.nearest_price"} <= set(model.heads_)
    assert "image.nearest_price" in model.validation_  # the gate judged it with the others
    assert any(name.startswith("image.nearest_price") for name in model.stacker_.booster_.feature_name())
    save_artifact(tmp_path / "price", Artifact(TargetInfo("price", "price", "regression", True), model, {}, {}, {}))
    loaded = load_artifact(tmp_path / "price", "price").model  # trusted: the registry names it
    assert np.array_equal(loaded.predict(X), model.predict(X))


def test_artifacts_trust_exactly_the_registered_heads_and_the_types_they_hold():
    names = trusted_type_names()
    for kind in HEAD_KINDS:
        assert f"{kind.type.__module__}.{kind.type.__qualname__}" in names
    assert {"mmgbm.estimator.shortlist.ShortlistSVM", "mmgbm.estimator.neighbours.NeighbourIndex"} <= names
    assert [kind.name for kind in HEAD_KINDS] == ["linear", "knn", "knn_projected", "mention", "boosted"]
