"""The gate that keeps fusion honest: the stack predicts only where it clearly beats every single head.

Scores are per product (1/0 for right/wrong, or minus the absolute error) on rows that no compared model was fitted
on. The stack is kept only when its mean gain over the best head exceeds `margin_se` standard errors of the paired
difference (on ~1,000 products a gain of a handful is noise) and removes at least `min_gain` of that head's errors
(its error rate, or its mean absolute error): the stack's out-of-fold score is slightly optimistic next to a head's,
because at predict time it reads heads refitted on every row, not the fold copies it learned from. Measured on
Flipkart cat_l3 (670 classes), an out-of-fold gain of 2.5% of the head's errors (+0.2 points, beyond two standard
errors) became -0.3 to -0.5 points on held-out products on two draws; on the fashion targets gains of 10-30% of the
errors held (subCategory: 16% out-of-fold, +0.3 points held out).
"""

from __future__ import annotations

import numpy as np

FUSED = "fused"


def choose_predictor(
    per_row: dict[str, np.ndarray], margin_se: float, min_gain: float = 0.0, perfect: float = 1.0
) -> str:
    """FUSED, or the name of the best single head; `per_row` holds FUSED and every head, higher is better, and
    `perfect` is a row's best possible score (1 for right/wrong, 0 for minus an error)."""
    heads = [name for name in per_row if name != FUSED]
    best_head = max(heads, key=lambda name: float(np.mean(per_row[name])))
    head_error = perfect - float(np.mean(per_row[best_head]))
    gain = per_row[FUSED] - per_row[best_head]
    return FUSED if clearly_better(gain, margin_se, min_gain * head_error) else best_head


def clearly_better(gain: np.ndarray, margin_se: float, min_gain: float = 0.0) -> bool:
    """Whether a per-row paired gain is both beyond `margin_se` standard errors and at least `min_gain`."""
    se = np.std(gain, ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
    return bool(gain.mean() > max(margin_se * se, min_gain))
