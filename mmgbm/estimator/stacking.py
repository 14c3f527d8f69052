"""LightGBM stackers over head scores and metadata.

Classification uses a candidate re-ranker instead of a multiclass model: LightGBM multiclass builds one tree per
class per round, which is infeasible in time and memory at hundreds or thousands of classes. Instead each product
gets its `k` most promising classes (the union of every head's top ranks), and one binary LightGBM model scores
(product, candidate) rows from that candidate's per-head score, rank and gap to the head's best, the class prior,
the class itself (native categorical) and the product's metadata. Its features do not depend on which class a
column means, so rare classes borrow strength from common ones.
Regression stacks the heads' predictions and the metadata under a LightGBM regressor.
"""

from __future__ import annotations

from collections.abc import Callable

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit

from mmgbm.estimator.top_scores import ROW_BLOCK, TopScores
from mmgbm.estimator.tree_blocks import raw_scores

PREDICT_ROWS = 2**18  # rows the final booster predicts at once: ~35 MB of features
ROUNDS_PER_BLOCK = 25  # of the candidate reranker's trees predicted over all rows at once (see tree_blocks)


def cross_fit(
    params: dict,
    rounds: int,
    patience: int,
    rows: np.ndarray,
    names: list[str],
    label: np.ndarray,
    folds: np.ndarray,
    categorical: list[str],
    progress: Callable[[str, int, int], None],
) -> tuple[np.ndarray, lgb.Booster]:
    """Out-of-fold predictions for every row, each from a booster that never saw it, and a booster fitted on all
    rows with fold >= 0 with the number of rounds at which the folds' mean validation loss stopped improving.
    Rows with fold -1 are left out of fitting (a bounded sample keeps the stacker's cost flat on large catalogues):
    the final booster, which never saw them, predicts them. `progress(stage, round, rounds)` is told each boosting
    round of the folds (ending at the round early stopping stopped at) and of the final booster.

    Every training product thus gets an honest fused prediction, so the stack is compared with the heads on all
    of them (not on a 10% slice), and the final stacker learns from every sampled product."""
    inside = np.flatnonzero(folds >= 0)
    fitted = rows[inside] if len(inside) < len(rows) else rows
    fold_of = folds[inside]
    splits = [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in np.unique(fold_of)]
    # Binned once, and the folds are subsets of the binned rows: with the raw rows kept (free_raw_data=False)
    # every fold copied its rows' features, 1.6 GB at 200,000 products of 20 candidates, the peak of training.
    dataset = lgb.Dataset(fitted, label[inside], feature_name=names, categorical_feature=categorical)
    folds_stage = f"stacker rounds on {len(splits)} folds"
    cv_rounds = _RoundsTold(progress, folds_stage, rounds)
    cv = lgb.cv(
        params,
        dataset,
        num_boost_round=rounds,
        folds=splits,
        return_cvbooster=True,
        callbacks=[lgb.early_stopping(patience, verbose=False), cv_rounds],
    )
    progress(folds_stage, cv_rounds.done, cv_rounds.done)  # early stopping ended it: the rounds it took are all
    boosters = cv["cvbooster"]
    best = boosters.best_iteration
    oof = np.empty(len(rows), dtype=np.float64)
    for (_, held_out), booster in zip(splits, boosters.boosters):
        oof[inside[held_out]] = booster.predict(fitted[held_out], num_iteration=best)
    final = lgb.train(
        params, dataset, num_boost_round=best, callbacks=[_RoundsTold(progress, "stacker final rounds", best)]
    )
    outside = np.flatnonzero(folds < 0)
    for start in range(0, len(outside), PREDICT_ROWS):  # not a copy of every row left out at once
        block = outside[start : start + PREDICT_ROWS]
        oof[block] = final.predict(rows[block])
    return oof, final


class _RoundsTold:
    """A LightGBM callback telling `progress(stage, rounds so far, rounds)` at once and as each round ends, the
    rounds so far in `done`; LightGBM calls it in this process, between rounds."""

    def __init__(self, progress: Callable[[str, int, int], None], stage: str, rounds: int):
        self.progress, self.stage, self.rounds, self.done = progress, stage, rounds, 0
        progress(stage, 0, rounds)

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        self.done = env.iteration - env.begin_iteration + 1
        self.progress(self.stage, self.done, self.rounds)


def candidate_probabilities(booster: lgb.Booster, rows: np.ndarray) -> np.ndarray:
    """The candidate reranker's probabilities (a binary objective), its rounds a block at a time."""
    return expit(raw_scores(booster, rows, ROUNDS_PER_BLOCK))


def meta_feature(column: str) -> str:
    # LightGBM refuses JSON punctuation in feature names, so the prefix uses a dot.
    return f"meta.{column}"


def choose_candidates(ranks: list[np.ndarray], k: int) -> np.ndarray:
    """(n, k) class codes: the best classes by their best rank in any head, ties broken by mean rank."""
    n_classes = ranks[0].shape[1]
    best = np.minimum.reduce(ranks).astype(np.float64)
    key = best + np.mean(ranks, axis=0) / (n_classes + 1)
    k = min(k, n_classes)
    top = np.argpartition(key, k - 1, axis=1)[:, :k] if k < n_classes else np.tile(np.arange(n_classes), (len(key), 1))
    return np.take_along_axis(top, np.argsort(np.take_along_axis(key, top, axis=1), axis=1), axis=1)


class CandidateReranker:
    """Binary LightGBM over (product, candidate class) rows; see the module docstring."""

    def __init__(self, head_names: list[str], n_candidates: int, params: dict, rounds: int, patience: int):
        self.head_names = head_names
        self.n_candidates = n_candidates
        self.params = params
        self.rounds = rounds
        self.patience = patience

    def fit(
        self,
        scores: list[TopScores],
        meta: pd.DataFrame,
        meta_categorical: list[str],
        y: np.ndarray,
        folds: np.ndarray,
        log_prior: np.ndarray,
        progress: Callable[[str, int, int], None],
    ) -> "CandidateReranker":
        """Cross-fitted over the products' `folds` (`progress` told its rounds: `cross_fit`); `oof_` holds every
        product's out-of-fold (candidates, probs), from the final booster for the products left out of fitting
        (fold -1), which it predicts as `predict` does: the candidate rows of every product at once were 2.2 GB at
        800,000 training products."""
        self.log_prior_ = log_prior
        self.meta_categorical_ = list(meta_categorical)
        inside, outside = np.flatnonzero(folds >= 0), np.flatnonzero(folds < 0)
        sample = (scores, meta) if not len(outside) else ([s[inside] for s in scores], meta.iloc[inside])
        cands, rows = self.candidate_rows(*sample)
        label = (cands == y[inside, None]).ravel().astype(np.float32)
        categorical = ["candidate", *(meta_feature(c) for c in self.meta_categorical_)]
        oof, self.booster_ = cross_fit(
            self.params,
            self.rounds,
            self.patience,
            rows,
            self.feature_names(meta),
            label,
            np.repeat(folds[inside], cands.shape[1]),
            categorical,
            progress,
        )
        del rows
        shape = (len(folds), cands.shape[1])
        self.oof_ = (np.empty(shape, dtype=np.intp), np.empty(shape))
        self.oof_[0][inside], self.oof_[1][inside] = _ranked(cands, oof.reshape(cands.shape), log_prior)
        if len(outside):
            self.oof_[0][outside], self.oof_[1][outside] = self.predict(
                [s[outside] for s in scores], meta.iloc[outside]
            )
        return self

    def predict(self, scores: list[TopScores], meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) candidate class codes, best first, and their probabilities (summing to 1 per product); ROW_BLOCK
        products at a time."""
        n, k = len(scores[0]), min(self.n_candidates, scores[0].n_classes)
        cands, probs = np.empty((n, k), dtype=np.intp), np.empty((n, k))
        for start in range(0, n, ROW_BLOCK):
            block = slice(start, start + ROW_BLOCK)
            c, rows = self.candidate_rows([s[block] for s in scores], meta.iloc[block])
            p = candidate_probabilities(self.booster_, rows).reshape(c.shape)
            cands[block], probs[block] = _ranked(c, p, self.log_prior_)
        return cands, probs

    def feature_names(self, meta: pd.DataFrame) -> list[str]:
        """The columns of `candidate_rows`, in order."""
        per_head = [f"{name}.{kind}" for name in self.head_names for kind in ("score", "rank", "gap")]
        return [
            "candidate",
            "candidate_position",
            "class_log_prior",
            *per_head,
            "heads_ranking_first",
            *(meta_feature(c) for c in meta.columns),
        ]

    def candidate_rows(self, scores: list[TopScores], meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) candidates and their (n * k, features) float32 rows, filled in place: n x k rows through pandas
        would be copied column by column (and cost milliseconds on the one-product requests of a service). Built
        ROW_BLOCK products at a time: every head's ranks of every class exist for one block only."""
        n, n_classes = len(scores[0]), scores[0].n_classes
        k = min(self.n_candidates, n_classes)
        cands = np.empty((n, k), dtype=np.intp)
        rows = np.empty((n * k, len(self.feature_names(meta))), dtype=np.float32)
        metadata = [meta[c].to_numpy() for c in meta.columns]
        for start in range(0, n, ROW_BLOCK):
            block = slice(start, min(start + ROW_BLOCK, n))
            cands[block] = self._fill(
                rows[block.start * k : block.stop * k], [s[block] for s in scores], [m[block] for m in metadata]
            )
        return cands, rows

    def _fill(self, rows: np.ndarray, top: list[TopScores], metadata: list[np.ndarray]) -> np.ndarray:
        """One block's candidates, its rows written into `rows`."""
        ranks = [t.ranks() for t in top]
        cands = choose_candidates(ranks, self.n_candidates)
        n, k = cands.shape
        rows[:, 0] = cands.ravel()
        rows[:, 1] = np.tile(np.arange(k), n)
        rows[:, 2] = self.log_prior_[cands].ravel()
        column = 3
        for t, r in zip(top, ranks):
            at = np.take_along_axis(t.dense(), cands, axis=1)
            rows[:, column] = at.ravel()
            rows[:, column + 1] = np.take_along_axis(r, cands, axis=1).ravel()
            rows[:, column + 2] = (at - t.scores[:, :1]).ravel()  # the gap to the head's best
            column += 3
        rows[:, column] = np.sum([np.take_along_axis(r, cands, axis=1) == 0 for r in ranks], axis=0).ravel()
        for j, values in enumerate(metadata, start=column + 1):
            rows[:, j] = np.repeat(values, k)
        return cands


class RegressionStacker:
    """LightGBM regressor over the heads' predictions and the metadata."""

    def __init__(self, head_names: list[str], params: dict, rounds: int, patience: int):
        self.head_names = head_names
        self.params = params
        self.rounds = rounds
        self.patience = patience

    def fit(
        self,
        scores: list[np.ndarray],
        meta: pd.DataFrame,
        meta_categorical: list[str],
        y: np.ndarray,
        folds: np.ndarray,
        progress: Callable[[str, int, int], None],
    ) -> "RegressionStacker":
        """Cross-fitted over the products' `folds` (`progress` told its rounds: `cross_fit`); `oof_` holds every
        product's out-of-fold prediction."""
        self.meta_categorical_ = list(meta_categorical)
        self.oof_, self.booster_ = cross_fit(
            self.params,
            self.rounds,
            self.patience,
            self.feature_rows(scores, meta),
            self.feature_names(scores, meta),
            y,
            folds,
            [meta_feature(c) for c in self.meta_categorical_],
            progress,
        )
        return self

    def predict(self, scores: list[np.ndarray], meta: pd.DataFrame) -> np.ndarray:
        return self.booster_.predict(self.feature_rows(scores, meta))

    def feature_names(self, scores: list[np.ndarray], meta: pd.DataFrame) -> list[str]:
        return [
            *(f"{name}.{i}" for name, s in zip(self.head_names, scores) for i in range(s.shape[1])),
            *(meta_feature(c) for c in meta.columns),
        ]

    def feature_rows(self, scores: list[np.ndarray], meta: pd.DataFrame) -> np.ndarray:
        return np.column_stack([*scores, *(meta[c].to_numpy(dtype=np.float32) for c in meta.columns)]).astype(
            np.float32, copy=False
        )


def _ranked(cands: np.ndarray, p: np.ndarray, log_prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates re-ordered by the stacker's scores, best first, with the scores normalised per product. Equal
    scores (coarse trees give many) go to the more frequent class, then the lower class code, not by where the
    heads put the candidates: that order can flip with last-bit differences in the heads' scores (another
    machine, another BLAS), and the labels must not."""
    p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    order = np.lexsort((cands, -log_prior[cands], -p), axis=1)
    return np.take_along_axis(cands, order, axis=1), np.take_along_axis(p, order, axis=1)
