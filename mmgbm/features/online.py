"""Features of products that arrive one request at a time, made exactly as extraction and `load_products` make them.

A service cannot run the extract commands per listing, so this builds the same `ProductMatrix` from the posted
values: text through the stored vectorizers (the ones the models were trained on), the photo through the same
decode as extraction (one decode gives the encoder's input and the colour statistics) and the same frozen encoder,
built once per `OnlineFeatures`. It reads no feature store: what a product is, is what was posted. A posted photo
that cannot be used is the client's error (`BadProduct`), not a missing value: someone is waiting for the answer.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from mmgbm.estimator.products import ProductMatrix
from mmgbm.features import colour
from mmgbm.features.design import ProductFeatures
from mmgbm.features.image_decoding import UnreadableImage, decode_image, decode_image_bytes
from mmgbm.features.image_encoder import ImageEncoder
from mmgbm.features.photo_fetch import PhotoFetcher
from mmgbm.features.text_cleaning import join_columns

# A posted image: a path (relative ones resolve against data.images_root, as in the catalogue), the file's bytes,
# or None for a product without a photo.
PostedImage = str | bytes | None


class BadProduct(ValueError):
    """A posted product that cannot be turned into features; the message is one line naming the product."""


class OnlineFeatures:
    """The feature makers of `features`, loaded once: its stored vectorizers and, when image features are on, the
    encoder.

    `fingerprints` are those `load_products` reports for the stores, so a model's artifact can be checked against
    the features made here exactly as batch predict checks it.
    """

    def __init__(self, features: ProductFeatures):
        self.features = features
        self.fingerprints = {f"text/{field.name}": field.store.fingerprint for field in features.text}
        self.encoder = None
        image = features.image
        if image is not None:
            settings = image.settings  # runtime and precision as the stored features were made
            # One product at a time: OpenVINO compiled for latency (every core on one request).
            self.encoder = ImageEncoder(
                settings.backbone,
                settings.weights,
                settings.image_size,
                settings.batch_size,
                settings.precision,
                settings.runtime,
                performance_hint="latency",
            ).fit()
            self.fingerprints[f"image/{settings.backbone}"] = image.embeddings.fingerprint
            self.fingerprints["image/colour"] = image.colours.fingerprint
            self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="mmgbm-decode")
            # A posted path names a file on the server: only the catalogue's images may be read, as in extraction;
            # a posted URL only where the config lets photos be fetched, from public addresses or listed hosts.
            self.photos = image.photos
            self._fetcher: PhotoFetcher | None = None
            self._lock = threading.Lock()

    @property
    def columns(self) -> list[str]:
        """The table columns a posted product may carry besides its id and image."""
        text = [c for field in self.features.text for c in field.columns]
        return [c for c in dict.fromkeys(text + self.features.meta) if c != self.features.id_column]

    def products(self, frame: pd.DataFrame, images: list[PostedImage]) -> ProductMatrix:
        """The products of `frame` (the id column and any of `columns`, missing ones missing) with their images."""
        if len(images) != len(frame):
            raise ValueError(f"{len(images)} images for {len(frame)} products")
        ids = frame[self.features.id_column].astype(str).tolist()
        text, words, dense = {}, {}, {}
        for field in self.features.text:
            documents = join_columns(frame.reindex(columns=field.columns), field.columns)
            text[field.name] = field.vectorizer.transform(documents).astype(np.float32)
            words[field.name] = np.array(documents, dtype=object)
        if self.encoder is not None:
            dense["image"], dense["image.colour"] = self._image_blocks(ids, images)
        return ProductMatrix(ids, text, words, dense, frame[self.features.meta_columns(frame)])

    def _image_blocks(self, ids: list[str], images: list[PostedImage]) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, colour statistics), NaN rows for products posted without a photo."""
        embeddings = np.full((len(ids), self.encoder.dim), np.nan, dtype=np.float32)
        colours = np.full((len(ids), colour.DIM), np.nan, dtype=np.float32)
        # Decoded in threads (PIL lets go of the GIL while it decodes and resizes); the first bad photo, in order,
        # is the one reported.
        decoded = list(self._pool.map(self._decode, ids, images))
        rows = [row for row, d in enumerate(decoded) if d is not None]
        if rows:
            colours[rows] = [decoded[row].colour for row in rows]
            embeddings[rows] = self.encoder.transform(np.stack([decoded[row].pixels for row in rows]))
        return embeddings, colours

    def _decode(self, pid: str, image: PostedImage):
        if image is None:
            return None
        try:
            if isinstance(image, bytes):
                return decode_image_bytes(image, self.encoder.size)
            candidates = self.photos.candidates(image)
            path = self.photos.chosen(candidates)
            if path and self.photos.fetched(path):
                fetched = self._photo_fetcher().fetch(candidates)
                if fetched.reason:
                    raise UnreadableImage(fetched.reason)
                return decode_image_bytes(fetched.data, self.encoder.size)
            self.photos.check(path)
            return decode_image(path, self.encoder.size, self.photos.inside)
        except UnreadableImage as exc:
            where = "" if isinstance(image, bytes) else f" {image if '://' in image else Path(image).name!r}"
            raise BadProduct(f"product {pid!r}: image{where} unusable ({exc.reason})") from None

    def _photo_fetcher(self) -> PhotoFetcher:
        """One fetcher for the service's life, started by the first posted photo URL (its loop thread serves every
        request thread)."""
        with self._lock:
            if self._fetcher is None:
                self._fetcher = self.photos.fetcher()
            return self._fetcher
