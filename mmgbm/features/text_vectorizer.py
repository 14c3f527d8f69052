"""`TextVectorizer`: cleaned text -> TF-IDF word n-grams, an sklearn estimator with a fingerprint of what it learned.

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
from sklearn.utils.validation import check_is_fitted

from mmgbm.features.text_cleaning import clean_texts


class TextVectorizer(TransformerMixin, BaseEstimator):
    """TF-IDF over word n-grams of HTML-stripped, NFKC-normalised text; float32 CSR out, l2-normalised rows.

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
    ):
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.sublinear_tf = sublinear_tf
        self.lowercase = lowercase
        self.token_pattern = token_pattern
        self.strip_html = strip_html

    def fit(self, docs: Iterable[object], y: object = None) -> "TextVectorizer":
        self.fit_transform(docs)
        return self

    def fit_transform(self, docs: Iterable[object], y: object = None) -> sp.csr_matrix:
        tfidf = self._tfidf()
        matrix = tfidf.fit_transform(clean_texts(docs, self.strip_html))
        self._learned(tfidf)
        return matrix

    def to_data(self) -> dict[str, Any]:
        """Everything the fitted vectorizer knows, as JSON-ready lists and numbers."""
        check_is_fitted(self, "tfidf_")
        return {"params": self.get_params(), "terms": self.tfidf_.get_feature_names_out().tolist(),
                "idf": self.idf_.tolist()}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "TextVectorizer":
        """The vectorizer `to_data` described; it transforms exactly as the one that was fitted."""
        params = dict(data["params"])
        params["ngram_range"] = tuple(params["ngram_range"])
        vectorizer = cls(**params)
        terms, idf = list(data["terms"]), np.asarray(data["idf"], dtype=np.float64)
        if len(terms) != len(idf) or len(set(terms)) != len(terms):
            raise ValueError(f"{len(terms)} terms (some repeated?) for {len(idf)} idf weights")
        tfidf = vectorizer._tfidf()
        tfidf.vocabulary_ = {term: i for i, term in enumerate(terms)}
        tfidf.idf_ = idf
        vectorizer._learned(tfidf)
        return vectorizer

    def _tfidf(self) -> TfidfVectorizer:
        return TfidfVectorizer(
            lowercase=self.lowercase,
            token_pattern=self.token_pattern,
            ngram_range=tuple(self.ngram_range),
            min_df=self.min_df,
            max_df=self.max_df,
            max_features=self.max_features,
            sublinear_tf=self.sublinear_tf,
            dtype=np.float32,
        )

    def _learned(self, tfidf: TfidfVectorizer) -> None:
        self.tfidf_ = tfidf
        self.vocabulary_ = tfidf.vocabulary_
        self.idf_ = tfidf.idf_
        self.fingerprint_ = self._fingerprint()

    def transform(self, docs: Iterable[object]) -> sp.csr_matrix:
        check_is_fitted(self, "tfidf_")
        return self.tfidf_.transform(clean_texts(docs, self.strip_html))

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "tfidf_")
        return self.tfidf_.get_feature_names_out()

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(self.get_params(), sort_keys=True, default=list).encode())
        digest.update("\n".join(self.tfidf_.get_feature_names_out()).encode())
        digest.update(np.ascontiguousarray(self.idf_, dtype=np.float64).tobytes())
        return digest.hexdigest()[:16]
