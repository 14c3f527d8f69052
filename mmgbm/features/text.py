"""Text features: one TF-IDF vectorizer per text field, fitted on the training split only, stored as sparse shards.

Per field, one folder of the store (a `TextField`'s; mmgbm.stores builds them from the config) holds the fitted
vectorizer (plain JSON, never a pickle) and the shards (id, indices, values, and a hash of the text each row was made
from, so a product whose text changed is vectorised again). The shards' fingerprint is derived from the stored
vectorizer, so shards can only be read with the vectorizer that made them; refitting the vectorizer (--overwrite)
discards them, since their indices meant other words. Two runs on a fresh workdir fit the same vectorizer from the
same data, so they may race: each replaces the file atomically with identical content, and a product both store is
read once. On a Dask cluster (mmgbm.cluster) the vectorizer is still fitted here; the workers vectorise a shard's
worth of products each and write that shard themselves.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mmgbm.cluster import run_parts
from mmgbm.errors import MmgbmError
from mmgbm.features.folder import LocalFolder, ObjectFolder
from mmgbm.features.store import FeatureStore, kept_when_pruning, sparse_table
from mmgbm.features.text_cleaning import join_columns
from mmgbm.features.text_vectorizer import TextVectorizer

if TYPE_CHECKING:
    from distributed import Client

    from mmgbm.config import TextFeaturesConfig

VECTORIZER_FILE = "vectorizer.json"

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
    pruned: int = 0  # products in none of the splits, removed from the store

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
            + (f"; {self.pruned:,} products no longer in any split pruned" if self.pruned else "")
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


def new_vectorizer(settings: TextFeaturesConfig) -> TextVectorizer:
    """An unfitted vectorizer with the vocabulary settings of `features.text`."""
    return TextVectorizer(**settings.model_dump(include=set(VECTORIZER_SETTINGS)))


@dataclass(frozen=True)
class TextField:
    """One text field: the columns joined into its text, the store folder that holds its vectorizer and vectors,
    and the `features.text` settings."""

    name: str
    columns: list[str]
    folder: LocalFolder | ObjectFolder
    settings: TextFeaturesConfig

    def store(self, vectorizer: TextVectorizer) -> FeatureStore:
        """The field's TF-IDF vectors; fingerprinted by the fitted vectorizer, whose indices they are."""
        fingerprint = {"kind": "tfidf", "columns": self.columns, "vectorizer": vectorizer.fingerprint_}
        return FeatureStore(self.folder, fingerprint)

    def load_vectorizer(self) -> TextVectorizer:
        """The fitted vectorizer stored for the field, checked against what the config asks for now."""
        path = self.folder.address(VECTORIZER_FILE)
        if not self.folder.has(VECTORIZER_FILE):
            raise MmgbmError(
                f"no fitted vectorizer for text field {self.name!r} at {path}; run `mmgbm extract-text` first"
            )
        text = self.folder.read_text(VECTORIZER_FILE)  # a store that cannot be reached says so, not "unreadable"
        try:
            saved = json.loads(text)
            vectorizer, saved_columns = TextVectorizer.from_data(saved), list(saved["columns"])
        except Exception as exc:  # truncated, hand-edited or foreign: JSON and the rebuild raise many types
            raise MmgbmError(
                f"{path}: unreadable vectorizer ({type(exc).__name__}); run `mmgbm extract-text --overwrite`"
            ) from None
        wanted = {"columns": self.columns, **_settings(new_vectorizer(self.settings))}
        stored = {"columns": saved_columns, **_settings(vectorizer)}
        differ = [k for k in wanted if json.dumps(wanted[k]) != json.dumps(stored[k])]
        if differ:
            what = "; ".join(f"{k}: fitted with {stored[k]!r}, config asks {wanted[k]!r}" for k in differ)
            raise MmgbmError(
                f"{path} does not match the config ({what}); run `mmgbm extract-text --overwrite` to refit it"
            )
        return vectorizer

    def fitted(self) -> FittedField:
        """The field as extraction stored it: its vectorizer and the store of its vectors."""
        vectorizer = self.load_vectorizer()
        return FittedField(self.name, self.columns, vectorizer, self.store(vectorizer))


@dataclass(frozen=True)
class FittedField:
    name: str
    columns: list[str]
    vectorizer: TextVectorizer
    store: FeatureStore


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


def extract_field(
    field: TextField,
    products: pd.DataFrame,
    id_column: str,
    train: Callable[[], pd.DataFrame],
    *,
    overwrite: bool = False,
    prune: bool = False,
    max_prune: float = 1.0,
    client: Client | None = None,
) -> FieldExtraction:
    """Fit the field's vectorizer on `train()` (the training split; asked for only when fitting) or reuse the stored
    one, then store vectors for every product of `products` not stored as it is now, on the Dask cluster of
    `client` when given. With `prune`, the stored products that are not among `products` are removed."""
    started = time.perf_counter()
    fitted_on = None
    if overwrite or not field.folder.has(VECTORIZER_FILE):
        fitted_on = _fit_and_save(field, train(), overwrite)
    vectorizer = field.load_vectorizer()
    fit_seconds = time.perf_counter() - started

    store = field.store(vectorizer)
    stored = store.prepare_writing()
    documents = join_columns(products, field.columns)
    ids, hashes = products[id_column].tolist(), content_hashes(documents)
    # New products, and stored ones whose text changed (rows stored before hashes were recorded are trusted).
    todo = [i for i, (pid, h) in enumerate(zip(ids, hashes)) if pid not in stored or stored[pid] not in (None, h)]
    started = time.perf_counter()
    step = field.settings.shard_size
    parts = [
        _Documents([ids[i] for i in rows], [documents[i] for i in rows], [hashes[i] for i in rows])
        for rows in (todo[start : start + step] for start in range(0, len(todo), step))
    ]
    empty = sum(run_parts(client, _store_vectors, parts, store=store, vectorizer=vectorizer))
    pruned = store.compact(kept_when_pruning([store], ids, max_prune) if prune else None).pruned
    return FieldExtraction(
        field.name,
        field.columns,
        fitted_on,
        vectorizer.n_columns_,
        len(todo),
        len(products) - len(todo),
        empty,
        len(parts),
        fit_seconds,
        time.perf_counter() - started,
        len(store.quarantined),
        pruned,
    )


def content_hashes(documents: Sequence[str]) -> list[str]:
    """A short hash per document: what a stored TF-IDF row was made from."""
    return [hashlib.sha256(doc.encode("utf-8", "surrogatepass")).hexdigest()[:16] for doc in documents]


def _fit_and_save(field: TextField, train: pd.DataFrame, overwrite: bool) -> int:
    """Fit on the training split only and store the vectorizer; with `overwrite`, the field's shards go first."""
    vectorizer = new_vectorizer(field.settings)
    try:
        vectorizer.fit(join_columns(train, field.columns))
    except ValueError as exc:  # sklearn: empty vocabulary, min_df above max_df ...
        raise MmgbmError(
            f"text field {field.name!r}: cannot fit TF-IDF on {len(train):,} train products ({exc}); "
            f"check features.text (min_df, max_df, token_pattern) and the columns {field.columns}"
        ) from None
    if overwrite:
        field.store(vectorizer).clear()
    saved = {**vectorizer.to_data(), "columns": list(field.columns), "fitted_on": len(train)}
    field.folder.write(VECTORIZER_FILE, lambda tmp: tmp.write_text(json.dumps(saved)))
    return len(train)


def _settings(vectorizer: TextVectorizer) -> dict[str, Any]:
    # Through JSON so that min_df 1 (one document) and 1.0 (every document) stay different, and tuples are lists.
    return json.loads(json.dumps(vectorizer.get_params()))
