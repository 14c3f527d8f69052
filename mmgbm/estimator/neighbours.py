"""Cosine nearest neighbours, exact on small catalogues and approximate (an inverted file) on large ones.

Exact search is one matrix product per block of queries: the fastest and exact up to ~100,000 products, but its
cost grows with n^2 and the out-of-fold scheme runs it once per fold. Above `exact_max_rows` the rows are
projected to `components` dimensions (a truncated SVD: the same for sparse TF-IDF and dense embeddings) and searched
with faiss's inverted file: k-means cells of ~sqrt(n) / 4 rows, a query reading the IVF_PROBES cells nearest it,
the rows stored as float16 (half the memory, and searches read half the bytes: 6.6 s against 11.2 s in float32).
On 200,000 grown products (128 dimensions, 41 neighbours of every row) it built and searched their image rows in
10 s where faiss's HNSW graph of 32 links took 63 s, its neighbours voting the row's class as often (an HNSW graph
is built one insertion at a time; k-means cells are matrix products). The index is pickled as bytes (faiss's own
serialisation), so a fitted model stays plain arrays for the artifact.
"""

from __future__ import annotations

import threading

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.preprocessing import normalize

KNN_CHUNK = 2048  # queries per similarity block: 2,048 x 12,000 float32 is ~100 MB
# Cells read per query: 20-neighbour recall 0.989 on the 12,000 fashion photos (0.954 with 8, 0.998 with 32, each
# step twice the search time). Cells are ~4 sqrt(n), each learned from CELL_SAMPLE rows (faiss asks for >= 39).
IVF_PROBES = 16
CELL_SAMPLE = 40
KMEANS_ITERATIONS = 10  # faiss's default 25 was a third of the build at 800,000 rows, for cells no better to search
# Rows the projection is learned from: 128 directions of a sample this size match those of every row (the SVD cost
# 69 of 386 s of a 60,000-product fit, 30 fits on all their rows, and grows linearly with them).
SVD_MAX_ROWS = 50_000
_REBUILD = threading.Lock()  # a service's request threads may be first to search a loaded index together


class NeighbourIndex:
    """`fit(X)` then `search(Q, k)` -> (similarities, indices) of the k most similar rows, best first."""

    def __init__(self, exact_max_rows: int = 20_000, components: int = 128, seed: int = 0):
        self.exact_max_rows = exact_max_rows
        self.components = components
        self.seed = seed

    @property
    def exact(self) -> bool:
        return self.projection_ is None

    def fit(self, X) -> "NeighbourIndex":
        self.n_rows_ = X.shape[0]
        self.projection_ = None
        if self.n_rows_ <= self.exact_max_rows:
            # Unit rows stored once, as columns: a query is then one matrix product. sklearn's brute cosine search
            # re-normalises the whole training matrix on every call (~20 ms per request on 12,000 photos).
            self.columns_ = transposed(unit_rows(X))
            return self
        n_components = min(self.components, X.shape[1] - 1)
        sample = X
        if self.n_rows_ > SVD_MAX_ROWS:
            sample = X[np.sort(np.random.default_rng(self.seed).choice(self.n_rows_, SVD_MAX_ROWS, replace=False))]
        svd = TruncatedSVD(n_components, algorithm="randomized", n_iter=3, random_state=self.seed).fit(sample)
        self.projection_ = svd.components_.T.astype(np.float32)
        self.columns_ = None
        self._ivf = _build_ivf(self._project(X), self.seed)
        return self

    def search(self, Q, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.n_rows_)
        if self.exact:
            return nearest(unit_rows(Q), self.columns_, k)
        sims, found = self._index().search(self._project(Q), k)
        # The cells read may hold fewer than k rows (-1): such slots point at row 0 with no similarity.
        missing = found < 0
        return np.where(missing, 0, sims).astype(np.float32), np.where(missing, 0, found)

    def _project(self, X) -> np.ndarray:
        """Unit rows projected and scaled to unit length again, KNN_CHUNK rows at a time: unit rows of a whole
        image block at once were one more copy of it (4 GB at 800,000 products) at the peak of training."""
        out = np.empty((X.shape[0], self.projection_.shape[1]), dtype=np.float32)
        for start in range(0, X.shape[0], KNN_CHUNK):
            out[start : start + KNN_CHUNK] = unit_rows(X[start : start + KNN_CHUNK]) @ self.projection_
        return normalize(out, copy=False)

    def _index(self):
        import faiss

        if getattr(self, "_ivf", None) is None:
            with _REBUILD:  # once per process from the stored bytes, which are then dropped: one thread only
                if getattr(self, "_ivf", None) is None:
                    self._ivf = faiss.deserialize_index(self.index_bytes_)
                    self.index_bytes_ = None
        return self._ivf

    def __getstate__(self) -> dict:
        # The live faiss object is not data: artifacts and worker processes get its bytes and rebuild it. The bytes
        # exist only then: beside the live index they were a second copy (0.6 GB at 800,000 products).
        import faiss

        state = {k: v for k, v in self.__dict__.items() if k != "_ivf"}
        if getattr(self, "_ivf", None) is not None:
            state["index_bytes_"] = faiss.serialize_index(self._ivf)
        return state


def _build_ivf(rows: np.ndarray, seed: int):
    """An inverted file of the unit rows: their k-means cells (learned from a seeded sample), the rows by cell in
    float16."""
    import faiss

    n, dim = rows.shape
    cells = max(1, min(int(4 * np.sqrt(n)), n // CELL_SAMPLE))
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim), dim, cells, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.niter, index.cp.seed = KMEANS_ITERATIONS, seed
    sample = min(n, CELL_SAMPLE * cells)
    index.train(rows[np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))])
    index.add(rows)
    # Stored with the index, not set per search: request threads share it, and a model saved with an HNSW graph
    # (mmgbm before 2026-12-04) still searches (faiss reads at least k of its candidates) instead of failing here.
    index.nprobe = IVF_PROBES
    return index


def transposed(X):
    """X.T in the layout `nearest` multiplies by: for sparse rows, CSR of the transpose, where a query's product
    reads only the columns (terms) it uses. Character n-grams put ~110 terms in a title: multiplying the rows by
    the query instead cost 4.9 ms per query on 9,600 titles, against 0.4 ms."""
    return X.T.tocsr() if sp.issparse(X) else X.T


def nearest(Q, XT, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) of the k rows of X most similar to each row of Q (both unit rows), best first,
    given `XT = transposed(X)`; in chunks of queries so memory stays bounded."""
    sims = np.empty((Q.shape[0], k), dtype=np.float32)
    index = np.empty((Q.shape[0], k), dtype=np.int64)
    for start in range(0, Q.shape[0], KNN_CHUNK):
        block = Q[start : start + KNN_CHUNK] @ XT
        if sp.issparse(block):
            block = block.toarray()
        top = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < block.shape[1] else np.argsort(-block, axis=1)
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        index[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        sims[start : start + len(block)] = np.take_along_axis(top_sims, order, axis=1)
    return sims, index


def unit_rows(X):
    """Rows scaled to unit length (zero rows stay zero)."""
    if sp.issparse(X):
        return normalize(sp.csr_matrix(X, dtype=np.float32))
    # numpy's own, not sklearn's normalize: its input validation costs more than the division on one-row queries.
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1)
