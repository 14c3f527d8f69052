"""The gate that keeps fusion honest: the stack predicts only where it clearly beats every single head.

Scores are per product (1/0 for right/wrong, or minus the absolute error) on rows that no compared model was fitted
on. The stack is kept only when its mean gain over the best head exceeds `margin_se` standard errors of the paired
difference: on ~1,000 products a gain of a handful is noise, and then the simpler head generalises at least as well.
"""

from __future__ import annotations

import numpy as np

FUSED = "fused"


def choose_predictor(per_row: dict[str, np.ndarray], margin_se: float) -> str:
    """FUSED, or the name of the best single head; `per_row` holds FUSED and every head, higher is better."""
    heads = [name for name in per_row if name != FUSED]
    best_head = max(heads, key=lambda name: float(np.mean(per_row[name])))
    gain = per_row[FUSED] - per_row[best_head]
    se = np.std(gain, ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
    return FUSED if gain.mean() > margin_se * se else best_head
