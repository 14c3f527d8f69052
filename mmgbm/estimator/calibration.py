"""Temperature scaling of ranked class probabilities, fitted on out-of-fold predictions.

Neither a softmax over SVM margins nor a binary re-ranker's normalised scores are probabilities a catalogue team can
act on ("auto-fill everything above 0.9"). One temperature T, fitted by maximum likelihood on every training
product's honest prediction, turns them into calibrated ones: p_i ∝ p_i^(1/T). It keeps each product's ranking, so
labels never change, only their confidence.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

EPS = 1e-9


def fit_temperature(probabilities: np.ndarray, candidates: np.ndarray, truth: np.ndarray) -> float:
    """T minimising the negative log-likelihood of the true class among each product's ranked candidates; products
    whose true class is not a candidate carry no information about T and are left out."""
    hit = candidates == truth[:, None]
    rows = hit.any(axis=1)
    if not rows.any():
        return 1.0
    logp = np.log(np.clip(probabilities[rows], EPS, None))
    true_logp = logp[hit[rows]]

    def nll(log_t: float) -> float:
        scaled = logp / np.exp(log_t)
        top = scaled.max(axis=1)
        return float(np.mean(top + np.log(np.exp(scaled - top[:, None]).sum(axis=1)) - true_logp / np.exp(log_t)))

    return float(np.exp(minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded").x))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    logp = np.log(np.clip(probabilities, EPS, None)) / temperature
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    p[probabilities <= 0] = 0.0  # a class with no evidence stays impossible
    return p / p.sum(axis=1, keepdims=True)
