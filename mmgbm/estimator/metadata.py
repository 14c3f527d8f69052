"""`MetadataEncoder`: catalogue metadata columns -> a float frame LightGBM reads with native categoricals.

Categorical levels seen fewer than `min_count` times in training share one "infrequent" code (scikit-learn's
`OrdinalEncoder(min_frequency=...)`), so a long tail of brands does not give LightGBM thousands of one-product levels
to overfit. A level never seen in training is a missing value at predict time (LightGBM sends missing values down
its learned default branch); `count_unseen` counts them so commands can report them.
Numeric columns pass through; text in a numeric column ("No rating available") becomes missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import OrdinalEncoder


class MetadataEncoder(TransformerMixin, BaseEstimator):
    def __init__(self, categorical: tuple[str, ...] = (), numeric: tuple[str, ...] = (), min_count: int = 5):
        self.categorical = categorical
        self.numeric = numeric
        self.min_count = min_count

    def fit(self, frame: pd.DataFrame, y: object = None) -> "MetadataEncoder":
        self._check(frame, "training data")
        self.encoder_ = None
        if self.categorical:
            self.encoder_ = OrdinalEncoder(
                min_frequency=self.min_count, handle_unknown="use_encoded_value", unknown_value=np.nan,
                encoded_missing_value=np.nan, dtype=np.float32,
            ).fit(_levels(frame, self.categorical))
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Float32 columns named as the input's."""
        self._check(frame, "input")
        out = {}
        if self.categorical:
            codes = self.encoder_.transform(_levels(frame, self.categorical))
            out.update({col: codes[:, j] for j, col in enumerate(self.categorical)})
        for col in self.numeric:
            out[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float32).to_numpy()
        return pd.DataFrame(out, index=range(len(frame)))

    def count_unseen(self, frame: pd.DataFrame) -> dict[str, int]:
        """Per categorical column, products whose level was never seen in training (predicted as missing)."""
        if not self.categorical:
            return {}
        levels = _levels(frame, self.categorical)
        codes = self.encoder_.transform(levels)
        return {col: int((np.isnan(codes[:, j]) & levels[col].notna()).sum()) for j, col in enumerate(self.categorical)}

    def _check(self, frame: pd.DataFrame, source: str) -> None:
        missing = [c for c in (*self.categorical, *self.numeric) if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{source}: no metadata column(s) {', '.join(map(repr, missing))}, which the model reads; "
                "add them to the table or retrain without them"
            )


def _levels(frame: pd.DataFrame, columns) -> pd.DataFrame:
    # Levels compare as text, so 2011 and "2011" are one level; missing and blank stay missing.
    text = frame[list(columns)].apply(lambda c: c.map(lambda v: np.nan if pd.isna(v) else str(v).strip()))
    return text.replace("", np.nan).astype(object)
