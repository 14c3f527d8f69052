"""Turning raw catalogue text into plain words: HTML tags and entities out, unicode normalised, missing = empty.

Real catalogues ship descriptions as HTML fragments (`<p>Soft&nbsp;cotton</p>`), sometimes escaped twice
(`&lt;b&gt;`), with full-width or compatibility characters (`ＸＬ`, `ﬁ`). Cleaning happens before tokenising so
that the vocabulary holds words, not markup.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence

import pandas as pd

# Only `<` followed by a letter, `/`, `!` or `?` opens a tag, so "size < 5" or "<3" in a title survive.
# Script and style bodies are code, not words, so they go with their tags.
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[/!?]?[A-Za-z][^<>]*>", re.S | re.I)


def clean_text(text: object, strip_html: bool = True) -> str:
    """One document as plain text; None / NaN / empty become ""."""
    text = _as_text(text)
    # The checks skip the regex and unescape on the plain titles that make up most of a catalogue.
    if strip_html and ("&" in text or "<" in text):
        text = _TAG.sub(" ", html.unescape(text))  # unescape first: entity-escaped tags are tags too
        if "&" in text:
            text = html.unescape(text)  # what double escaping leaves behind (`&amp;nbsp;`)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split())


def clean_texts(texts: Iterable[object], strip_html: bool = True) -> list[str]:
    return [clean_text(t, strip_html) for t in texts]


def join_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """One raw document per row: the named columns' values joined by newlines, missing values skipped."""
    if len(columns) == 1:
        return [_as_text(v) for v in frame[columns[0]].tolist()]
    parts = zip(*(frame[c].tolist() for c in columns))
    return ["\n".join(s for s in map(_as_text, row) if s) for row in parts]


def _as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
