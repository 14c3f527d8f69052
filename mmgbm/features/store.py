"""The feature store: Parquet shards keyed by product id, each stamped with how its features were made.

One feature set lives in one folder of part-NNNNN.parquet files (mmgbm.workdir says which folder). Every shard is
written to a temporary file and renamed into place, so a crash leaves whole shards or nothing. Every shard carries
a fingerprint (backbone, weights hash, image size; vectorizer hash ...) in its Parquet metadata; a store opened
with a different fingerprint refuses to read or extend shards made another way instead of mixing them.
Rows are found by id, never by position: reading for a list of ids returns one row per id, in that order, with
missing ids as missing rows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from mmgbm.errors import MmgbmError

ID = "id"
FINGERPRINT_KEY = b"mmgbm.fingerprint"
# part-00012.parquet, or part-p3of8-00012.parquet when one of several machines writes its part of the products.
SHARD_RE = re.compile(r"^part-(?:(p\d+of\d+)-)?(\d{5,})\.parquet$")


class FeatureStore:
    """A folder of shards that share one fingerprint; dense (`embedding`) or sparse (`indices`, `values`)."""

    def __init__(self, root: Path, fingerprint: dict[str, Any], writer: str | None = None):
        self.root = Path(root)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))  # normalise tuples etc.
        # Machines extracting different parts into one shared folder each number their own shards (no clashes).
        self.writer = writer

    # ---- shards -------------------------------------------------------------------------------------------
    def shards(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if SHARD_RE.match(p.name))

    def check(self) -> None:
        """Refuse shards whose fingerprint differs from ours, naming the shard and what differs."""
        for shard in self.shards():
            theirs = read_fingerprint(shard)
            if theirs != self.fingerprint:
                keys = sorted(k for k in set(theirs) | set(self.fingerprint) if theirs.get(k) != self.fingerprint.get(k))
                diff = "; ".join(f"{k}: stored {theirs.get(k)!r} vs now {self.fingerprint.get(k)!r}" for k in keys[:3])
                raise MmgbmError(
                    f"{shard} was made differently ({diff}); re-run the extract command with --overwrite "
                    f"or delete {self.root}"
                )

    def present_ids(self) -> set[str]:
        """Ids already stored (after checking every shard matches), for incremental extraction."""
        self.check()
        ids: set[str] = set()
        for shard in self.shards():
            ids.update(pq.read_table(shard, columns=[ID]).column(ID).to_pylist())
        return ids

    def write_shard(self, table: pa.Table) -> Path:
        """Write one shard atomically; the fingerprint goes into its Parquet metadata."""
        if ID not in table.column_names:
            raise ValueError("a feature shard needs an 'id' column")
        self.root.mkdir(parents=True, exist_ok=True)
        mine = [SHARD_RE.match(p.name) for p in self.shards()]
        numbers = [int(m.group(2)) for m in mine if m.group(1) == self.writer]
        prefix = f"part-{self.writer}-" if self.writer else "part-"
        final = self.root / f"{prefix}{(max(numbers) + 1 if numbers else 0):05d}.parquet"
        meta = dict(table.schema.metadata or {})
        meta[FINGERPRINT_KEY] = json.dumps(self.fingerprint, sort_keys=True).encode()
        tmp = self.root / f".{final.name}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(table.replace_schema_metadata(meta), tmp)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def clear(self) -> None:
        """Remove the whole feature set (used by --overwrite)."""
        if self.root.exists():
            shutil.rmtree(self.root)

    # ---- reading ------------------------------------------------------------------------------------------
    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        self.check()
        shards = self.shards()
        if not shards:
            raise MmgbmError(f"no features in {self.root}; run the extract command first")
        return pa.concat_tables([pq.read_table(s, columns=columns) for s in shards])

    def _positions(self, stored_ids: list[str], ids: Sequence[str]) -> np.ndarray:
        """Row of each requested id in the stored table (-1 when absent); later shards win on repeats."""
        where = {pid: i for i, pid in enumerate(stored_ids)}
        return np.fromiter((where.get(str(pid), -1) for pid in ids), dtype=np.int64, count=len(ids))

    def read_dense(self, ids: Sequence[str], column: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
        """(n_ids, dim) float32 aligned to `ids`, NaN rows where an id has no features; and the present mask."""
        table = self.read_table([ID, column])
        values = table.column(column).combine_chunks()
        dim = values.type.list_size
        matrix = values.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
        pos = self._positions(table.column(ID).to_pylist(), ids)
        present = pos >= 0
        out = np.full((len(ids), dim), np.nan, dtype=np.float32)
        out[present] = matrix[pos[present]]
        return out, present

    def read_sparse(self, ids: Sequence[str], n_features: int) -> tuple[sp.csr_matrix, np.ndarray]:
        """CSR (n_ids, n_features) aligned to `ids`, empty rows where an id has no features; and the mask."""
        table = self.read_table([ID, "indices", "values"])
        idx = table.column("indices").combine_chunks()
        val = table.column("values").combine_chunks()
        stored = sp.csr_matrix(
            (
                val.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False),
                idx.values.to_numpy(zero_copy_only=False),
                idx.offsets.to_numpy(),
            ),
            shape=(len(table), n_features),
        )
        pos = self._positions(table.column(ID).to_pylist(), ids)
        present = pos >= 0
        # Missing ids point at an appended empty row, so the result keeps one row per requested id.
        padded = sp.vstack([stored, sp.csr_matrix((1, n_features), dtype=np.float32)], format="csr")
        return padded[np.where(present, pos, len(table))], present


def read_fingerprint(shard: Path) -> dict[str, Any]:
    try:
        meta = pq.read_schema(shard).metadata or {}
    except Exception as exc:  # a truncated or foreign file in the store folder
        raise MmgbmError(f"{shard}: unreadable feature shard ({exc}); delete it and re-run the extract command") from None
    if FINGERPRINT_KEY not in meta:
        raise MmgbmError(f"{shard}: not an mmgbm feature shard (no fingerprint); move it out of {shard.parent}")
    return json.loads(meta[FINGERPRINT_KEY])


def dense_table(ids: Sequence[str], matrix: np.ndarray) -> pa.Table:
    """A shard table for dense features: id + fixed-size float32 list."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    return pa.table({ID: pa.array([str(i) for i in ids], pa.string()),
                     "embedding": pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])})


def sparse_table(ids: Sequence[str], matrix: sp.csr_matrix) -> pa.Table:
    """A shard table for sparse features: id + (indices, values) lists taken straight from CSR, never densified."""
    matrix = sp.csr_matrix(matrix)
    offsets = pa.array(matrix.indptr.astype(np.int32))
    return pa.table({
        ID: pa.array([str(i) for i in ids], pa.string()),
        "indices": pa.ListArray.from_arrays(offsets, pa.array(matrix.indices.astype(np.int32))),
        "values": pa.ListArray.from_arrays(offsets, pa.array(matrix.data.astype(np.float32))),
    })
