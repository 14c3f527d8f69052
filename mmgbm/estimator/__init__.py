"""The modelling core, usable without the CLI or a config: scikit-learn estimators over a `ProductMatrix`.

    from mmgbm.estimator import MMGBMClassifier, ProductMatrix
    model = MMGBMClassifier(categorical_columns=["season"]).fit(X_train, y_train)
    labels, probabilities = model.predict_top_k(X_new, 3)

This package imports nothing else from mmgbm: commands turn the config into these parameters at the edge.
"""

from mmgbm.estimator.classifier import MMGBMClassifier
from mmgbm.estimator.products import ProductMatrix
from mmgbm.estimator.regressor import MMGBMRegressor
from mmgbm.estimator.selection import FUSED

__all__ = ["FUSED", "MMGBMClassifier", "MMGBMRegressor", "ProductMatrix"]
