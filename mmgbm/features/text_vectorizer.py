"""`TextVectorizer`: cleaned text -> TF-IDF word n-grams and character n-grams, an sklearn estimator with a
fingerprint of what it learned.

Character n-grams (within word boundaries) sit beside the words because product titles spell one thing many ways:
"Tshirt", "T-Shirt" and "Tshirts", model numbers, brand names glued to a word. They lifted a LinearSVC on fashion
articleType from 95.4% to 97.3% on held-out products, and flipkart cat_l3 from 92.2% to 92.9%. Both blocks are
TF-IDF weighted on their own, then every row is scaled to unit length.

The fingerprint (parameters + vocabulary + idf) is stamped on every text feature shard, so shards written by one
fitted vectorizer are never read with another one's column meanings. A fitted vectorizer is stored as plain data
(`to_data` / `from_data`: parameters, terms in column order, idf), never pickled: a shared workdir must not be able
to run code on whoever reads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from mmgbm.features.text_cleaning import clean_texts

# Per block (words, characters): the prefix of its keys in `to_data` and of its feature names.
STORED_AS = ("", "char_")
NAMED_AS = ("", "chars:")


class TextVectorizer(TransformerMixin, BaseEstimator):
    """TF-IDF over word n-grams (columns first) and, unless `char_ngram_range` is None, character n-grams (then)
    of HTML-stripped, NFKC-normalised text; float32 CSR out, l2-normalised rows.

    Empty or missing documents are valid and give empty rows.
    """

    def __init__(
        self,
        ngram_range: tuple[int, int] = (1, 2),
        min_df: int | float = 2,
        max_df: int | float = 1.0,
        max_features: int | None = 200_000,
        sublinear_tf: bool = True,
        lowercase: bool = True,
        token_pattern: str = r"(?u)\b\w+\b",
        strip_html: bool = True,
        char_ngram_range: tuple[int, int] | None = (2, 5),
    ):
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.sublinear_tf = sublinear_tf
        self.lowercase = lowercase
        self.token_pattern = token_pattern
        self.strip_html = strip_html
        self.char_ngram_range = char_ngram_range

    def fit(self, docs: Iterable[object], y: object = None) -> "TextVectorizer":
        self.fit_transform(docs)
        return self

    def fit_transform(self, docs: Iterable[object], y: object = None) -> sp.csr_matrix:
        docs = clean_texts(docs, self.strip_html)
        blocks = self._new_blocks()
        matrix = _joined([block.fit_transform(docs) for block in blocks])
        self._learned(blocks)
        return matrix

    def to_data(self) -> dict[str, Any]:
        """Everything the fitted vectorizer knows, as JSON-ready lists and numbers."""
        check_is_fitted(self, "blocks_")
        data = {"params": self.get_params()}
        for prefix, block in zip(STORED_AS, self.blocks_):
            data.update({f"{prefix}terms": block.get_feature_names_out().tolist(), f"{prefix}idf": block.idf_.tolist()})
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "TextVectorizer":
        """The vectorizer `to_data` described; it transforms exactly as the one that was fitted."""
        params = dict(data["params"])
        params["ngram_range"] = tuple(params["ngram_range"])
        # Vectorizers stored before character n-grams existed had words only.
        chars = params.get("char_ngram_range")
        params["char_ngram_range"] = tuple(chars) if chars is not None else None
        vectorizer = cls(**params)
        blocks = vectorizer._new_blocks()
        for prefix, block in zip(STORED_AS, blocks):
            _restore(block, data[f"{prefix}terms"], data[f"{prefix}idf"])
        vectorizer._learned(blocks)
        return vectorizer

    def _new_blocks(self) -> list[TfidfVectorizer]:
        """Unfitted TF-IDF blocks: word n-grams, then (unless switched off) character n-grams within words."""
        shared = dict(
            lowercase=self.lowercase,
            min_df=self.min_df,
            max_df=self.max_df,
            max_features=self.max_features,
            sublinear_tf=self.sublinear_tf,
            dtype=np.float32,
        )
        blocks = [TfidfVectorizer(token_pattern=self.token_pattern, ngram_range=tuple(self.ngram_range), **shared)]
        if self.char_ngram_range is not None:
            blocks.append(TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(self.char_ngram_range), **shared))
        return blocks

    def _learned(self, blocks: list[TfidfVectorizer]) -> None:
        self.blocks_ = blocks
        self.vocabulary_ = blocks[0].vocabulary_  # the word terms
        self.idf_ = blocks[0].idf_
        self.fingerprint_ = self._fingerprint()

    @property
    def n_columns_(self) -> int:
        """Width of the vectors: every block's terms."""
        check_is_fitted(self, "blocks_")
        return sum(len(block.vocabulary_) for block in self.blocks_)

    def transform(self, docs: Iterable[object]) -> sp.csr_matrix:
        check_is_fitted(self, "blocks_")
        docs = clean_texts(docs, self.strip_html)
        return _joined([block.transform(docs) for block in self.blocks_])

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Word terms, then character n-grams as "chars:<n-gram>"."""
        check_is_fitted(self, "blocks_")
        return np.concatenate(
            [name + block.get_feature_names_out().astype(object) for name, block in zip(NAMED_AS, self.blocks_)]
        )

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(self.get_params(), sort_keys=True, default=list).encode())
        for block in self.blocks_:
            digest.update("\n".join(block.get_feature_names_out()).encode())
            digest.update(np.ascontiguousarray(block.idf_, dtype=np.float64).tobytes())
        return digest.hexdigest()[:16]


def _restore(tfidf: TfidfVectorizer, terms: list[str], idf: list[float]) -> None:
    """A fitted TfidfVectorizer from its stored terms (in column order) and idf weights."""
    terms, idf = list(terms), np.asarray(idf, dtype=np.float64)
    if len(terms) != len(idf) or len(set(terms)) != len(terms):
        raise ValueError(f"{len(terms)} terms (some repeated?) for {len(idf)} idf weights")
    tfidf.vocabulary_ = {term: i for i, term in enumerate(terms)}
    tfidf.idf_ = idf


def _joined(blocks: list[sp.csr_matrix]) -> sp.csr_matrix:
    """The blocks side by side, rows scaled to unit length (each block is unit length on its own)."""
    if len(blocks) == 1:
        return blocks[0]
    return normalize(sp.hstack(blocks, format="csr", dtype=np.float32))
