"""Frozen EfficientNet image embeddings and colour statistics for every product, streamed into the feature stores.

The pipeline decodes and resizes images in a pool of threads (a PIL decoder that accepts anything a seller
uploads; PIL lets go of the GIL while it decodes and resizes) while the encoder runs the batches before them: on
OpenVINO as many requests in flight as it asks for. Each photo is decoded once: the same decode gives the
encoder's input and the colour statistics. A shard is written each time `shard_size` rows are ready, so memory stays
flat whatever the catalogue size and a killed run loses at most one shard. Products whose image cannot be read get
neither (a missing value downstream), are listed in `failures.csv` next to the shards, and are retried by the next
run. Each row records the image file's path, size and modification time (a photo URL's validators: ETag,
Last-Modified, size), so a product whose photo changed is extracted again (and read as having no image until then),
and a hash of the file's bytes: where the path, size or time changed (a folder copied, moved or restored), the file
is hashed, and bytes already embedded, for this product or another, are stored again under the new path instead of
being decoded and embedded again; of several products with the same bytes, one is embedded and the others copy it.
So an unchanged catalogue costs one listing of its photos, and a moved one a read of each photo, not a forward pass.
Photos by URL (mmgbm.features.photo_fetch) enter the decoders as they arrive, so a slow host holds only its own. This
is the only writer of the image stores, one run at a time (mmgbm.stores.extract_images holds the store's lock,
mmgbm.features.store_lock): training and prediction only read them. On a Dask cluster (mmgbm.cluster) the work is
cut into parts of `shard_size` products: each worker builds its encoder once, extracts the parts it is given and
writes their shards itself; this process only decides what needs doing and lists the failures.
"""

from __future__ import annotations

import csv
import os
import posixpath
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from mmgbm.cluster import run_parts
from mmgbm.features import colour
from mmgbm.features.folder import LocalFolder, ObjectFolder
from mmgbm.features.image_decoding import UnreadableImage, content_hash, decode_image, decode_image_bytes
from mmgbm.features.image_encoder import ImageEncoder, Tag
from mmgbm.features.image_runtime import EncoderChoice
from mmgbm.features.photo_fetch import FetchStream, source_url
from mmgbm.features.photos import Photos
from mmgbm.features.store import Copy, FeatureStore, dense_table, kept_when_pruning

if TYPE_CHECKING:
    from distributed import Client

    from mmgbm.config import ImageFeaturesConfig

# Decoding threads: PIL lets go of the GIL while it decodes and resizes, so one per core keeps decoding beside the
# encoder's own threads; batches decoded ahead of the encoder, so it never waits on a slow photo.
DECODE_THREADS = os.cpu_count() or 1
DECODE_AHEAD = 4
FAILURES_FILE = "failures.csv"  # beside the embeddings


@dataclass(frozen=True)
class ImageSource:
    """What the image features of a catalogue are made from and kept in: the `features.image` settings with the
    runtime and precision chosen (`choice`, so every machine makes what the store's fingerprint names), the column
    and the photos it names, and the folder of the embeddings' and the colour statistics' stores."""

    settings: ImageFeaturesConfig
    choice: EncoderChoice
    column: str
    photos: Photos
    folder: LocalFolder | ObjectFolder
    embeddings: FeatureStore
    colours: FeatureStore


@dataclass
class ImageExtractionSummary:
    products: int
    extracted: int  # new embeddings, each with its colour statistics
    coloured: int  # colour statistics added to embeddings stored before extraction made them
    skipped: int
    failures: dict[str, int]
    failures_path: Path | str
    store_root: Path | str  # holds the embeddings' and the colour statistics' stores
    seconds: float  # the whole call: reading the catalogue, building the model, embedding
    embedding_seconds: float = 0.0  # the decode + forward + write loop alone: what photos/s is measured on
    shards_written: int = 0
    quarantined: list[Path | str] = field(default_factory=list)  # damaged shards set aside; their products were redone
    checked: int = 0  # photo URLs embedded before, asked whether they changed
    changed: int = 0  # of those, the ones that did (embedded again)
    moved: int = 0  # photos under a new path, size or time whose bytes were embedded before: stored again, not embedded
    shared: int = 0  # photos whose bytes another product's embedding was made from: its rows copied
    hashed: int = 0  # products stored before hashes were kept, their photo's hash recorded now
    pruned: int = 0  # products in no split any more, removed from the stores
    encoder: str = ""  # the runtime and precision that made the embeddings, and why where a setting was `auto`

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def images_per_second(self) -> float:
        done = self.extracted + self.coloured + self.failed
        return done / self.embedding_seconds if self.embedding_seconds > 0 else 0.0

    def describe(self) -> str:
        # A rate only where photos were decoded: failures found by a look at the path cost next to nothing.
        rate = f" ({self.images_per_second:.1f} photos/s while embedding)" if self.extracted + self.coloured else ""
        lines = [
            f"{self.products:,} products: {self.extracted:,} embedded, {self.skipped:,} already stored, "
            f"{self.failed:,} failed",
            f"{self.seconds:.1f} s{rate}, {self.shards_written} new shards in {self.store_root}",
        ]
        if self.extracted:
            lines.insert(1, f"embedded by {self.encoder}")
        if self.moved:
            lines.insert(1, f"{self.moved:,} photos unchanged under a new path or time: stored again, not embedded")
        if self.shared:
            lines.insert(1, f"{self.shared:,} photos identical to another product's: its embedding copied")
        if self.hashed:
            lines.insert(1, f"content hashes recorded for {self.hashed:,} photos embedded before hashes were kept")
        if self.pruned:
            lines.append(f"{self.pruned:,} products no longer in any split pruned")
        if self.checked:
            lines.insert(
                1, f"{self.checked:,} photo URLs embedded before checked for changes: {self.changed:,} changed"
            )
        if self.coloured:
            lines.insert(1, f"colour statistics added for {self.coloured:,} products embedded before")
        if self.quarantined:
            lines.append(
                f"{len(self.quarantined)} damaged shard(s) set aside (renamed *.damaged) and their products "
                f"extracted again: {', '.join(posixpath.basename(str(p)) for p in self.quarantined)}"
            )
        if self.failed:
            reasons = ", ".join(f"{reason}: {n:,}" for reason, n in sorted(self.failures.items(), key=lambda r: -r[1]))
            lines.append(f"failures by reason ({reasons}); listed in {self.failures_path}")
        return "\n".join(lines)


@dataclass
class _ShardWriter:
    """Collects rows of one store and writes a shard each time `shard_size` of them are ready."""

    store: FeatureStore
    shard_size: int
    ids: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    contents: list[str | None] = field(default_factory=list)
    written: int = 0

    def add(self, ids: list[str], sources: list[str], contents: list[str | None], matrix: np.ndarray) -> None:
        self.ids.extend(ids)
        self.rows.extend(matrix)
        self.sources.extend(sources)
        self.contents.extend(contents)
        while len(self.ids) >= self.shard_size:
            self._write(self.shard_size)

    def flush(self) -> None:
        if self.ids:
            self._write(len(self.ids))

    def _write(self, n: int) -> None:
        self.store.write_shard(dense_table(self.ids[:n], np.stack(self.rows[:n]), self.sources[:n], self.contents[:n]))
        del self.ids[:n], self.rows[:n], self.sources[:n], self.contents[:n]
        self.written += 1


@dataclass
class _Work:
    """Products to extract, one entry each: id, absolute image path, what the file is now (its source) and the
    hash of its bytes (None for a URL), whether the embedding store and the colour store lack it, and the photos to
    fetch in turn where it is a URL (else None). A cluster's workers each take a slice."""

    ids: list[str]
    paths: list[str]
    sources: list[str | None]
    contents: list[str | None]
    embed: np.ndarray
    measure: np.ndarray
    urls: list[list[str] | None]

    @classmethod
    def of(
        cls,
        rows: np.ndarray,
        ids: list[str],
        paths: list[str],
        sources: list[str | None],
        contents: list[str | None],
        needs: list[np.ndarray],
        urls: list[list[str] | None],
    ) -> "_Work":
        """The products at `rows` of the catalogue's lists (`needs`: per store, whether each is work for it)."""
        return cls(
            *([column[i] for i in rows] for column in (ids, paths, sources, contents)),
            needs[0][rows],
            needs[1][rows],
            [urls[i] for i in rows],
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, rows: slice) -> "_Work":
        return _Work(
            self.ids[rows],
            self.paths[rows],
            self.sources[rows],
            self.contents[rows],
            self.embed[rows],
            self.measure[rows],
            self.urls[rows],
        )


@dataclass
class _Done:
    """What extracting some `_Work` did."""

    embedded: int = 0
    coloured: int = 0  # products that only lacked colour statistics
    shards: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (id, path, reason)
    seconds: float = 0.0  # the decode + forward + write loop

    @property
    def products(self) -> int:
        return self.embedded + self.coloured + len(self.failures)

    @classmethod
    def total(cls, parts: list["_Done"], seconds: float) -> "_Done":
        """The parts' sum; they ran side by side, so their loop times do not add up: `seconds` is the wall time."""
        return cls(
            sum(p.embedded for p in parts),
            sum(p.coloured for p in parts),
            sum(p.shards for p in parts),
            [failure for p in parts for failure in p.failures],
            seconds,
        )


def extract_images(
    source: ImageSource,
    products: pd.DataFrame,
    id_column: str,
    *,
    prune: bool = False,
    max_prune: float = 1.0,
    progress: bool = False,
    client: Client | None = None,
) -> ImageExtractionSummary:
    """Embed the image of every product of `products` that the stores do not hold yet, and take its colour
    statistics from the same decode. A product is work to do when either store lacks it; the forward pass runs only
    for those without an embedding (a workdir made before colour statistics were extracted gets them), and only
    once for bytes already embedded or shared by several products (their rows are copied). With a Dask
    `client`, the work is cut into parts of `shard_size` products that the workers extract and store themselves.
    With `prune`, the stores' products that are not among `products` are removed from them."""
    start = time.perf_counter()
    stores = (source.embeddings, source.colours)
    ids = products[id_column].tolist()
    plan = _plan(source, ids, products[source.column])
    work, step = plan.work, source.settings.shard_size
    # Copied before the extraction writes anything: a copy takes the row as stored, even of a product embedded anew.
    shards = sum(store.write_copies(r.copies, step) for store, r in zip(stores, plan.reused))

    with _progress_bar(len(work), enabled=progress) as advance:
        if client is None:
            done = _extract(source, work, lambda: _new_encoder(source.settings).fit(), advance)
        else:
            parts = [work[i : i + step] for i in range(0, len(work), step)]
            started = time.perf_counter()
            done = run_parts(client, _extract_on_worker, parts, lambda part: advance(part.products), source=source)
            done = _Done.total(done, time.perf_counter() - started)  # the workers' model builds included

    made_once, failed_too = _drop_failed(plan.made_once, done.failures, dict(zip(ids, plan.paths)))
    shards += sum(store.write_copies(copies, step) for store, copies in zip(stores, made_once))
    failures = done.failures + failed_too
    _write_failures(stores[0].folder, FAILURES_FILE, failures)
    keep = kept_when_pruning(stores, ids, max_prune) if prune else None
    pruned = max(store.compact(keep).pruned for store in stores)
    moved = {c.id for r in plan.reused for c in r.moved}
    shared = {c.id for copies in [r.shared for r in plan.reused] + made_once for c in copies}
    untouched = set(ids) - set(work.ids) - moved - shared - {pid for pid, _, _ in failed_too}
    return ImageExtractionSummary(
        products=len(ids),
        extracted=done.embedded,
        coloured=done.coloured,
        skipped=len(untouched),
        failures=dict(Counter(reason for _, _, reason in failures)),
        failures_path=stores[0].folder.address(FAILURES_FILE),
        store_root=source.folder.root,
        seconds=time.perf_counter() - start,
        embedding_seconds=done.seconds,
        shards_written=done.shards + shards,
        quarantined=stores[0].quarantined + stores[1].quarantined,
        checked=plan.checked,
        changed=plan.changed,
        moved=len(moved),
        shared=len(shared),
        hashed=len({c.id for r in plan.reused for c in r.hashed} - moved - shared),
        pruned=pruned,
        encoder=source.choice.describe(),
    )


@dataclass
class _Plan:
    """What an extraction is to do: the work to decode (and embed), per store the stored rows to copy instead, and
    the copies of products whose bytes another product is made from in this run; the products' photo paths, and
    the photo URLs asked whether they changed."""

    work: _Work
    reused: list[_Reused]
    made_once: list[list[Copy]]
    paths: list[str]
    checked: int
    changed: int


def _plan(source: ImageSource, ids: list[str], column: pd.Series) -> _Plan:
    """A product is work for a store that lacks it as its photo is now, unless that store holds a row made from the
    same bytes (its own under another path or time, or another product's), or another product with the same bytes
    is made in this run."""
    stores = (source.embeddings, source.colours)
    paths, urls, sources = source.photos.locate(column)
    stored = [store.prepare_writing() for store in stores]
    checked, changed = _check_urls(source.photos, ids, urls, sources, *stored)
    needs = [_needs_work(s, ids, sources) for s in stored]
    contents = [store.contents() for store in stores]
    unhashed = [
        np.array([pid in s and c.get(pid) is None for pid in ids], dtype=bool) for s, c in zip(stored, contents)
    ]
    # Only files whose row is to be made or lacks a hash are read: an unchanged catalogue costs its listing alone.
    hashes = _content_hashes(paths, np.logical_or.reduce(needs + unhashed) & _local(urls, sources))
    reused = [_reuse_stored(ids, sources, hashes, *args) for args in zip(stored, contents, needs)]
    made_once = _share_in_run(ids, sources, hashes, needs)
    work = _Work.of(np.flatnonzero(needs[0] | needs[1]), ids, paths, sources, hashes, needs, urls)
    return _Plan(work, reused, made_once, paths, checked, changed)


@dataclass
class _Reused:
    """Rows of one store to write again instead of making them (mmgbm.features.store.Copy), by why."""

    moved: list[Copy] = field(default_factory=list)  # own row: the same bytes under a new path, size or time
    shared: list[Copy] = field(default_factory=list)  # another product's row, made from the same bytes
    hashed: list[Copy] = field(default_factory=list)  # own row, stored before hashes were kept, with its hash now

    @property
    def copies(self) -> list[Copy]:
        return self.moved + self.shared + self.hashed


def _local(urls: list[list[str] | None], sources: list[str | None]) -> np.ndarray:
    """Per product: its photo is a file that can be read (photo URLs keep their servers' validators instead)."""
    return np.array([u is None and s is not None for u, s in zip(urls, sources)], dtype=bool)


def _content_hashes(paths: list[str], wanted: np.ndarray) -> list[str | None]:
    """`content_hash` of the `wanted` products' files (None elsewhere), read by a pool of threads (hashlib lets go
    of the GIL while it hashes)."""
    hashes: list[str | None] = [None] * len(paths)
    rows = np.flatnonzero(wanted)
    with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="mmgbm-hash") as pool:
        for i, digest in zip(rows, pool.map(content_hash, [paths[i] for i in rows])):
            hashes[i] = digest
    return hashes


def _reuse_stored(
    ids: list[str],
    sources: list[str | None],
    hashes: list[str | None],
    stored: dict[str, str | None],
    contents: dict[str, str | None],
    needs: np.ndarray,
) -> _Reused:
    """The rows of one store (its `stored` sources and `contents`) that products may have again rather than be
    decoded and embedded: clears, in `needs`, the products that will. A row made from bytes is right for them
    wherever they lie now and whoever they belong to."""
    reused = _Reused()
    made_from = {content: pid for pid, content in contents.items() if content}
    for i, (pid, digest) in enumerate(zip(ids, hashes)):
        if digest is not None and not needs[i] and pid in stored and contents.get(pid) is None:
            # Stored before hashes were kept, and unchanged since (else it would be work): these are its bytes.
            reused.hashed.append(Copy(pid, pid, sources[i], digest))
            made_from.setdefault(digest, pid)
    for i, (pid, digest) in enumerate(zip(ids, hashes)):
        if digest is None or not needs[i]:
            continue
        if contents.get(pid) == digest:
            reused.moved.append(Copy(pid, pid, sources[i], digest))
        elif digest in made_from:
            reused.shared.append(Copy(made_from[digest], pid, sources[i], digest))
        else:
            continue
        needs[i] = False
    return reused


def _share_in_run(
    ids: list[str], sources: list[str | None], hashes: list[str | None], needs: list[np.ndarray]
) -> list[list[Copy]]:
    """Of the products still to be made whose photos have the same bytes, only the first is made (for each store
    any of them needs) and the others copy its rows once it is stored: clears their `needs` and returns, per store,
    those copies."""
    first: dict[str, int] = {}
    copies: list[list[Copy]] = [[] for _ in needs]
    for i in np.flatnonzero(np.logical_or.reduce(needs)):
        digest = hashes[i]
        if digest is None:
            continue
        made = first.setdefault(digest, i)
        if made == i:
            continue
        for need, store_copies in zip(needs, copies):
            if need[i]:
                need[made], need[i] = True, False
                store_copies.append(Copy(ids[made], ids[i], sources[i], digest))
    return copies


def _drop_failed(
    copies: list[list[Copy]], failures: list[tuple[str, str, str]], paths: dict[str, str]
) -> tuple[list[list[Copy]], list[tuple[str, str, str]]]:
    """The copies of products that were stored, and the failures of those that copy one that failed: the same
    bytes fail the same way (id, path, reason)."""
    failed = {pid: reason for pid, _, reason in failures}
    kept = [[c for c in store_copies if c.of not in failed] for store_copies in copies]
    failed_too = {
        c.id: (c.id, paths[c.id], failed[c.of]) for store_copies in copies for c in store_copies if c.of in failed
    }
    return kept, list(failed_too.values())


def _check_urls(
    photos: Photos,
    ids: list[str],
    urls: list[list[str] | None],
    sources: list[str | None],
    *stored: dict[str, str | None],
) -> tuple[int, int]:
    """Set, in `sources`, the stored source of every photo URL embedded before that the server says is unchanged
    (one conditional request each, all in flight together); a changed or unanswered one stays unknown (None), so
    it is fetched again. Returns (URLs checked, changed)."""
    asks = []
    for i, (pid, candidates) in enumerate(zip(ids, urls)):
        known = next((s[pid] for s in stored if s.get(pid)), None)
        if candidates is not None and source_url(known) in candidates:
            asks.append((i, known))
    if not asks:
        return 0, 0
    changed, known = 0, dict(asks)
    with photos.fetcher() as fetcher:
        for i, now_changed in fetcher.changed(asks):
            changed += now_changed
            if not now_changed:
                sources[i] = known[i]
    return len(asks), changed


def _extract(
    source: ImageSource, work: _Work, encoder: Callable[[], ImageEncoder], advance: Callable[[int], None]
) -> _Done:
    """Decode, embed and measure `work` in one stream, writing shards as they fill: the whole job on one machine, a
    part of it on a cluster's worker. `encoder()` gives a fitted encoder; it is asked for only when a product whose
    file can be opened (or whose photo is a URL) needs an embedding, so when none does, no model is even built."""
    image_cfg, photos = source.settings, source.photos
    done, to_decode = _Done(), []
    for i, path in enumerate(work.paths):  # paths that cannot be opened fail without reading a byte
        try:
            if work.urls[i] is None:
                photos.check(path)
            to_decode.append(i)
        except UnreadableImage as exc:
            done.failures.append((work.ids[i], path, exc.reason))
    to_decode = np.array(to_decode, dtype=np.int64)
    urls = [work.urls[i] for i in to_decode]
    writers = tuple(_ShardWriter(store, image_cfg.shard_size) for store in (source.embeddings, source.colours))
    with warnings.catch_warnings(), _fetched(photos, urls) as stream:
        # The photos' requests are in flight while the encoder builds (seconds), so the first batch does not wait.
        model = encoder() if work.embed[to_decode].any() else None
        loop_start = time.perf_counter()
        advance(len(done.failures))
        # Big-but-bounded images are decoded at reduced scale or refused in image_decoding; PIL's warning is noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        batches = _decoded_batches(
            [work.paths[i] for i in to_decode],
            urls,
            image_cfg.resolved_image_size,
            image_cfg.batch_size,
            photos.inside,
            stream,
        )
        to_embed = ((d, d.images[(d.reasons == "") & work.embed[to_decode[d.positions]]]) for d in batches)
        for decoded, embedded in _embedded(model, to_embed):
            batch = to_decode[decoded.positions]
            sources = [decoded.sources.get(p) or work.sources[i] for p, i in zip(decoded.positions, batch)]
            ok = decoded.reasons == ""
            embed, measure = ok & work.embed[batch], ok & work.measure[batch]
            if embed.any():
                writers[0].add(*_rows(work, batch, embed, sources), embedded)
            writers[1].add(*_rows(work, batch, measure, sources), decoded.stats[measure])
            done.embedded += int(embed.sum())
            done.coloured += int((ok & ~work.embed[batch]).sum())
            done.failures.extend(
                (work.ids[i], decoded.shown.get(p, work.paths[i]), r)
                for p, i, r in zip(decoded.positions, batch, decoded.reasons)
                if r
            )
            advance(len(batch))
        for writer in writers:
            writer.flush()
    done.shards = sum(writer.written for writer in writers)
    done.seconds = time.perf_counter() - loop_start
    return done


def _rows(
    work: _Work, batch: np.ndarray, chosen: np.ndarray, sources: list[str]
) -> tuple[list[str], list[str], list[str | None]]:
    """The ids, sources and content hashes of the `chosen` products of a batch (positions in `work`)."""
    kept = batch[chosen]
    return (
        [work.ids[i] for i in kept],
        [s for s, c in zip(sources, chosen) if c],
        [work.contents[i] for i in kept],
    )


def embed_images(
    source: ImageSource, paths: list[str], urls: list[list[str] | None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, colour statistics) of the images at `paths`, made exactly as extraction makes them but kept in
    memory, for products predicted before their photo is in the store; NaN rows where an image cannot be used
    (the decode refuses it with the extractor's checks). `urls`, where given, are the photos to fetch in turn for
    a product whose photo is a URL. Writes nothing: the store stays extraction's. Callers pass only paths that
    passed the checks, so the encoder is built only when there is something to embed."""
    image_cfg, photos = source.settings, source.photos
    urls = urls or [None] * len(paths)
    embeddings = np.full((len(paths), image_cfg.dim), np.nan, dtype=np.float32)
    colours = np.full((len(paths), colour.DIM), np.nan, dtype=np.float32)
    if not paths:
        return embeddings, colours
    with _fetched(photos, urls) as stream:
        model = _new_encoder(image_cfg).fit()  # as the store's were made
        batches = _decoded_batches(
            paths, urls, image_cfg.resolved_image_size, image_cfg.batch_size, photos.inside, stream
        )
        for decoded, embedded in model.embed_batches((d, d.images[d.reasons == ""]) for d in batches):
            ok = decoded.reasons == ""
            embeddings[decoded.positions[ok]] = embedded
            colours[decoded.positions[ok]] = decoded.stats[ok]
    return embeddings, colours


def _embedded(
    model: ImageEncoder | None, batches: Iterator[tuple[Tag, np.ndarray]]
) -> Iterator[tuple[Tag, np.ndarray | None]]:
    """`model.embed_batches`; without a model (nothing needed embedding), every batch with nothing embedded."""
    return model.embed_batches(batches) if model is not None else ((tag, None) for tag, _ in batches)


@contextmanager
def _fetched(photos: Photos, urls: list[list[str] | None]) -> Iterator[FetchStream | None]:
    """The photos at `urls` (where not None) as they arrive, keyed by their position; fetching starts here, not when
    the first one is asked for. None where no photo is a URL."""
    web = [(i, u) for i, u in enumerate(urls) if u is not None]
    if not web:
        yield None
        return
    with photos.fetcher() as fetcher:
        stream = fetcher.fetch_all(web)
        try:
            yield stream
        finally:
            stream.close()


def _extract_on_worker(work: _Work, source: ImageSource) -> _Done:
    """One part of the work, as a task on a Dask worker."""
    return _extract(source, work, lambda: _worker_encoder(source.settings), lambda n: None)


def _new_encoder(image_cfg: ImageFeaturesConfig) -> ImageEncoder:
    return ImageEncoder(
        image_cfg.backbone,
        image_cfg.weights,
        image_cfg.image_size,
        image_cfg.batch_size,
        image_cfg.precision,
        image_cfg.runtime,
        performance_hint="throughput",
    )


_ENCODERS_LOCK = threading.Lock()


def _worker_encoder(image_cfg: ImageFeaturesConfig) -> ImageEncoder:
    """This Dask worker's fitted encoder: built by the first task that needs it and reused by every later one (a
    network takes seconds to build). Kept on the worker object, so it goes away with the worker; the lock keeps
    the worker's threads from building it twice."""
    from distributed import get_worker

    worker, key = get_worker(), image_cfg.model_dump_json()
    with _ENCODERS_LOCK:
        encoders = worker.__dict__.setdefault("mmgbm_image_encoders", {})
        if key not in encoders:
            encoders[key] = _new_encoder(image_cfg).fit()
        return encoders[key]


def _needs_work(stored: dict[str, str | None], ids: list[str], sources: list[str | None]) -> np.ndarray:
    """Per product: not stored yet, or stored from another file than the one its row names now (a row stored
    before sources were recorded is trusted)."""
    return np.array(
        [pid not in stored or stored[pid] not in (None, source) for pid, source in zip(ids, sources)], dtype=bool
    )


@dataclass
class _Decoded:
    """One batch: positions in the list decoded, uint8 images, colour statistics and failure reasons ('' where
    none) in the same order; for fetched photos, the source of what was fetched and the URL shown in failures."""

    positions: np.ndarray
    images: np.ndarray
    stats: np.ndarray
    reasons: np.ndarray
    sources: dict[int, str]
    shown: dict[int, str]


def _decoded_batches(
    paths: list[str],
    urls: list[list[str] | None],
    size: int,
    batch_size: int,
    inside: Path | str | None,
    stream: FetchStream | None,
) -> Iterator[_Decoded]:
    """Batches of the photos at `paths` (or taken from `stream` where `urls` are given), decoded by a pool of
    threads ahead of use. Fetched photos enter as they arrive, between the files, so a slow host holds only its own;
    a batch is handed on as soon as its photos are decoded."""
    if not paths:
        return
    unread = np.zeros((size, size, 3), np.uint8), np.full(colour.DIM, np.nan, np.float32)
    sources, shown = {}, {}

    def items() -> Iterator[tuple[int, str, bytes, str]]:
        files = (i for i, u in enumerate(urls) if u is None)
        while True:
            got = stream.get(block=False) if stream is not None else None
            if got is None:
                i = next(files, None)
                if i is not None:
                    yield i, paths[i], b"", ""
                    continue
                if stream is None or stream.done:
                    return
                got = stream.get()
            shown[got.key] = got.url
            if got.source:
                sources[got.key] = got.source
            yield got.key, got.url, got.data, got.reason

    def decode(position: int, path: str, data: bytes, reason: str) -> tuple[int, np.ndarray, np.ndarray, str]:
        try:
            if reason:
                raise UnreadableImage(reason)
            image = decode_image_bytes(data, size) if data else decode_image(path, size, inside)
            return position, *image, ""
        except UnreadableImage as exc:
            return position, *unread, exc.reason

    def batch(n: int) -> _Decoded:
        positions, images, stats, reasons = zip(*(ahead.popleft().result() for _ in range(n)))
        return _Decoded(
            np.array(positions, dtype=np.int64),
            np.stack(images),
            np.stack(stats),
            np.array(reasons, dtype=object),
            sources,
            shown,
        )

    ahead: deque[Future] = deque()
    with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="mmgbm-decode") as pool:
        try:
            for item in items():
                ahead.append(pool.submit(decode, *item))
                while len(ahead) >= batch_size and (
                    len(ahead) >= DECODE_AHEAD * batch_size or all(f.done() for f in islice(ahead, batch_size))
                ):
                    yield batch(batch_size)
            while ahead:
                yield batch(min(batch_size, len(ahead)))
        finally:
            for future in ahead:
                future.cancel()


def known_failures(source: ImageSource) -> set[tuple[str, str]]:
    """(id, path) of the products whose image the last extraction could not use: trying again is its job."""
    try:
        with source.embeddings.folder.open(FAILURES_FILE) as listing:
            listed = pd.read_csv(listing, dtype=str, keep_default_na=False)
        return set(zip(listed["id"], listed["path"]))
    except (OSError, ValueError, KeyError):  # no list yet, or not one extraction wrote
        return set()


def _write_failures(where: LocalFolder | ObjectFolder, name: str, failures: list[tuple[str, str, str]]) -> None:
    """Rewrite the list for this run (atomically), so it names exactly what is still missing after it."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["id", "path", "reason"])
            out.writerows((pid, shown.replace("\0", "\\0"), reason) for pid, shown, reason in failures)

    where.write(name, write)


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`: a rich bar with photos/s and ETA when enabled, a no-op otherwise."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    from mmgbm.progress import progress_bar

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:.1f} photos/s" if task.speed else "- photos/s")

    columns = (
        TextColumn("embedding photos"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with progress_bar("images", total, *columns) as update:
        yield lambda n: update(advance=n)
