"""The feature store: Parquet shards keyed by product id, each stamped with how its features were made.

One feature set lives in one folder of part-*.parquet files (mmgbm.workdir says which folder), on a file system or
on object storage (mmgbm.features.folder). Every shard appears whole or not at all (written to a temporary file and
renamed into place, or uploaded in one piece), so a crash or a full disk leaves whole shards or nothing. Shard
names carry the writing time and a random part, so concurrent writers (two runs, or the workers of a Dask cluster
on a shared store) never pick the same name; the time orders them. Every shard carries a
fingerprint (backbone, weights hash, image size; vectorizer hash ...) in its Parquet metadata; a store opened with a
different fingerprint refuses to read or extend shards made another way instead of mixing them.
Rows are found by id, never by position: reading for a list of ids returns one row per id, in that order, with
missing ids as missing rows. An id stored twice (two concurrent runs, or a product re-extracted after it changed)
is read from the newest shard. Each row may record its `source`: what its features were made from (a hash of the
text, the image file's size and time), so products that changed since can be found and re-extracted, and its
`content`: a hash of the bytes they were made from, so a row can be stored again under another id or source without
making it again (`write_copies`). An extraction ends by removing the shards whose every row a newer shard holds, and
with `keep`, the rows of products no longer in the catalogue (`compact`): every read reads every shard whole.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
import uuid
import warnings
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from mmgbm.errors import MmgbmError, MmgbmWarning, first_line
from mmgbm.features.folder import LocalFolder, ObjectFolder, StorageError, folder

ID = "id"
SOURCE = "source"
CONTENT = "content"
RECORDS = (ID, SOURCE, CONTENT)  # what a row records of itself, beside its features
FINGERPRINT_KEY = b"mmgbm.fingerprint"
# part-<ns since 1970>-<random>.parquet. Older stores also hold part-00012.parquet (which sorts first) and
# part-p3of8-<ns>-<random>.parquet, written by the machines of the former `extract-images --part 3/8`.
SHARD_RE = re.compile(r"^part-(?:(p\d+of\d+)-)?(\d{5,})(?:-[0-9a-f]{8})?\.parquet$")
# A shard that cannot be read is renamed with this suffix by the next extraction, which then redoes its products.
QUARANTINE_SUFFIX = ".damaged"


class ShardVanished(MmgbmError):
    """A listed shard was removed before it was read: a writer compacted the store (`FeatureStore.compact`)."""


class Copy(NamedTuple):
    """A stored row to write again: the newest row of id `of`, stored as product `id`, made from `source` whose
    bytes hash to `content`."""

    of: str
    id: str
    source: str | None
    content: str | None


class Compaction(NamedTuple):
    removed: int  # shards deleted (one written again without the pruned rows included)
    pruned: int  # products dropped because they are not among those kept


class Mixable(NamedTuple):
    """Fingerprint keys whose differences a user may accept (features made another way that agree closely enough),
    whether they did, and what the refusal advises where only these keys differ."""

    keys: tuple[str, ...]
    accepted: bool
    advice: str


class FeatureStore:
    """A folder of shards that share one fingerprint; dense (`embedding`) or sparse (`indices`, `values`).

    `implied` gives the value a shard stands for where its fingerprint lacks a key (shards made before a setting
    existed); `mixable`, the keys a store may be told to mix."""

    def __init__(
        self,
        root: Path | str | LocalFolder | ObjectFolder,
        fingerprint: dict[str, Any],
        implied: dict[str, Any] | None = None,
        mixable: Mixable | None = None,
    ):
        self.folder = root if isinstance(root, (LocalFolder, ObjectFolder)) else folder(root)
        self.root = self.folder.root  # a Path, or the URL of a prefix on object storage
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))  # normalise tuples etc.
        self.implied = implied or {}
        self.mixable = mixable
        self.quarantined: list[Path | str] = []  # damaged shards prepare_writing() set aside
        self._schemas: dict[str, pa.Schema] = {}

    # ---- shards -------------------------------------------------------------------------------------------
    def shards(self) -> list[Path | str]:
        """Oldest first, whichever writer made them, so that "the newest shard wins" means the newest write."""
        found = [(int(m.group(2)), name) for name in self.folder.names() if (m := SHARD_RE.match(name))]
        return [self.folder.address(name) for _, name in sorted(found)]

    def check(self) -> list[Path | str]:
        """The shards, once each is known to carry our fingerprint; refuses one that does not, naming the shard and
        what differs."""
        shards = self.shards()
        ours = {**self.implied, **self.fingerprint}
        mixed = set(self.mixable.keys) if self.mixable and self.mixable.accepted else set()
        for shard, theirs in zip(shards, self._map(self._fingerprint_of, shards)):
            theirs = {**self.implied, **theirs}
            keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k) and k not in mixed)
            if keys:
                diff = "; ".join(f"{k}: stored {theirs.get(k)!r} vs now {ours.get(k)!r}" for k in keys[:3])
                advice = f"re-run the extract command with --overwrite or delete {self.root}"
                if self.mixable and set(keys) <= set(self.mixable.keys):
                    advice += f"; {self.mixable.advice}"
                raise MmgbmError(f"{shard} was made differently ({diff}); {advice}")
        return shards

    def made_as(self) -> dict[str, Any] | None:
        """The fingerprint of the newest readable shard (how the store is being extended), None without one."""
        for shard in reversed(self.shards()):
            try:
                return self._fingerprint_of(shard)
            except StorageError:
                raise
            except MmgbmError:  # a damaged shard, which the next writer sets aside
                continue
        return None

    def sources(self) -> dict[str, str | None]:
        """Every stored id and what its features were made from (None where not recorded), newest shard winning."""
        return self._recorded(SOURCE)

    def contents(self) -> dict[str, str | None]:
        """Every stored id and the hash of the bytes its features were made from (None where not recorded)."""
        return self._recorded(CONTENT)

    def _recorded(self, column: str) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for table in self._read_all(
            lambda shard: self._read(shard, [ID, column] if column in self._schema(shard).names else [ID])
        ):
            values = table.column(column).to_pylist() if column in table.column_names else [None] * len(table)
            out.update(zip(table.column(ID).to_pylist(), values))
        return out

    def present_ids(self) -> set[str]:
        return set(self.sources())

    def prepare_writing(self) -> dict[str, str | None]:
        """A writer's first look at the store: remove what killed writers left, set aside shards that cannot be
        read (whole, on a file system; their products are then extracted again), and return `sources()` for
        incremental extraction."""
        self.folder.remove_orphans()

        def damaged(shard: Path | str) -> bool:
            try:
                self._fingerprint_of(shard)
                if self.folder.verify_whole_files:
                    self._read(shard, None)
                return False
            except StorageError:  # the store cannot be reached: nothing is known of the shard
                raise
            except MmgbmError:
                return True

        shards = self.shards()
        for shard in (shard for shard, bad in zip(shards, self._map(damaged, shards)) if bad):
            try:
                self.folder.rename(_name(shard), _name(shard) + QUARANTINE_SUFFIX)
                self.quarantined.append(shard)
            except FileNotFoundError:  # a concurrent writer set it aside first
                pass
        return self.sources()

    def write_shard(self, table: pa.Table, written_at: int | None = None) -> Path | str:
        """Write one shard atomically under a name no other writer can pick; the fingerprint goes into its
        Parquet metadata. `written_at` (ns) places it among the others as if written then (a shard rewritten by
        `compact`), rather than now."""
        if ID not in table.column_names:
            raise ValueError("a feature shard needs an 'id' column")
        meta = dict(table.schema.metadata or {})
        meta[FINGERPRINT_KEY] = json.dumps(self.fingerprint, sort_keys=True).encode()
        stamped = table.replace_schema_metadata(meta)
        at = time.time_ns() if written_at is None else written_at
        return self.folder.write(
            f"part-{at:05d}-{uuid.uuid4().hex[:8]}.parquet", lambda tmp: pq.write_table(stamped, tmp)
        )

    def write_copies(self, copies: Sequence[Copy], shard_size: int) -> int:
        """Store each copy's row again under its id, source and content, in shards of `shard_size` rows; returns
        the shards written. The rows are read as they are before any is written, so a copy of a product that is
        itself copied here takes its row as it was."""
        if not copies:
            return 0
        stored = self.read_rows({c.of for c in copies})
        where = {pid: i for i, pid in enumerate(stored.column(ID).to_pylist())}
        written = 0
        for start in range(0, len(copies), shard_size):
            part = copies[start : start + shard_size]
            table = stored.take([where[c.of] for c in part]).set_column(
                0, ID, pa.array([c.id for c in part], pa.string())
            )
            table = table.append_column(SOURCE, pa.array([c.source for c in part], pa.string()))
            self.write_shard(table.append_column(CONTENT, pa.array([c.content for c in part], pa.string())))
            written += 1
        return written

    def read_rows(self, ids: Collection[str]) -> pa.Table:
        """The newest stored row of each of `ids` the store holds, its id and features only (in no set order):
        only the shards that hold one are read whole."""
        asked = pa.array(list(ids), pa.string())

        def wanted(shard: Path | str) -> pa.Table | None:
            held = pc.is_in(self._read(shard, [ID]).column(ID), asked)
            if not pc.any(held).as_py():
                return None
            features = [c for c in self._schema(shard).names if c not in RECORDS]
            return self._read(shard, [ID, *features]).filter(held)

        tables = [t for t in self._read_all(wanted) if t is not None]
        if not tables:
            return pa.table({ID: pa.array([], pa.string())})
        table = pa.concat_tables(tables)
        newest = {pid: i for i, pid in enumerate(table.column(ID).to_pylist())}  # later shards come later
        return table.take(sorted(newest.values()))

    def compact(self, keep: Collection[str] | None = None) -> Compaction:
        """Remove the shards whose every row a newer shard holds (products extracted again after their photo or text
        changed): each read of the store reads every shard whole, so after a catalogue's photos were all
        re-embedded, the old shards were half of what predicting read. With `keep`, the rows of every other product
        go too (products no longer in the catalogue): a shard that holds some is written again without them, in its
        place in the order of shards, before it is removed. The newest row of a kept id is never lost, so readers
        that listed a removed shard meanwhile find its rows on listing again (`_read_all`), and two writers
        compacting at once remove nothing the other still needs."""
        held: set[str] = set()
        removed, pruned = 0, set()
        # Listed through `_read_all`: a second writer compacting at once (text extraction takes no lock) may remove
        # a shard between this one's listing and its read.
        for shard, ids in reversed(
            self._read_all(lambda shard: (shard, self._read(shard, [ID]).column(ID).to_pylist()))
        ):
            dropped = {pid for pid in ids if pid not in keep} if keep is not None else set()
            live = [i for i, pid in enumerate(ids) if pid not in held and pid not in dropped]
            if dropped and live:
                self.write_shard(self._read(shard, None).take(live), written_at=_written_at(shard))
            if not live or dropped:
                self.folder.delete(_name(shard))
                removed += 1
            held.update(ids)
            pruned |= dropped
        return Compaction(removed, len(pruned))

    def clear(self) -> None:
        """Remove the whole feature set (used by --overwrite)."""
        self.folder.remove()

    # ---- reading ------------------------------------------------------------------------------------------
    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        tables = self._read_all(lambda shard: self._read(shard, columns))
        if not tables:
            raise MmgbmError(f"no features in {self.root}; run the extract command first")
        return pa.concat_tables(tables)

    def _read_all(self, read: Callable[[Path | str], Any], attempts: int = 5) -> list[Any]:
        """`read` of every shard, oldest first; listed again where a shard vanished between the listing and its
        read (a writer's `compact`, which removes only rows a newer shard holds)."""
        for attempt in range(attempts):
            try:
                return self._map(read, self.check())
            except ShardVanished:
                if attempt == attempts - 1:
                    raise

    def _positions(self, stored_ids: list[str], ids: Sequence[str]) -> np.ndarray:
        """Row of each requested id in the stored table (-1 when absent); later shards win on repeats."""
        where = {pid: i for i, pid in enumerate(stored_ids)}
        return np.fromiter((where.get(str(pid), -1) for pid in ids), dtype=np.int64, count=len(ids))

    def read_sources(self, ids: Sequence[str]) -> list[str | None]:
        """What the stored features of each id were made from (None where absent or not recorded)."""
        stored = self.sources()
        return [stored.get(str(pid)) for pid in ids]

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

    # ---- one shard ----------------------------------------------------------------------------------------
    def _map(self, fn: Callable[[Path | str], Any], shards: list[Path | str]) -> list[Any]:
        """`fn` of every shard, in order; on object storage many at once, each waiting on its own requests."""
        if self.folder.read_threads == 1 or len(shards) < 2:
            return [fn(shard) for shard in shards]
        with ThreadPoolExecutor(self.folder.read_threads) as pool:
            return list(pool.map(fn, shards))

    def _schema(self, shard: Path | str) -> pa.Schema:
        """Its Parquet schema, read once per store object: a shard is never rewritten under its name."""
        name = _name(shard)
        if name not in self._schemas:
            try:
                with self.folder.open(name) as source:
                    self._schemas[name] = pq.read_schema(source)
            except FileNotFoundError:
                raise _vanished(shard) from None
            except StorageError:
                raise
            except Exception as exc:  # a truncated or foreign file in the store folder
                raise _damaged(shard, exc) from None
        return self._schemas[name]

    def _fingerprint_of(self, shard: Path | str) -> dict[str, Any]:
        meta = self._schema(shard).metadata or {}
        if FINGERPRINT_KEY not in meta:
            raise MmgbmError(f"{shard}: not an mmgbm feature shard (no fingerprint); move it out of {self.root}")
        return json.loads(meta[FINGERPRINT_KEY])

    def _read(self, shard: Path | str, columns: list[str] | None) -> pa.Table:
        try:
            with self.folder.open(_name(shard)) as source:
                return pq.read_table(source, columns=columns)
        except FileNotFoundError:
            raise _vanished(shard) from None
        except StorageError:
            raise
        except Exception as exc:  # a damaged page surfaces as OSError, ArrowInvalid ... depending on where it is hit
            raise _damaged(shard, exc) from None


def _name(shard: Path | str) -> str:
    return posixpath.basename(str(shard))


def _written_at(shard: Path | str) -> int:
    return int(SHARD_RE.match(_name(shard)).group(2))


def _vanished(shard: Path | str) -> ShardVanished:
    return ShardVanished(f"{shard}: removed while it was being read; run the command again")


def _damaged(shard: Path | str, exc: Exception) -> MmgbmError:
    first = first_line(exc) or type(exc).__name__
    return MmgbmError(
        f"{shard}: unreadable feature shard ({first}); delete it and re-run the extract command, "
        f"which redoes only the products it held"
    )


def dense_table(
    ids: Sequence[str],
    matrix: np.ndarray,
    sources: Sequence[str] | None = None,
    contents: Sequence[str | None] | None = None,
) -> pa.Table:
    """A shard table for dense features: id + fixed-size float32 list (+ what each row was made from, and the hash
    of its bytes)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    return _with_sources(
        {
            ID: pa.array([str(i) for i in ids], pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]),
        },
        sources,
        contents,
    )


def sparse_table(ids: Sequence[str], matrix: sp.csr_matrix, sources: Sequence[str] | None = None) -> pa.Table:
    """A shard table for sparse features: id + (indices, values) lists taken straight from CSR, never densified."""
    matrix = sp.csr_matrix(matrix)
    offsets = pa.array(matrix.indptr.astype(np.int32))
    return _with_sources(
        {
            ID: pa.array([str(i) for i in ids], pa.string()),
            "indices": pa.ListArray.from_arrays(offsets, pa.array(matrix.indices.astype(np.int32))),
            "values": pa.ListArray.from_arrays(offsets, pa.array(matrix.data.astype(np.float32))),
        },
        sources,
    )


def _with_sources(
    columns: dict[str, pa.Array], sources: Sequence[str] | None, contents: Sequence[str | None] | None = None
) -> pa.Table:
    if sources is not None:
        columns[SOURCE] = pa.array(list(sources), pa.string())
    if contents is not None:
        columns[CONTENT] = pa.array(list(contents), pa.string())
    return pa.table(columns)


def kept_when_pruning(stores: Sequence[FeatureStore], ids: Collection[str], max_share: float) -> set[str] | None:
    """The products a pruning compaction of `stores` keeps: `ids`, unless more than `max_share` of the stored products
    would go at once, which looks like a feed that arrived truncated: then none goes (None) and a note says so."""
    keep = set(ids)
    stored = set().union(*(store.present_ids() for store in stores))
    gone = len(stored - keep)
    if gone <= max_share * len(stored):
        return keep
    warnings.warn(
        f"{gone:,} of the {len(stored):,} products in {stores[0].folder} ({100 * gone / len(stored):.0f}%) are in no "
        f"split: none pruned, as that is more than features.max_prune ({100 * max_share:g}%); is the feed complete? "
        f"Set features.max_prune: 1 to prune them",
        MmgbmWarning,
        stacklevel=2,
    )
    return None
