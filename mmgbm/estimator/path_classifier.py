"""`MMGBMPathClassifier`: a category path down a taxonomy, one consistent answer as deep as the model is sure of.

Labels are paths written with a separator (`Clothing > Women's Clothing > Western Wear`); a path may end at any depth.
One classifier learns the paths as its classes, with the heads, stacker and calibration of `MMGBMClassifier` (the
mention heads look for each path's last level in the text, as a flat target's do for its label). Each node's
probability is the sum of the calibrated probabilities of the paths through it, so a parent's is at least its
child's, and the answer is read from the root down: at each level the child with the most probability, or the node
itself where the products that end there outweigh every child. Every answer is a node of the training paths.

The top level also gets evidence of its own: a linear head learns the top-level nodes (a few classes with many
products each, which it separates better than the paths below them) on the block of the best head, and the paths'
probabilities are pooled with its scores, p ∝ p_path^a · exp(b · score of the path's top node), (a, b) fitted on
every training product's out-of-fold predictions; without a gain in their likelihood (b = 0) it is dropped.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp
from sklearn.utils.validation import check_is_fitted

from mmgbm.estimator.base import Prediction, check_products
from mmgbm.estimator.calibration import EPS
from mmgbm.estimator.classifier import MMGBMClassifier
from mmgbm.estimator.folds import fold_ids
from mmgbm.estimator.heads import WORDS, LinearHead
from mmgbm.estimator.out_of_fold import apply_head, fit_and_score
from mmgbm.estimator.products import ProductMatrix
from mmgbm.estimator.selection import FUSED
from mmgbm.estimator.top_scores import ROW_BLOCK


class MMGBMPathClassifier(MMGBMClassifier):
    """`MMGBMClassifier`'s parameters (no `label_in_text`: a path is not copied from a title) and `separator`, the
    text between a path's levels. `classes_` are the training paths; `nodes_` every node of them (each path and its
    ancestors, written as paths)."""

    def __init__(self, *, separator: str = " > ", **params):
        super().__init__(**params)
        self.separator = separator

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted({*MMGBMClassifier._get_param_names(), "separator"})

    # ---- public API ---------------------------------------------------------------------------------------
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

    def _fit_after_selection(self, X: ProductMatrix, honest: Prediction, oof: dict, target: np.ndarray) -> None:
        """The top level's own evidence (module docstring), pooled into the honest predictions before they are
        calibrated and kept."""
        self.top_head_, self.top_weight_, self.top_block_ = None, 0.0, None
        block = next((name.rsplit(".", 1)[0] for name in self.head_order_ if WORDS not in name), None)
        if self.depth_ > 1 and block is not None:
            self.top_block_ = block
            top_nodes, self.top_of_class_ = np.unique(self.ancestors_[:, 0], return_inverse=True)
            B, present = self._blocks(X)[block]
            head = LinearHead(
                "multiclass",
                len(top_nodes),
                self.linear_c,
                dense_alpha=self.image_alpha,
                max_rows=self.linear_max_products,
                shortlist=self.linear_shortlist,
                seed=self.seed,
            )
            fitted, scores = fit_and_score(
                head, B, self.top_of_class_[target], fold_ids(target, self.n_folds, self.seed), present, self.n_jobs
            )
            weight = _pooling_weight(honest, self._top_scores(scores, honest.candidates), target)
            if weight > 0:
                self.top_head_, self.top_weight_ = fitted, weight
                honest = self._pooled(honest, self._top_scores(scores, honest.candidates))
        super()._fit_after_selection(X, honest, oof, target)

    def _prediction(self, X: ProductMatrix, modality: str | None = None, scores: dict | None = None) -> Prediction:
        prediction = super()._prediction(X, modality, scores)
        if modality is not None or self.top_head_ is None:
            return prediction
        block = self._blocks(X).get(self.top_block_)
        if block is None:  # the input has no such block: no evidence of the top level either
            return prediction
        return self._pooled(prediction, self._top_scores(apply_head(self.top_head_, *block), prediction.candidates))

    def _top_scores(self, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """The top-level head's score of each candidate path's top node."""
        at = np.take_along_axis(scores, self.top_of_class_[candidates], axis=1)
        # A node the head left unscored counts as its lowest score; a product it could not score gets no evidence.
        return np.nan_to_num(np.where(np.isnan(at), np.fmin.reduce(at, axis=1, keepdims=True), at), nan=0.0)

    def _pooled(self, prediction: Prediction, top: np.ndarray) -> Prediction:
        """Probabilities times exp(weight x the top node's score), renormalised and ranked again."""
        p = prediction.probabilities * np.exp(self.top_weight_ * top)
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


def _pooling_weight(honest: Prediction, top: np.ndarray, target: np.ndarray) -> float:
    """b / a of the pooling p ∝ p^a · exp(b · top) that makes the true paths most likely (products whose true path
    is a candidate); 0 where the top level's scores add nothing."""
    hit = honest.candidates == target[:, None]
    rows = hit.any(axis=1)
    if not rows.any():
        return 0.0
    logp = np.log(np.clip(honest.probabilities[rows], EPS, None))
    top, hit = top[rows], hit[rows]

    def nll(params: np.ndarray) -> float:
        logits = params[0] * logp + params[1] * top
        return float(np.mean(logsumexp(logits, axis=1) - logits[hit]))

    a, b = minimize(nll, np.array([1.0, 0.0]), method="L-BFGS-B", bounds=[(1e-3, None), (0.0, None)]).x
    return float(b / a)


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
