"""Per-modality heads: small models on one feature block whose out-of-fold scores feed the LightGBM stacker.

LightGBM is poor at reading a 100,000-column sparse TF-IDF directly (slow, and it diverges on many classes);
a linear model or a cosine kNN on the same block is fast and strong. Each head turns its block into a few dense,
meaningful columns: one score per class for classification, one or a few predictions for regression.
Products without the modality get NaN rows, which LightGBM treats as missing.
Heads are scikit-learn estimators (parameters in the constructor, learned state in `_` attributes), so `clone`
handles them; `predict` gives their score columns, which a classifier keeps as each product's best classes
(`TopScores`). Each kind lives in its own module and registers itself (`registry`); the order of the imports
below is the order of the kinds, and so of the stacker's columns.
"""

from mmgbm.estimator.heads import linear, knn, mention, boosted  # noqa: F401 (each registers its kinds)
from mmgbm.estimator.heads.boosted import BoostedHead
from mmgbm.estimator.heads.knn import KnnHead
from mmgbm.estimator.heads.linear import LinearHead
from mmgbm.estimator.heads.mention import MentionHead, mention_words
from mmgbm.estimator.heads.registry import HEAD_KINDS, WORDS, Head, block_kind, register, trusted_types

__all__ = [
    "HEAD_KINDS",
    "WORDS",
    "BoostedHead",
    "Head",
    "KnnHead",
    "LinearHead",
    "MentionHead",
    "block_kind",
    "mention_words",
    "register",
    "trusted_types",
]
