"""The mention head: where a product's text names a class."""

from __future__ import annotations

import re

import numpy as np
from sklearn.base import BaseEstimator

from mmgbm.estimator.heads.registry import block_kind, register

WORD = re.compile(r"\w+")


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
                    for code in self.phrases_.get(" ".join(words[start : start + length]), ()):
                        score = length + 1.0 / (1 + start)
                        if not out[row, code] >= score:
                            out[row, code] = score
        return out


def mention_words(text: str) -> list[str]:
    # Lower case, and a crude singular ("Necklaces" in a category, "Necklace" in a title).
    words = WORD.findall(str(text).lower())
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def _build(estimator, block: str, n_features: int) -> MentionHead | None:
    if estimator.regression or block_kind(block) != "words":
        return None
    return MentionHead(estimator._mention_names())


register("mention", MentionHead, _build)
