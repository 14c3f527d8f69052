"""The estimators' input for a table of products: every modality read from the feature stores, joined by id.

This is the one read path of the stores, for train, evaluate, predict and the tests alike, and it never writes.
Text of products that are not in the store (a new `--input` table), or whose text differs from what their stored
row was made from, is vectorised on the fly with the stored vectorizer, which is exactly what extraction would have
stored. A photo whose file changed since it was embedded (another path, size or time) is never read from the
store: stale features are never used. Such photos, and those never embedded, stay missing (NaN rows) unless the
caller asks for `embed_new_photos`: then they are embedded in memory, as extraction would have (batch predict on a
new table: the right answer rather than a product silently predicted without its photo).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmgbm.errors import MmgbmError
from mmgbm.estimator.products import ProductMatrix
from mmgbm.features.images import ImageSource, embed_images, known_failures
from mmgbm.features.photo_fetch import source_url
from mmgbm.features.store import FeatureStore
from mmgbm.features.text import FittedField, content_hashes
from mmgbm.features.text_cleaning import join_columns
from mmgbm.urls import is_web_url


@dataclass(frozen=True)
class ProductFeatures:
    """What a table's products are read with: the id column, each enabled text field as extraction stored it, the
    image features (None where off), and the metadata columns the estimators may read (declared ones, and the text
    columns label_in_text targets take candidate labels from) in the order they are named."""

    id_column: str
    text: list[FittedField]
    image: ImageSource | None
    meta: list[str]

    def meta_columns(self, frame: pd.DataFrame) -> list[str]:
        """The metadata columns `frame` has."""
        return [c for c in self.meta if c in frame.columns]


def load_products(
    features: ProductFeatures, frame: pd.DataFrame, embed_new_photos: Callable[[str], None] | None = None
) -> tuple[ProductMatrix, dict[str, dict]]:
    """Every enabled modality for the products of `frame`, in its row order, and the fingerprints of the stores
    they came from (keyed "text/<field>", "image/<backbone>", "image/colour"). With `embed_new_photos`, usable
    photos that are not in the store as they are now get embedded here, and that callable is told how many."""
    ids = frame[features.id_column].astype(str).tolist()
    text, words, dense, fingerprints = {}, {}, {}, {}
    for field in features.text:
        store, vectorizer = field.store, field.vectorizer
        matrix, present = store.read_sparse(ids, vectorizer.n_columns_)
        if all(c in frame.columns for c in field.columns):
            documents = join_columns(frame, field.columns)
            usable = present & _unchanged(store.read_sources(ids), content_hashes(documents))
            if not usable.all():
                fresh = vectorizer.transform([documents[i] for i in np.flatnonzero(~usable)])
                matrix = _replace_rows(matrix, np.flatnonzero(~usable), fresh)
            words[field.name] = np.array(documents, dtype=object)
        text[field.name] = matrix.astype(np.float32)
        fingerprints[f"text/{field.name}"] = store.fingerprint
    image = features.image
    if image is not None:
        embeddings, colours = image.embeddings, image.colours
        now = paths = urls = None
        if image.column in frame.columns:
            paths, urls, now = image.photos.locate(frame[image.column])
            _url_sources(embeddings.read_sources(ids), urls, now)
        dense["image"] = _read_dense(embeddings, ids, now)
        dense["image.colour"] = _read_dense(colours, ids, now)
        if embed_new_photos is not None and now is not None:
            _embed_new(image, ids, paths, urls, now, dense, embed_new_photos)
            refused = sum(is_web_url(p) and u is None for p, u in zip(paths, urls))
            if refused:
                embed_new_photos(
                    f"{refused:,} products have a photo URL that was not read (predicted without it); "
                    f"set data.remote_images: true to fetch photo URLs"
                )
        fingerprints[f"image/{image.settings.backbone}"] = embeddings.fingerprint
        fingerprints["image/colour"] = colours.fingerprint
    if not text and not dense:
        raise MmgbmError("no features enabled: enable features.text or features.image in the config")
    return ProductMatrix(ids, text, words, dense, frame[features.meta_columns(frame)]), fingerprints


def _url_sources(stored: list[str | None], urls: list[list[str] | None], now: list[str | None]) -> None:
    """Set, in `now`, what a photo URL is: its stored source where the product's URLs still name what was
    embedded (reading features asks no server; extraction is what checks a URL for changes), else a source that
    matches nothing stored, so the product's photo reads as not embedded yet."""
    for i, (known, candidates) in enumerate(zip(stored, urls)):
        if candidates is not None:
            now[i] = known if source_url(known) in candidates else f"{candidates[0]}|not embedded"


def _embed_new(
    image: ImageSource,
    ids: list[str],
    paths: list[str],
    urls: list[list[str] | None],
    now: list[str | None],
    dense: dict[str, np.ndarray],
    say: Callable[[str], None],
) -> None:
    """Embed, in place, the products whose photo can be used (a source `now`) but has no stored embedding as it is
    now (photos the last extraction failed on stay missing: decoding them again would fail again)."""
    failed = known_failures(image)
    rows = np.flatnonzero(
        np.isnan(dense["image"]).all(axis=1)
        & np.array([s is not None and (pid, p) not in failed for s, pid, p in zip(now, ids, paths)], dtype=bool)
    )
    if not len(rows):
        return
    say(
        f"{len(rows):,} products have a photo that is not in the image store (new or changed): embedding them now; "
        f"`mmgbm extract-images` stores them for next time"
    )
    dense["image"][rows], dense["image.colour"][rows] = embed_images(
        image, [paths[i] for i in rows], [urls[i] for i in rows]
    )


def _read_dense(store: FeatureStore, ids: list[str], sources: list[str | None] | None) -> np.ndarray:
    """Stored rows for `ids`; with the current `sources`, NaN rows where the stored ones were made from another file."""
    if not store.shards():
        raise MmgbmError(f"no image features in {store.root}; run `mmgbm extract-images` first")
    matrix = store.read_dense(ids)[0]
    if sources is not None:
        matrix[~_unchanged(store.read_sources(ids), sources)] = np.nan
    return matrix


def _unchanged(stored: list[str | None], now: list[str | None]) -> np.ndarray:
    """Per row: the stored features were made from what the row holds now (rows stored without a record of what
    they were made from are trusted, as extraction trusts them)."""
    return np.array([s is None or s == n for s, n in zip(stored, now)], dtype=bool)


def _replace_rows(matrix: sp.csr_matrix, rows: np.ndarray, fresh: sp.csr_matrix) -> sp.csr_matrix:
    # Fresh rows are appended, then every replaced row is pointed at its fresh copy.
    stacked = sp.vstack([matrix, fresh], format="csr")
    order = np.arange(matrix.shape[0])
    order[rows] = matrix.shape[0] + np.arange(len(rows))
    return stacked[order]
