"""Frozen EfficientNet image embeddings and colour statistics for every product, streamed into the feature stores.

The pipeline decodes and resizes images in parallel threads (tf.data over a PIL decoder that accepts anything a
seller uploads) while batched graph-mode forward passes run. Each photo is decoded once: the same decode gives the
encoder's input and the colour statistics. A shard is written each time `shard_size` rows are ready, so memory stays
flat whatever the catalogue size and a killed run loses at most one shard. Products whose image cannot be read get
neither (a missing value downstream), are listed in `failures.csv` next to the shards, and are retried by the next
run. Each row records the image file's path, size and modification time, so a product whose photo changed is
extracted again (and read as having no image until then). This is the only writer of the image stores: training and
prediction only read them. On a Dask cluster (mmgbm.cluster) the work is cut into parts of `shard_size` products:
each worker builds its encoder once, extracts the parts it is given and writes their shards itself; this process
only decides what needs doing and lists the failures.
"""

from __future__ import annotations

import csv
import posixpath
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from mmgbm.catalogue import load_all_products
from mmgbm.cluster import run_parts
from mmgbm.config import Config, ImageFeaturesConfig
from mmgbm.errors import MmgbmError
from mmgbm.features import colour
from mmgbm.features import photo_urls
from mmgbm.features.folder import is_url
from mmgbm.features.image_decoding import UnreadableImage, check_image_file, decode_image, image_sources
from mmgbm.features.image_encoder import ImageEncoder
from mmgbm.features.store import FeatureStore, dense_table
from mmgbm.workdir import Folder, colour_store, image_dir, image_failures, image_store

if TYPE_CHECKING:
    from distributed import Client


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
    embedding_seconds: float = 0.0  # the decode + forward + write loop alone: what images/s is measured on
    shards_written: int = 0
    quarantined: list[Path | str] = field(default_factory=list)  # damaged shards set aside; their products were redone

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def images_per_second(self) -> float:
        done = self.extracted + self.coloured + self.failed
        return done / self.embedding_seconds if self.embedding_seconds > 0 else 0.0

    def describe(self) -> str:
        lines = [
            f"{self.products:,} products: {self.extracted:,} embedded, {self.skipped:,} already stored, "
            f"{self.failed:,} failed",
            f"{self.seconds:.1f} s ({self.images_per_second:.1f} images/s while embedding), "
            f"{self.shards_written} new shards in {self.store_root}",
        ]
        if self.coloured:
            lines.insert(1, f"colour statistics added for {self.coloured:,} products embedded before")
        if self.quarantined:
            lines.append(f"{len(self.quarantined)} damaged shard(s) set aside (renamed *.damaged) and their products "
                         f"extracted again: {', '.join(posixpath.basename(str(p)) for p in self.quarantined)}")
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
    written: int = 0

    def add(self, ids: list[str], matrix: np.ndarray, sources: list[str]) -> None:
        self.ids.extend(ids)
        self.rows.extend(matrix)
        self.sources.extend(sources)
        while len(self.ids) >= self.shard_size:
            self._write(self.shard_size)

    def flush(self) -> None:
        if self.ids:
            self._write(len(self.ids))

    def _write(self, n: int) -> None:
        self.store.write_shard(dense_table(self.ids[:n], np.stack(self.rows[:n]), self.sources[:n]))
        del self.ids[:n], self.rows[:n], self.sources[:n]
        self.written += 1


@dataclass
class _Work:
    """Products to extract, one entry each: id, absolute image path, what the file is now (its source), and whether
    the embedding store and the colour store lack it. A cluster's workers each take a slice."""

    ids: list[str]
    paths: list[str]
    sources: list[str | None]
    embed: np.ndarray
    measure: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, rows: slice) -> "_Work":
        return _Work(self.ids[rows], self.paths[rows], self.sources[rows], self.embed[rows], self.measure[rows])


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
        return cls(sum(p.embedded for p in parts), sum(p.coloured for p in parts), sum(p.shards for p in parts),
                   [failure for p in parts for failure in p.failures], seconds)


def extract_images(cfg: Config, *, overwrite: bool = False, progress: bool = False,
                   client: Client | None = None) -> ImageExtractionSummary:
    """Embed the image of every product of every split that the stores do not hold yet, and take its colour
    statistics from the same decode. A product is work to do when either store lacks it; the forward pass runs only
    for those without an embedding (a workdir made before colour statistics were extracted gets them). With a Dask
    `client`, the work is cut into parts of `shard_size` products that the workers extract and store themselves."""
    start = time.perf_counter()
    image_cfg = cfg.features.image
    if not image_cfg.enabled:
        raise MmgbmError("image features are off in this config (features.image.enabled: false); nothing to extract")
    if not cfg.data.image_column:
        raise MmgbmError("the config has no data.image_column; set it to the column that holds image paths")
    embeddings, colours = image_store(cfg), colour_store(cfg)
    if overwrite:
        embeddings.clear()
        colours.clear()
    products = load_all_products(cfg)
    ids = products[cfg.data.id_column].tolist()
    root, inside = images_root(cfg), image_boundary(cfg)
    paths = image_paths(products[cfg.data.image_column], root)
    sources = image_sources(paths, root, inside)
    needs_embedding = _needs_work(embeddings.prepare_writing(), ids, sources)
    needs_colour = _needs_work(colours.prepare_writing(), ids, sources)
    todo = np.flatnonzero(needs_embedding | needs_colour)
    work = _Work([ids[i] for i in todo], [paths[i] for i in todo], [sources[i] for i in todo],
                 needs_embedding[todo], needs_colour[todo])

    with _progress_bar(len(work), enabled=progress) as advance:
        if client is None:
            done = _extract(cfg, work, lambda: _new_encoder(image_cfg).fit(), advance)
        else:
            step = image_cfg.shard_size
            parts = [work[i:i + step] for i in range(0, len(work), step)]
            started = time.perf_counter()
            done = run_parts(client, _extract_on_worker, parts, lambda part: advance(part.products), cfg=cfg)
            done = _Done.total(done, time.perf_counter() - started)  # the workers' model builds included

    failures_folder, failures_file = image_failures(cfg)
    _write_failures(failures_folder, failures_file, done.failures)
    return ImageExtractionSummary(
        products=len(ids),
        extracted=done.embedded,
        coloured=done.coloured,
        skipped=len(ids) - len(work),
        failures=dict(Counter(reason for _, _, reason in done.failures)),
        failures_path=failures_folder.address(failures_file),
        store_root=image_dir(cfg).root,
        seconds=time.perf_counter() - start,
        embedding_seconds=done.seconds,
        shards_written=done.shards,
        quarantined=embeddings.quarantined + colours.quarantined,
    )


def _extract(cfg: Config, work: _Work, encoder: Callable[[], ImageEncoder], advance: Callable[[int], None]) -> _Done:
    """Decode, embed and measure `work` in one stream, writing shards as they fill: the whole job on one machine, a
    part of it on a cluster's worker. `encoder()` gives a fitted encoder; it is asked for only when a product whose
    file can be opened needs an embedding, so when none does, no model is even built."""
    image_cfg, inside = cfg.features.image, image_boundary(cfg)
    done, to_decode = _Done(), []
    for i, path in enumerate(work.paths):  # paths that cannot be opened fail without reading a byte
        try:
            check_image_file(path, inside)
            to_decode.append(i)
        except UnreadableImage as exc:
            done.failures.append((work.ids[i], path, exc.reason))
    to_decode = np.array(to_decode, dtype=np.int64)
    model = encoder() if work.embed[to_decode].any() else None
    writers = tuple(_ShardWriter(store, image_cfg.shard_size) for store in (image_store(cfg), colour_store(cfg)))
    loop_start = time.perf_counter()
    advance(len(done.failures))
    with warnings.catch_warnings():
        # Big-but-bounded images are decoded at reduced scale or refused in image_decoding; PIL's warning is noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for positions, images, stats, reasons in _decoded_batches([work.paths[i] for i in to_decode],
                                                                  image_cfg.resolved_image_size,
                                                                  image_cfg.batch_size, inside):
            batch = to_decode[positions]
            ok = reasons == ""
            embed, measure = ok & work.embed[batch], ok & work.measure[batch]
            if embed.any():
                writers[0].add([work.ids[i] for i in batch[embed]], model.embed_batch(images[embed]),
                               [work.sources[i] for i in batch[embed]])
            writers[1].add([work.ids[i] for i in batch[measure]], stats[measure],
                           [work.sources[i] for i in batch[measure]])
            done.embedded += int(embed.sum())
            done.coloured += int((ok & ~work.embed[batch]).sum())
            done.failures.extend((work.ids[i], work.paths[i], r) for i, r in zip(batch, reasons) if r)
            advance(len(batch))
        for writer in writers:
            writer.flush()
    done.shards = sum(writer.written for writer in writers)
    done.seconds = time.perf_counter() - loop_start
    return done


def embed_images(cfg: Config, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, colour statistics) of the images at `paths`, made exactly as extraction makes them but kept in
    memory, for products predicted before their photo is in the store; NaN rows where an image cannot be used
    (the decode refuses it with the extractor's checks). Writes nothing: the store stays extraction's. Callers pass
    only paths that passed `check_image_file`, so the encoder is built only when there is something to embed."""
    image_cfg = cfg.features.image
    embeddings = np.full((len(paths), image_cfg.dim), np.nan, dtype=np.float32)
    colours = np.full((len(paths), colour.DIM), np.nan, dtype=np.float32)
    if not paths:
        return embeddings, colours
    model = _new_encoder(image_cfg).fit()
    for positions, images, stats, reasons in _decoded_batches(paths, image_cfg.resolved_image_size,
                                                              image_cfg.batch_size, image_boundary(cfg)):
        ok = reasons == ""
        if ok.any():
            embeddings[positions[ok]] = model.embed_batch(images[ok])
            colours[positions[ok]] = stats[ok]
    return embeddings, colours


def _extract_on_worker(work: _Work, cfg: Config) -> _Done:
    """One part of the work, as a task on a Dask worker."""
    return _extract(cfg, work, lambda: _worker_encoder(cfg.features.image), lambda n: None)


def _new_encoder(image_cfg: ImageFeaturesConfig) -> ImageEncoder:
    return ImageEncoder(image_cfg.backbone, image_cfg.weights, image_cfg.image_size, image_cfg.batch_size,
                        image_cfg.precision, image_cfg.runtime)


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
    return np.array([pid not in stored or stored[pid] not in (None, source) for pid, source in zip(ids, sources)],
                    dtype=bool)


def image_paths(column: pd.Series, root: Path | str) -> list[str]:
    """Absolute path (or URL) per product ('' where the column is empty); relative values resolve against `root`."""
    join = (lambda text: photo_urls.join(root, text)) if is_url(root) else (lambda text: str(root / text))
    out = []
    for value in column.tolist():
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        out.append(join(text) if text else "")  # under a folder, an absolute value replaces root
    return out


def images_root(cfg: Config) -> Path | str:
    # Without an explicit images_root, image paths are relative to the training table: they usually sit beside it.
    return cfg.data.images_root or cfg.data.splits["train"].parent


def image_boundary(cfg: Config) -> Path | str | None:
    """The folder every image must resolve into, or None where the config allows images anywhere."""
    return None if cfg.data.allow_absolute_image_paths else images_root(cfg)


def _decoded_batches(paths: list[str], size: int, batch_size: int,
                     inside: Path | str | None) -> Iterator[tuple[np.ndarray, ...]]:
    """(positions, uint8 images, colour statistics, failure reasons) per batch, decoded by parallel tf.data threads
    ahead of use."""
    if not paths:
        return
    import tensorflow as tf

    unread = np.zeros((size, size, 3), np.uint8), np.full(colour.DIM, np.nan, np.float32)

    def decode(position: np.ndarray, path: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
        try:
            return position, *decode_image(path.decode(), size, inside), b""
        except UnreadableImage as exc:
            return position, *unread, exc.reason.encode()

    def decode_op(position: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, ...]:
        position, image, stats, reason = tf.numpy_function(
            decode, [position, path], [tf.int64, tf.uint8, tf.float32, tf.string], stateful=False
        )
        image.set_shape((size, size, 3))
        stats.set_shape((colour.DIM,))
        return position, image, stats, reason

    dataset = (
        tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64), paths))
        .map(decode_op, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    for positions, images, stats, reasons in dataset.as_numpy_iterator():
        yield positions, images, stats, np.array([r.decode() for r in reasons], dtype=object)


def known_failures(cfg: Config) -> set[tuple[str, str]]:
    """(id, path) of the products whose image the last extraction could not use: trying again is its job."""
    where, name = image_failures(cfg)
    try:
        with where.open(name) as source:
            listed = pd.read_csv(source, dtype=str, keep_default_na=False)
        return set(zip(listed["id"], listed["path"]))
    except (OSError, ValueError, KeyError):  # no list yet, or not one extraction wrote
        return set()


def _write_failures(where: Folder, name: str, failures: list[tuple[str, str, str]]) -> None:
    """Rewrite the list for this run (atomically), so it names exactly what is still missing after it."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["id", "path", "reason"])
            out.writerows((pid, shown.replace("\0", "\\0"), reason) for pid, shown, reason in failures)

    where.write(name, write)


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`: a rich bar with images/s and ETA when enabled, a no-op otherwise."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:.1f} images/s" if task.speed else "- images/s")

    columns = (TextColumn("embedding images"), BarColumn(), MofNCompleteColumn(), RateColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("images", total=total)
        yield lambda n: bar.advance(task, n)
