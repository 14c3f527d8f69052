"""Assembling the feature blocks of a list of products: text and image features joined by product id.

Features come from the feature stores, never by row position. Text of products that are not in the store (a
new `--input` table) is vectorised on the fly with the stored vectorizer, which is exactly what extraction would
have stored; a missing image stays missing (embedding needs the extract step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmgbm.colour import colour_store, read_colour_features
from mmgbm.config import Config
from mmgbm.errors import MmgbmError
from mmgbm.features.text_cleaning import join_columns


@dataclass
class Modalities:
    """Per-product feature blocks aligned to `ids`; a block's mask says which products have that modality."""

    ids: list[str]
    text: dict[str, sp.csr_matrix] = field(default_factory=dict)
    words: dict[str, np.ndarray] = field(default_factory=dict)  # per text field, the cleaned text itself
    image: np.ndarray | None = None
    colour: np.ndarray | None = None  # colour statistics of the same photos (mmgbm.colour)
    fingerprints: dict[str, dict] = field(default_factory=dict)

    def text_mask(self, name: str) -> np.ndarray:
        # An empty TF-IDF row says nothing about the product: treat it like missing text.
        return self.text[name].getnnz(axis=1) > 0

    def dense(self) -> dict[str, np.ndarray]:
        """The dense image blocks present, by block name."""
        blocks = {"image": self.image, "image.colour": self.colour}
        return {name: block for name, block in blocks.items() if block is not None}

    def rows(self, index: np.ndarray) -> "Modalities":
        return Modalities(
            [self.ids[i] for i in index],
            {name: m[index] for name, m in self.text.items()},
            {name: w[index] for name, w in self.words.items()},
            None if self.image is None else self.image[index],
            None if self.colour is None else self.colour[index],
            self.fingerprints,
        )


def images_enabled(cfg: Config) -> bool:
    return bool(cfg.features.image.enabled and cfg.data.image_column)


def load_modalities(cfg: Config, frame: pd.DataFrame) -> Modalities:
    """Every modality the config enables, for the products of `frame` in its row order."""
    ids = frame[cfg.data.id_column].astype(str).tolist()
    data = Modalities(ids)
    if cfg.features.text.enabled:
        from mmgbm.features.text import load_vectorizer, text_store

        for name, columns in cfg.text_fields.items():
            vectorizer = load_vectorizer(cfg, name)
            store = text_store(cfg, name)
            matrix, present = store.read_sparse(ids, len(vectorizer.vocabulary_))
            if not present.all() and all(c in frame.columns for c in columns):
                fresh = vectorizer.transform(join_columns(frame.loc[~present], columns))
                matrix = _replace_rows(matrix, np.flatnonzero(~present), fresh)
            data.text[name] = matrix.astype(np.float32)
            if all(c in frame.columns for c in columns):
                data.words[name] = np.array(join_columns(frame, columns), dtype=object)
            data.fingerprints[f"text/{name}"] = store.fingerprint
    if images_enabled(cfg):
        from mmgbm.features.images import image_store

        store = image_store(cfg)
        if not store.shards():
            raise MmgbmError(f"no image features in {store.root}; run `mmgbm extract-images` first")
        data.image, _ = store.read_dense(ids)
        data.fingerprints[f"image/{cfg.features.image.backbone}"] = store.fingerprint
        data.colour = read_colour_features(cfg, frame)
        data.fingerprints["image/colour"] = colour_store(cfg).fingerprint
    if not data.text and data.image is None:
        raise MmgbmError("no features enabled: enable features.text or features.image in the config")
    return data


def _replace_rows(matrix: sp.csr_matrix, rows: np.ndarray, fresh: sp.csr_matrix) -> sp.csr_matrix:
    # Fresh rows are appended, then every replaced row is pointed at its fresh copy.
    stacked = sp.vstack([matrix, fresh], format="csr")
    order = np.arange(matrix.shape[0])
    order[rows] = matrix.shape[0] + np.arange(len(rows))
    return stacked[order]
