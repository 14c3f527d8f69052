"""`MMGBMRegressor`: a numeric product attribute (a price), optionally learned on log1p of the target.

Heads per text field and image block: ridge and a cosine kNN (weighted mean, nearest target, nearest similarity).
A LightGBM regressor stacks their predictions with the metadata, minimising `objective` (MAE by default, the figure
of merit for prices). With `log_target` the model owns the transform: `fit` takes prices, learns log1p(price), and
`predict` returns prices.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import RegressorMixin

from mmgbm.estimator.base import MMGBMBase, Prediction, check_products
from mmgbm.estimator.products import ProductMatrix
from mmgbm.estimator.selection import FUSED
from mmgbm.estimator.stacking import RegressionStacker


class MMGBMRegressor(RegressorMixin, MMGBMBase):
    """Multimodal regressor over a `ProductMatrix`; parameters as `MMGBMClassifier`'s where they share a name,
    plus `text_ridge_alpha` (ridge penalty on TF-IDF; `linear_max_products` bounds its rows too), `objective` of
    the stacker and `log_target`."""

    regression = True

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
        linear_max_products: int = 50_000,
        text_ridge_alpha: float = 0.2,
        image_components: int = 0,
        image_alpha: float = 10.0,
        objective: str = "regression_l1",
        log_target: bool = False,
        selection_margin_se: float = 2.0,
        selection_min_gain: float = 0.05,
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
        self.linear_max_products = linear_max_products
        self.text_ridge_alpha = text_ridge_alpha
        self.image_components = image_components
        self.image_alpha = image_alpha
        self.objective = objective
        self.log_target = log_target
        self.selection_margin_se = selection_margin_se
        self.selection_min_gain = selection_min_gain
        self.seed = seed
        self.num_threads = num_threads
        self.n_jobs = n_jobs

    def predict(self, X: ProductMatrix) -> np.ndarray:
        """Predicted values on the target's own scale (prices, not log prices)."""
        return self._original_scale(self._prediction(X).values)

    def predict_alone(self, X: ProductMatrix, modality: str) -> np.ndarray:
        """Values from one modality's best head alone ("text", "image"): what fusing is compared with."""
        return self._original_scale(self._prediction(X, modality).values)

    def predict_each(self, X: ProductMatrix) -> dict[str, np.ndarray]:
        """`predict` (key "fused") and each modality's `predict_alone`, from one scoring of the heads: what an
        evaluation compares."""
        scores = self.head_scores(check_products(X))
        out = {FUSED: self._original_scale(self._prediction(X, scores=scores).values)}
        out.update({m: self._original_scale(self._prediction(X, m, scores).values) for m in self.modalities_})
        return out

    def _original_scale(self, values: np.ndarray) -> np.ndarray:
        return np.expm1(values) if self.log_target else values

    # ---- what the base class asks of a task ---------------------------------------------------------------
    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        try:
            target = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("y must be numeric for a regressor") from None
        if not np.isfinite(target).all():
            raise ValueError(f"y has {int((~np.isfinite(target)).sum())} missing or infinite values; drop them")
        if self.log_target:
            if (target <= 0).any():
                raise ValueError(f"log_target needs y > 0; {int((target <= 0).sum())} values are <= 0")
            target = np.log1p(target)
        self.median_ = float(np.median(target))
        return target

    def _fit_stacker(
        self, scores: list[np.ndarray], meta, target: np.ndarray, folds: np.ndarray, progress: Callable
    ) -> RegressionStacker:
        return RegressionStacker(
            list(self.heads_), self._lightgbm_params(self.objective), self.max_rounds, self.early_stopping_rounds
        ).fit(scores, meta, list(self.categorical_columns), target, folds, progress)

    def _stack_oof(self) -> Prediction:
        return Prediction(values=self.stacker_.oof_)

    def _stack_predict(self, scores: list[np.ndarray], meta) -> Prediction:
        return Prediction(values=self.stacker_.predict(scores, meta))

    def _head_predict(self, scores: np.ndarray) -> Prediction:
        """One head alone; products it cannot score get the training median."""
        missing = np.isnan(scores).all(axis=1)
        return Prediction(values=np.where(missing, self.median_, np.nan_to_num(scores[:, 0])))

    @staticmethod
    def _per_row(prediction: Prediction, target: np.ndarray) -> np.ndarray:
        return -np.abs(prediction.values - target)
