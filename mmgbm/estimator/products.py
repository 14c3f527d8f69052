"""`ProductMatrix`: the one input of the estimators, every modality of a list of products aligned row by row.

A catalogue product has text (TF-IDF vectors per field, and the text itself), image blocks (an embedding, colour
statistics of the photo) and metadata columns. Each block has one row per product, in the order of `ids`; a product
without a modality has an empty TF-IDF row, a NaN image row or a missing metadata value. It indexes like an array
(`X[rows]`), so scikit-learn's `cross_val_score`, `clone` and splitters work on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

PRESENT_ROWS = 65_536  # rows of a dense block checked or converted at once


@dataclass
class ProductMatrix:
    """`text[field]`: (n, vocabulary) CSR TF-IDF; `words[field]`: (n,) the text itself (mention heads tokenise
    it); `dense[name]`: (n, d) float blocks whose name's first dotted part is their modality ("image",
    "image.colour"), held as float16 where their values fit it; `meta`: metadata columns, of which the estimator
    reads the ones its parameters name."""

    ids: np.ndarray
    text: dict[str, sp.csr_matrix] = field(default_factory=dict)
    words: dict[str, np.ndarray] = field(default_factory=dict)
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    meta: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=object)
        n = len(self.ids)
        if self.meta is None:
            self.meta = pd.DataFrame(index=range(n))
        blocks = {
            **{f"text[{k}]": v for k, v in self.text.items()},
            **{f"words[{k}]": v for k, v in self.words.items()},
            **{f"dense[{k}]": v for k, v in self.dense.items()},
            "meta": self.meta,
        }
        for name, block in blocks.items():
            if block.shape[0] != n:
                raise ValueError(f"ProductMatrix: {name} has {block.shape[0]} rows but there are {n} ids")
        for name, block in self.dense.items():
            if np.ndim(block) != 2:
                raise ValueError(f"ProductMatrix: dense[{name}] must be 2-d (products x features)")
        self.dense = {name: half_precision(block) for name, block in self.dense.items()}
        self.meta = self.meta.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def shape(self) -> tuple[int, int]:
        """(products, feature columns over every block): what scikit-learn counts samples with."""
        width = sum(b.shape[1] for b in (*self.text.values(), *self.dense.values())) + len(self.words)
        return len(self.ids), width + self.meta.shape[1]

    def __getitem__(self, key) -> "ProductMatrix":
        """Rows by integer positions, a boolean mask or a slice (scikit-learn passes `(rows, ...)`)."""
        if isinstance(key, tuple):
            key = key[0]
        rows = np.arange(len(self.ids))[key]
        rows = np.atleast_1d(rows)
        return ProductMatrix(
            self.ids[rows],
            {k: v[rows] for k, v in self.text.items()},
            {k: v[rows] for k, v in self.words.items()},
            {k: v[rows] for k, v in self.dense.items()},
            self.meta.iloc[rows].reset_index(drop=True),
        )

    def text_present(self, name: str) -> np.ndarray:
        # An empty TF-IDF row says nothing about the product: the same as missing text.
        return self.text[name].getnnz(axis=1) > 0

    def dense_present(self, name: str) -> np.ndarray:
        # A block of rows at a time: a whole block's NaN mask was 1.3 GB at a million photos.
        block = self.dense[name]
        return np.concatenate(
            [
                ~np.isnan(block[start : start + PRESENT_ROWS]).any(axis=1)
                for start in range(0, max(len(block), 1), PRESENT_ROWS)
            ]
        )


def half_precision(block) -> np.ndarray:
    """A dense block as float16, which halves the largest part of a catalogue in memory (a million products' B0
    embeddings: 2.4 GB instead of 4.8): its 11 significant bits are far finer than the heads need, which read
    rows back as float32 before standardising them (`RowView`). A block with values beyond float16's range
    (65,504) stays as it is."""
    block = np.asarray(block)
    if block.dtype == np.float16:
        return block
    out = np.empty(block.shape, dtype=np.float16)
    with np.errstate(over="ignore"):
        for start in range(0, len(block), PRESENT_ROWS):
            chunk = block[start : start + PRESENT_ROWS]
            out[start : start + len(chunk)] = chunk
            if np.isinf(out[start : start + len(chunk)]).sum() > np.isinf(chunk).sum():
                return block
    return out
