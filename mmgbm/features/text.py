"""Text features: one TF-IDF vectorizer per text field, fitted on the training split only, stored as sparse shards.

Per field, one folder of the store (mmgbm.workdir.text_field_dir) holds the fitted vectorizer (plain JSON, never a
pickle) and the shards (id, indices, values, and a hash of the text each row was made from, so a product whose text
changed is vectorised again). The shards' fingerprint is derived from the stored vectorizer, so shards can only be read
with the vectorizer that made them; refitting the vectorizer (--overwrite) discards them, since their indices
meant other words. Two runs on a fresh workdir fit the same vectorizer from the same data, so they may race: each
replaces the file atomically with identical content, and a product both store is read once. On a Dask cluster
(mmgbm.cluster) the vectorizer is still fitted here; the workers vectorise a shard's worth of products each and
write that shard themselves.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mmgbm.catalogue import load_all_products, load_split
from mmgbm.cluster import run_parts
from mmgbm.config import Config
from mmgbm.errors import MmgbmError
from mmgbm.features.store import FeatureStore, sparse_table
from mmgbm.features.text_cleaning import join_columns
from mmgbm.features.text_vectorizer import TextVectorizer
from mmgbm.workdir import VECTORIZER_FILE, text_dir, text_field_dir, text_store

if TYPE_CHECKING:
    from distributed import Client

# The settings of features.text that shape the vectorizer (the rest say what to do, not what it computes).
VECTORIZER_SETTINGS = (
    "ngram_range",
    "char_ngram_range",
    "min_df",
    "max_df",
    "max_features",
    "sublinear_tf",
    "lowercase",
    "token_pattern",
    "strip_html",
)


@dataclass
class FieldExtraction:
    field: str
    columns: list[str]
    fitted_on: int | None  # training products the vectorizer was fitted on now; None when a stored one was reused
    vocabulary: int
    new: int
    already_stored: int
    empty: int
    shards: int
    fit_seconds: float
    transform_seconds: float
    set_aside: int = 0  # damaged shards renamed *.damaged; their products are among the new ones

    def describe(self) -> str:
        how = (
            f"fitted on {self.fitted_on:,} train products" if self.fitted_on is not None else "stored vectorizer reused"
        )
        rate = f" ({self.new / self.transform_seconds:,.0f} docs/s)" if self.new and self.transform_seconds else ""
        return (
            f"text field {self.field!r} ({' + '.join(self.columns)}): {how}, {self.vocabulary:,} terms; "
            f"{self.new:,} new products in {self.shards} shard(s), {self.empty:,} with empty text, "
            f"{self.already_stored:,} already stored; fit {self.fit_seconds:.1f}s, "
            f"transform {self.transform_seconds:.1f}s{rate}"
            + (f"; {self.set_aside} damaged shard(s) set aside (*.damaged)" if self.set_aside else "")
        )


@dataclass
class TextExtractionSummary:
    fields: list[FieldExtraction]
    root: Path | str
    enabled: bool = True

    def describe(self) -> str:
        if not self.enabled:
            return "text features are disabled (features.text.enabled: false); nothing to do"
        lines = [f.describe() for f in self.fields]
        lines.append(f"text features in {self.root}")
        return "\n".join(lines)


def vectorizer_from_config(cfg: Config) -> TextVectorizer:
    """An unfitted vectorizer with the config's vocabulary settings."""
    return TextVectorizer(**cfg.features.text.model_dump(include=set(VECTORIZER_SETTINGS)))


def field_columns(cfg: Config, field: str) -> list[str]:
    fields = cfg.text_fields
    if field not in fields:
        raise MmgbmError(f"unknown text field {field!r}; the config has: {', '.join(fields) or 'none'}")
    return fields[field]


def load_vectorizer(cfg: Config, field: str) -> TextVectorizer:
    """The fitted vectorizer stored for a field, checked against what the config asks for now."""
    columns = field_columns(cfg, field)
    where = text_field_dir(cfg, field)
    path = where.address(VECTORIZER_FILE)
    if not where.has(VECTORIZER_FILE):
        raise MmgbmError(f"no fitted vectorizer for text field {field!r} at {path}; run `mmgbm extract-text` first")
    text = where.read_text(VECTORIZER_FILE)  # a store that cannot be reached says so, not "unreadable"
    try:
        saved = json.loads(text)
        vectorizer, saved_columns = TextVectorizer.from_data(saved), list(saved["columns"])
    except Exception as exc:  # truncated, hand-edited or foreign: JSON and the rebuild raise many types
        raise MmgbmError(
            f"{path}: unreadable vectorizer ({type(exc).__name__}); run `mmgbm extract-text --overwrite`"
        ) from None
    wanted = {"columns": columns, **_settings(vectorizer_from_config(cfg))}
    stored = {"columns": saved_columns, **_settings(vectorizer)}
    differ = [k for k in wanted if json.dumps(wanted[k]) != json.dumps(stored[k])]
    if differ:
        what = "; ".join(f"{k}: fitted with {stored[k]!r}, config asks {wanted[k]!r}" for k in differ)
        raise MmgbmError(f"{path} does not match the config ({what}); run `mmgbm extract-text --overwrite` to refit it")
    return vectorizer


def extract_text(cfg: Config, *, overwrite: bool = False, client: Client | None = None) -> TextExtractionSummary:
    """Fit (train split only) or reuse each field's vectorizer, then store vectors for every product not yet stored,
    on the Dask cluster of `client` when given."""
    if not cfg.features.text.enabled:
        return TextExtractionSummary([], text_dir(cfg).root, enabled=False)
    if not cfg.text_fields:
        raise MmgbmError("no text columns configured; set data.text_columns or features.text.fields")
    products = load_all_products(cfg)
    return TextExtractionSummary(
        [_extract_field(cfg, field, products, overwrite, client) for field in cfg.text_fields], text_dir(cfg).root
    )


@dataclass
class _Documents:
    """The products of one shard to be: ids, their text, and its hashes."""

    ids: list[str]
    documents: list[str]
    hashes: list[str]


def _store_vectors(part: _Documents, store: FeatureStore, vectorizer: TextVectorizer) -> int:
    """Vectorise one shard's products and write it; returns how many had no known word."""
    matrix = vectorizer.transform(part.documents)
    store.write_shard(sparse_table(part.ids, matrix, part.hashes))
    return int((matrix.getnnz(axis=1) == 0).sum())


def _extract_field(
    cfg: Config, field: str, products: pd.DataFrame, overwrite: bool, client: Client | None
) -> FieldExtraction:
    columns = field_columns(cfg, field)
    started = time.perf_counter()
    fitted_on = None
    if overwrite or not text_field_dir(cfg, field).has(VECTORIZER_FILE):
        fitted_on = _fit_and_save(cfg, field, columns, overwrite)
    vectorizer = load_vectorizer(cfg, field)
    fit_seconds = time.perf_counter() - started

    store = text_store(cfg, field, vectorizer)
    stored = store.prepare_writing()
    documents = join_columns(products, columns)
    ids, hashes = products[cfg.data.id_column].tolist(), content_hashes(documents)
    # New products, and stored ones whose text changed (rows stored before hashes were recorded are trusted).
    todo = [i for i, (pid, h) in enumerate(zip(ids, hashes)) if pid not in stored or stored[pid] not in (None, h)]
    started = time.perf_counter()
    step = cfg.features.text.shard_size
    parts = [
        _Documents([ids[i] for i in rows], [documents[i] for i in rows], [hashes[i] for i in rows])
        for rows in (todo[start : start + step] for start in range(0, len(todo), step))
    ]
    empty = sum(run_parts(client, _store_vectors, parts, store=store, vectorizer=vectorizer))
    return FieldExtraction(
        field,
        columns,
        fitted_on,
        vectorizer.n_columns_,
        len(todo),
        len(products) - len(todo),
        empty,
        len(parts),
        fit_seconds,
        time.perf_counter() - started,
        len(store.quarantined),
    )


def content_hashes(documents: Sequence[str]) -> list[str]:
    """A short hash per document: what a stored TF-IDF row was made from."""
    return [hashlib.sha256(doc.encode("utf-8", "surrogatepass")).hexdigest()[:16] for doc in documents]


def _fit_and_save(cfg: Config, field: str, columns: list[str], overwrite: bool) -> int:
    """Fit on the training split only and store the vectorizer; with `overwrite`, the field's shards go first."""
    train = load_split(cfg, "train", with_targets=False)
    vectorizer = vectorizer_from_config(cfg)
    try:
        vectorizer.fit(join_columns(train, columns))
    except ValueError as exc:  # sklearn: empty vocabulary, min_df above max_df ...
        raise MmgbmError(
            f"text field {field!r}: cannot fit TF-IDF on {len(train):,} train products ({exc}); "
            f"check features.text (min_df, max_df, token_pattern) and the columns {columns}"
        ) from None
    if overwrite:
        text_store(cfg, field, vectorizer).clear()
    saved = {**vectorizer.to_data(), "columns": list(columns), "fitted_on": len(train)}
    text_field_dir(cfg, field).write(VECTORIZER_FILE, lambda tmp: tmp.write_text(json.dumps(saved)))
    return len(train)


def _settings(vectorizer: TextVectorizer) -> dict[str, Any]:
    # Through JSON so that min_df 1 (one document) and 1.0 (every document) stay different, and tuples are lists.
    return json.loads(json.dumps(vectorizer.get_params()))
