"""`MMGBMPathClassifier`: a category path down a taxonomy, one consistent answer as deep as the model is sure of.

Labels are paths written with a separator (`Clothing > Women's Clothing > Western Wear`); a path may end at any depth.
One classifier learns the paths as its classes, with the heads, stacker and calibration of `MMGBMClassifier` (the
mention heads look for each path's last level in the text, as a flat target's do for its label). Each node's
probability is the sum of the calibrated probabilities of the paths through it, so a parent's is at least its
child's, and the answer is read from the root down: at each level the child with the most probability, or the node
itself where the products that end there outweigh every child. Every answer is a node of the training paths.

A path that stops at a node with deeper training paths below it (`Jewellery > Rings` beside `Jewellery > Rings >
Toe Rings`) is read by `partial_paths`: "leaf" (the default) takes it as a claim that the product belongs at that
node, a class of its own, for a taxonomy that files products at inner nodes; "ancestors" takes it as a partial label,
known down to there and unknown below: its products train no class (an answer goes on below such a node, though
`min-confidence` may still stop there) and count only as evidence for the levels above, through the levels' heads.

The upper levels get evidence of their own: a linear head learns the top-level nodes (a few classes with many
products each, which it separates better than the paths below them) on the block of the best head, and so does each
deeper level at or above which partial labels stop, from every product whose path reaches it, partial labels
included. The paths' probabilities are pooled with their nodes' scores, p ∝ p_path^a · exp(Σ b_d · score of the
path's node at level d), (a, b) fitted on every training product's out-of-fold predictions; a level whose scores add
nothing to their likelihood (b_d = 0) is dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp
from sklearn.utils.validation import check_is_fitted

from mmgbm.estimator.base import Prediction, check_products, folds_told
from mmgbm.estimator.calibration import EPS
from mmgbm.estimator.classifier import MMGBMClassifier
from mmgbm.estimator.folds import fold_ids
from mmgbm.estimator.heads import WORDS, LinearHead
from mmgbm.estimator.out_of_fold import apply_head, fit_and_score, silent
from mmgbm.estimator.products import ProductMatrix
from mmgbm.estimator.selection import FUSED
from mmgbm.estimator.top_scores import ROW_BLOCK


PARTIAL_PATHS = ("ancestors", "leaf")


class MMGBMPathClassifier(MMGBMClassifier):
    """`MMGBMClassifier`'s parameters (no `label_in_text`: a path is not copied from a title), `separator`, the
    text between a path's levels, and `partial_paths` (module docstring). `classes_` are the training paths they
    learn; `nodes_` every node of them (each path and its ancestors, written as paths); `partial_products_` how many
    products were read as partial labels."""

    def __init__(self, *, separator: str = " > ", partial_paths: str = "leaf", **params):
        super().__init__(**params)
        self.separator = separator
        self.partial_paths = partial_paths

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted({*MMGBMClassifier._get_param_names(), "separator", "partial_paths"})

    def fit(self, X: ProductMatrix, y, progress: Callable[[str, int, int], None] = silent) -> "MMGBMPathClassifier":
        """Learns the paths `y` of the products `X`; with partial_paths "ancestors", from the products whose path is
        no partial label. `progress`: as `MMGBMClassifier.fit`'s, the levels' heads' folds too."""
        X, y = check_products(X), np.asarray(y)
        partial = np.zeros(len(y), dtype=bool)
        if self.partial_paths == "ancestors" and y.shape == (len(X),):  # other shapes: the base class says why not
            inner = _inner_nodes(set(y.tolist()), self.separator)
            partial = np.array([str(path) in inner for path in y.tolist()], dtype=bool)
        self.partial_products_ = int(partial.sum())
        # The upper levels' heads learn from every product, partial labels included (`_fit_after_selection`).
        self._evidence = (X, y, np.flatnonzero(~partial)) if partial.any() else None
        try:
            return super().fit(X[~partial], y[~partial], progress) if partial.any() else super().fit(X, y, progress)
        finally:
            del self._evidence

    # ---- public API ---------------------------------------------------------------------------------------
    def partial_labels(self, y) -> np.ndarray:
        """Which paths of `y` the model reads as partial labels: with partial_paths "ancestors", those that stop at
        a node with training paths below it; none with "leaf"."""
        check_is_fitted(self, "classes_")
        inner = _inner_nodes(self.classes_.tolist(), self.separator) if self.partial_paths == "ancestors" else set()
        return np.array([str(path) in inner for path in np.asarray(y).tolist()], dtype=bool)

    def predict(self, X: ProductMatrix) -> np.ndarray:
        """The full path of each product: the deepest node of `predict_path`."""
        return self._deepest(self.predict_path(X)[0])

    def predict_path(self, X: ProductMatrix) -> tuple[np.ndarray, np.ndarray]:
        """(nodes, probabilities), each (n, depth_): the answer's node at each level, root first (a path string;
        None past its end), and that node's calibrated probability (NaN past the end), never above its parent's."""
        return self._named(*self._walk(self._calibrated(self._prediction(X))))

    def predict_each(self, X: ProductMatrix) -> dict[str, np.ndarray]:
        """The full paths (key "fused") with their probability ("probability"), the nodes and probabilities of
        `predict_path` ("nodes", "node_probabilities") and each modality's best path alone, from one scoring of the
        heads: what an evaluation compares."""
        scores = self.head_scores(check_products(X))
        nodes, probabilities = self._named(*self._walk(self._calibrated(self._prediction(X, scores=scores))))
        out = {
            FUSED: self._deepest(nodes),
            "probability": _last(probabilities),
            "nodes": nodes,
            "node_probabilities": probabilities,
        }
        # A head alone has no calibrated probabilities to sum down the tree: its best path is its answer.
        out.update({m: self._prediction(X, m, scores).labels[:, 0] for m in self.modalities_})
        return out

    # ---- what differs from a flat classifier ------------------------------------------------------------
    def check_params(self) -> None:
        super().check_params()
        if self.label_in_text is not None:
            raise ValueError("label_in_text does not apply to a path (its levels are not copied from the text)")
        if not self.separator:
            raise ValueError("separator must not be empty: it is what splits a path into its levels")
        if self.partial_paths not in PARTIAL_PATHS:
            raise ValueError(f"partial_paths must be one of {', '.join(PARTIAL_PATHS)} (got {self.partial_paths!r})")

    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        target = super()._encode_target(y)
        levels = [str(c).split(self.separator) for c in self.classes_]
        empty = next((c for c, path in zip(self.classes_, levels) if not all(level.strip() for level in path)), None)
        if empty is not None:
            raise ValueError(f"path {empty!r} has an empty level; every level needs a name")
        self.depth_ = max(len(path) for path in levels)
        self.nodes_ = np.array(
            sorted({self.separator.join(path[:d]) for path in levels for d in range(1, len(path) + 1)})
        )
        code = {node: i for i, node in enumerate(self.nodes_)}
        self.ancestors_ = np.full((len(self.classes_), self.depth_), -1, dtype=np.int32)
        for row, path in enumerate(levels):
            self.ancestors_[row, : len(path)] = [code[self.separator.join(path[: d + 1])] for d in range(len(path))]
        return target

    def _mention_names(self) -> tuple[str, ...]:
        return tuple(str(c).split(self.separator)[-1] for c in self.classes_)

    def _fit_after_selection(
        self, X: ProductMatrix, honest: Prediction, oof: dict, target: np.ndarray, progress: Callable
    ) -> None:
        """The upper levels' own evidence (module docstring), pooled into the honest predictions before they are
        calibrated and kept."""
        self.level_heads_, self.level_weights_, self.level_block_ = [], np.zeros(0), None
        block = next((name.rsplit(".", 1)[0] for name in self.head_order_ if WORDS not in name), None)
        if self.depth_ > 1 and block is not None:
            self.level_block_ = block
            X_all, y_all, rows = self._evidence or (X, self.classes_[target], np.arange(len(X)))
            levels = [str(path).split(self.separator) for path in y_all]
            # The top level always; a deeper one where partial labels stop at or below it (what no class holds).
            partial_depth = max((len(levels[i]) for i in np.setdiff1d(np.arange(len(levels)), rows)), default=0)
            B, present = self._blocks(X_all)[block]
            fitted, scores = [], []
            self.level_of_class_ = np.full((len(self.classes_), max(1, min(partial_depth, self.depth_ - 1))), -1)
            for d in range(self.level_of_class_.shape[1]):
                head, level_scores = self._fit_level(d, B, present, levels, folds_told(progress, f"level {d + 1} head"))
                fitted.append(head)
                scores.append(self._level_scores(d, level_scores[rows], honest.candidates))
            self.level_weights_ = _pooling_weights(honest, scores, target)
            self.level_heads_ = [head if w > 0 else None for head, w in zip(fitted, self.level_weights_)]
            honest = self._pooled(honest, scores)
        super()._fit_after_selection(X, honest, oof, target, progress)

    def _fit_level(
        self, d: int, B, present: np.ndarray, levels: list[list[str]], progress: Callable[[int, int], None]
    ) -> tuple[LinearHead, np.ndarray]:
        """A linear head on the nodes of level `d` (0: the top) of every product whose path reaches it, and its
        out-of-fold scores (`progress` told its folds); fills `level_of_class_[:, d]`, each class's node at that
        level (-1: none)."""
        reaches = np.array([len(path) > d for path in levels])
        node_of = np.array([self.separator.join(path[: d + 1]) for path in levels])
        nodes = np.unique(node_of[reaches])
        code = np.where(reaches, np.searchsorted(nodes, node_of), 0)
        at = {node: i for i, node in enumerate(nodes)}
        for row, path in enumerate(str(c).split(self.separator) for c in self.classes_):
            self.level_of_class_[row, d] = at.get(self.separator.join(path[: d + 1]), -1) if len(path) > d else -1
        head = LinearHead(
            "multiclass",
            len(nodes),
            self.linear_c,
            dense_alpha=self.image_alpha,
            max_rows=self.linear_max_products,
            shortlist=self.linear_shortlist,
            seed=self.seed,
        )
        folds = fold_ids(code, self.n_folds, self.seed)
        return fit_and_score(head, B, code, folds, present & reaches, self.n_jobs, progress=progress)

    def _prediction(self, X: ProductMatrix, modality: str | None = None, scores: dict | None = None) -> Prediction:
        prediction = super()._prediction(X, modality, scores)
        if modality is not None or not any(head is not None for head in self.level_heads_):
            return prediction
        block = self._blocks(X).get(self.level_block_)
        if block is None:  # the input has no such block: no evidence of the levels either
            return prediction
        return self._pooled(
            prediction,
            [
                self._level_scores(d, apply_head(head, *block), prediction.candidates) if head is not None else None
                for d, head in enumerate(self.level_heads_)
            ],
        )

    def _level_scores(self, level: int, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """A level's head's score of each candidate path's node at that level."""
        codes = self.level_of_class_[candidates, level]
        at = np.where(codes >= 0, np.take_along_axis(scores, np.maximum(codes, 0), axis=1), np.nan)
        # A node the head left unscored counts as its lowest score; a product it could not score gets no evidence.
        return np.nan_to_num(np.where(np.isnan(at), np.fmin.reduce(at, axis=1, keepdims=True), at), nan=0.0)

    def _pooled(self, prediction: Prediction, levels: list[np.ndarray | None]) -> Prediction:
        """Probabilities times exp(Σ weight x the level's score), renormalised and ranked again."""
        evidence = sum(w * s for w, s in zip(self.level_weights_, levels) if s is not None and w > 0)
        p = prediction.probabilities * np.exp(evidence)
        p[prediction.probabilities <= 0] = 0.0
        p /= np.clip(p.sum(axis=1, keepdims=True), 1e-300, None)
        order = np.argsort(-p, axis=1, kind="stable")
        return self._ranked(
            np.take_along_axis(prediction.candidates, order, axis=1), np.take_along_axis(p, order, axis=1)
        )

    # ---- reading a path from the paths' probabilities ---------------------------------------------------
    def _walk(self, prediction: Prediction) -> tuple[np.ndarray, np.ndarray]:
        """(n, depth_) node codes of each product's answer (-1 past its end) and their probabilities; ROW_BLOCK
        products at a time (each compares its candidates pairwise)."""
        check_is_fitted(self, "ancestors_")
        n = len(prediction.candidates)
        codes, probabilities = np.full((n, self.depth_), -1, dtype=np.int32), np.full((n, self.depth_), np.nan)
        for start in range(0, n, ROW_BLOCK):
            block = slice(start, start + ROW_BLOCK)
            codes[block], probabilities[block] = _walk(
                self.ancestors_[prediction.candidates[block]], prediction.probabilities[block]
            )
        return codes, probabilities

    def _named(self, codes: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nodes = np.where(codes >= 0, self.nodes_[np.maximum(codes, 0)].astype(object), None)
        return nodes, probabilities

    @staticmethod
    def _deepest(nodes: np.ndarray) -> np.ndarray:
        depth = (nodes != None).sum(axis=1)  # noqa: E711 (elementwise)
        return nodes[np.arange(len(nodes)), np.maximum(depth - 1, 0)]


def _walk(ancestors: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From the root down, per product: the child node holding the most of its candidates' probability, unless the
    candidates ending at the current node hold at least as much (then the answer ends there). `ancestors` (n, k,
    depth) are the candidates' nodes per level (-1 past a candidate's end), `probabilities` (n, k) theirs."""
    n, k, depth = ancestors.shape
    codes, masses = np.full((n, depth), -1, dtype=np.int32), np.full((n, depth), np.nan)
    inside = np.ones((n, k), dtype=bool)  # candidates under the answer so far
    rows = np.arange(n)
    for d in range(depth):
        node = np.where(inside, ancestors[:, :, d], -1)
        same = node[:, :, None] == node[:, None, :]
        mass = np.where(node >= 0, (same * probabilities[:, None, :]).sum(axis=2), -1.0)
        best = mass.argmax(axis=1)
        best_mass = mass[rows, best]
        ends_here = (probabilities * (inside & (ancestors[:, :, d] < 0))).sum(axis=1)
        go = (best_mass > 0) & (best_mass > ends_here) if d else best_mass >= 0
        chosen = np.where(go, node[rows, best], -1)
        codes[:, d] = chosen
        masses[:, d] = np.where(go, best_mass, np.nan)
        inside &= ancestors[:, :, d] == chosen[:, None]
    return codes, masses


def _pooling_weights(honest: Prediction, levels: list[np.ndarray], target: np.ndarray) -> np.ndarray:
    """b / a of the pooling p ∝ p^a · exp(Σ b_d · level d's score) that makes the true paths most likely (products
    whose true path is a candidate); 0 for a level whose scores add nothing."""
    hit = honest.candidates == target[:, None]
    rows = hit.any(axis=1)
    if not rows.any():
        return np.zeros(len(levels))
    logp = np.log(np.clip(honest.probabilities[rows], EPS, None))
    evidence, hit = np.stack([s[rows] for s in levels]), hit[rows]

    def nll(params: np.ndarray) -> float:
        logits = params[0] * logp + np.tensordot(params[1:], evidence, axes=1)
        return float(np.mean(logsumexp(logits, axis=1) - logits[hit]))

    start = np.r_[1.0, np.zeros(len(levels))]
    fitted = minimize(nll, start, method="L-BFGS-B", bounds=[(1e-3, None)] + [(0.0, None)] * len(levels)).x
    return fitted[1:] / fitted[0]


def _inner_nodes(paths, separator: str) -> set[str]:
    """The nodes with a path of `paths` below them."""
    levels = [str(path).split(separator) for path in paths]
    return {separator.join(path[:d]) for path in levels for d in range(1, len(path))}


def _last(probabilities: np.ndarray) -> np.ndarray:
    """Each row's last probability before the NaNs: the full path's."""
    depth = (~np.isnan(probabilities)).sum(axis=1)
    return probabilities[np.arange(len(probabilities)), np.maximum(depth - 1, 0)]


def deepest_confident(
    nodes: np.ndarray, probabilities: np.ndarray, min_confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per product the deepest node of its answer whose probability reaches `min_confidence` (None where not even
    the first level does), its depth (0 then) and its probability (the first level's where nothing reaches it)."""
    reached = np.nan_to_num(probabilities, nan=-1.0) >= min_confidence
    depth = reached.sum(axis=1)  # probabilities never grow down a path, so the reached levels are the first ones
    rows, at = np.arange(len(nodes)), np.maximum(depth - 1, 0)
    return (np.where(depth > 0, nodes[rows, at], None), depth, probabilities[rows, at])
