"""`MetadataEncoder`: catalogue metadata columns -> a float frame LightGBM reads with native categoricals.

Categorical levels seen fewer than `min_count` times in training share one "rare" code, so a long tail of
brands does not give LightGBM thousands of one-product levels to overfit. A level never seen in training is a
missing value at predict time (LightGBM sends missing values down its learned default branch).
Numeric columns pass through; text in a numeric column ("No rating available") becomes missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmgbm.errors import MmgbmError


class MetadataEncoder:
    def __init__(self, categorical: list[str], numeric: list[str], min_count: int = 5):
        self.categorical = categorical
        self.numeric = numeric
        self.min_count = min_count

    def fit(self, frame: pd.DataFrame) -> "MetadataEncoder":
        self._check(frame, "training data")
        self.levels_: dict[str, list[str]] = {}
        self.rare_levels_: dict[str, list[str]] = {}
        for col in self.categorical:
            counts = _levels(frame[col]).value_counts()
            self.levels_[col] = sorted(counts.index[counts >= self.min_count])
            self.rare_levels_[col] = sorted(counts.index[counts < self.min_count])
        return self

    def transform(self, frame: pd.DataFrame, source: str = "input") -> pd.DataFrame:
        self._check(frame, source)
        out = {}
        for col in self.categorical:
            levels = self.levels_[col]
            codes = {level: float(i) for i, level in enumerate(levels)}
            codes.update({level: float(len(levels)) for level in self.rare_levels_[col]})
            out[col] = _levels(frame[col]).map(codes).astype(np.float32).to_numpy()
        for col in self.numeric:
            out[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float32).to_numpy()
        return pd.DataFrame(out, index=range(len(frame)))

    @property
    def columns(self) -> list[str]:
        return list(self.categorical) + list(self.numeric)

    def _check(self, frame: pd.DataFrame, source: str) -> None:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise MmgbmError(
                f"{source}: no metadata column(s) {', '.join(map(repr, missing))}, which the model reads; "
                "add them to the table or retrain without them"
            )


def _levels(column: pd.Series) -> pd.Series:
    # Levels compare as text, so 2011 and "2011" are one level; missing stays missing.
    return column.map(lambda v: v if pd.isna(v) else str(v).strip()).replace("", np.nan)
