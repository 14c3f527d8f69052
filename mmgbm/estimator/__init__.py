"""The modelling core, usable without the CLI or a config: scikit-learn estimators over a `ProductMatrix`.

    from mmgbm.estimator import MMGBMClassifier, ProductMatrix
    model = MMGBMClassifier(categorical_columns=["season"]).fit(X_train, y_train)
    labels, probabilities = model.predict_top_k(X_new, 3)
    paths = MMGBMPathClassifier(separator=" > ").fit(X_train, ["Apparel > Shoes > Boots", ...])
    nodes, node_probabilities = paths.predict_path(X_new)   # each level's node and its probability

This package imports nothing else from mmgbm: commands turn the config into these parameters at the edge.
"""

from mmgbm.estimator.classifier import MMGBMClassifier
from mmgbm.estimator.path_classifier import MMGBMPathClassifier
from mmgbm.estimator.products import ProductMatrix
from mmgbm.estimator.regressor import MMGBMRegressor
from mmgbm.estimator.selection import FUSED

__all__ = ["FUSED", "MMGBMClassifier", "MMGBMPathClassifier", "MMGBMRegressor", "ProductMatrix"]
