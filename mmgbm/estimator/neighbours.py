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

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.preprocessing import normalize
from threadpoolctl import ThreadpoolController

KNN_CHUNK = 2048  # queries per similarity block: 2,048 x 12,000 float32 is ~100 MB
DENSE_TERM_SHARE = 16  # a term in 1/16 of the rows or more is multiplied densely (see TermSplit)
TOP_K_SAMPLE = 1024  # columns of a similarity block sampled to set the threshold of its rows' candidates
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

    def __init__(self, exact_max_rows: int = 20_000, components: int = 128, dense_dims: int = 0, seed: int = 0):
        self.exact_max_rows = exact_max_rows
        self.components = components
        self.dense_dims = dense_dims
        self.seed = seed

    @property
    def exact(self) -> bool:
        """Whether every stored row is compared with a query (in `dense_dims` directions for wide dense rows)."""
        return self.columns_ is not None

    def fit(self, X) -> "NeighbourIndex":
        self.n_rows_ = X.shape[0]
        self.projection_ = None
        if self.n_rows_ <= self.exact_max_rows:
            # Unit rows stored once, as columns: a query is then one matrix product. sklearn's brute cosine search
            # re-normalises the whole training matrix on every call (~20 ms per request on 12,000 photos).
            if sp.issparse(X) or not 0 < self.dense_dims < X.shape[1]:
                self.columns_ = transposed(unit_rows(X))
                return self
            # Wide dense rows (1,280-d photo embeddings) are compared in their first dense_dims SVD directions: the
            # product with every row was a quarter of predicting a fashion target, and 256 of 1,280 directions keep
            # 90% of each photo's 20 nearest.
            self.projection_ = self._learned_projection(X, self.dense_dims)
            self.columns_ = transposed(self._project(X))
            return self
        self.projection_ = self._learned_projection(X, self.components)
        self.columns_ = None
        self._ivf = _build_ivf(self._project(X), self.seed)
        return self

    def _learned_projection(self, X, components: int) -> np.ndarray:
        """The first `components` directions of a truncated SVD of (a sample of) the rows, as columns."""
        sample = X
        if self.n_rows_ > SVD_MAX_ROWS:
            sample = X[np.sort(np.random.default_rng(self.seed).choice(self.n_rows_, SVD_MAX_ROWS, replace=False))]
        n_components = min(components, X.shape[1] - 1)
        svd = TruncatedSVD(n_components, algorithm="randomized", n_iter=3, random_state=self.seed).fit(sample)
        return svd.components_.T.astype(np.float32)

    def search(self, Q, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.n_rows_)
        if self.exact:
            return nearest(unit_rows(Q) if self.projection_ is None else self._project(Q), self._searched(), k)
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

    def _searched(self):
        """What exact search multiplies queries by: the stored columns, or for sparse ones their `TermSplit`, made
        once per process (it is derived data: artifacts keep the columns only)."""
        if not sp.issparse(self.columns_):
            return self.columns_
        if getattr(self, "_split", None) is None:
            with _REBUILD:
                if getattr(self, "_split", None) is None:
                    self._split = TermSplit(self.columns_)
        return self._split

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

        state = {k: v for k, v in self.__dict__.items() if k not in ("_ivf", "_split")}
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


class TermSplit:
    """Sparse columns (terms x rows) split for the product with queries: the terms in at least 1/DENSE_TERM_SHARE
    of the rows as a dense matrix (BLAS), the rest sparse. A title shares a common word with nearly every other,
    so the all-sparse product was a dense result built by scipy one term at a time: 4.6 s against 1.0 s for 9,640
    queries on 9,587 fashion titles (300 dense terms, 11 MB)."""

    def __init__(self, XT: sp.csr_matrix):
        frequent = np.diff(XT.indptr) * DENSE_TERM_SHARE >= XT.shape[1]
        self.dense_terms, self.sparse_terms = np.flatnonzero(frequent), np.flatnonzero(~frequent)
        self.dense = XT[self.dense_terms].toarray()
        self.sparse = XT[self.sparse_terms].tocsr()

    def __rmatmul__(self, Q) -> np.ndarray:
        Q = sp.csr_matrix(Q)
        return (Q[:, self.sparse_terms] @ self.sparse).toarray() + Q[:, self.dense_terms].toarray() @ self.dense


def nearest(Q, XT, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) of the k rows of X most similar to each row of Q (both unit rows), best first (ties
    by row order), given `XT = transposed(X)`; in chunks of queries so memory stays bounded, two at a time: scipy's
    sparse product and the selection below release the interpreter lock. The two chunks' products then run on one
    BLAS thread each: two chunks each asking both cores for BLAS threads took up to 1.5x as long (a kNN head on 46
    class scores: 0.25 s against 0.17 s for 10,000 queries). The limit is the process's while the pair runs."""
    sims = np.empty((Q.shape[0], k), dtype=np.float32)
    index = np.empty((Q.shape[0], k), dtype=np.int64)

    def chunk(start: int) -> None:
        block = Q[start : start + KNN_CHUNK] @ XT
        if sp.issparse(block):
            block = block.toarray()
        index[start : start + len(block)], sims[start : start + len(block)] = top_k(block, k)

    starts = range(0, Q.shape[0], KNN_CHUNK)
    if len(starts) == 1:  # one request's products: no pool to start
        chunk(0)
    else:
        with _blas().limit(limits=1, user_api="blas"), ThreadPoolExecutor(2, thread_name_prefix="mmgbm-knn") as pool:
            list(pool.map(chunk, starts))
    return sims, index


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's BLAS libraries, found once (finding them reads every loaded library)."""
    return ThreadpoolController()


def top_k(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, values) of each row's k largest values, largest first, ties by column. Exact, without sorting or
    partitioning whole rows (that was 70% of a search of 127-wide rows): a row's candidates are its values at or above a
    threshold that a strided sample of its columns puts at ~4k expected values; a row with fewer than k of them
    (~1 in 500) is sorted whole."""
    n_rows, n = block.shape
    if k >= n or n < TOP_K_SAMPLE * 4:
        return _sorted_top_k(block, k)
    sample = block[:, :: n // TOP_K_SAMPLE]
    rank = min(sample.shape[1] - 1, int(np.ceil(4 * k * sample.shape[1] / n)))
    threshold = np.partition(sample, sample.shape[1] - rank, axis=1)[:, -rank]
    # Flat positions, split after: np.nonzero of the 2-D mask took 8x as long.
    rows, cols = np.divmod(np.flatnonzero(block >= threshold[:, None]), n)
    counts = np.bincount(rows, minlength=n_rows)
    values = block[rows, cols]
    # By row, then value (largest first), then column (the stable sort keeps the flat positions' order): one key,
    # as a row's values lie in [-1, 1] (unit rows), each row 4 apart; a three-key lexsort took twice as long.
    order = np.argsort(rows * 4.0 - values, kind="stable")
    first = np.cumsum(counts) - counts
    take = order[np.minimum(first[:, None] + np.arange(k), len(order) - 1)]
    columns, top = cols[take], values[take]
    short = np.flatnonzero(counts < k)
    if len(short):
        columns[short], top[short] = _sorted_top_k(block[short], k)
    return columns, top


def _sorted_top_k(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-block, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(block, order, axis=1)


def unit_rows(X):
    """Rows scaled to unit length (zero rows stay zero)."""
    if sp.issparse(X):
        return normalize(sp.csr_matrix(X, dtype=np.float32))
    # numpy's own, not sklearn's normalize: its input validation costs more than the division on one-row queries.
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1)
