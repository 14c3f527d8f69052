"""Google Merchant Center product feeds read as catalogue tables: the tab-separated file and the RSS 2.0 XML file.

A shop that advertises on Google already keeps its catalogue in this form, so it can point `data.splits` at the
feed it uploads instead of converting it. A feed is not an ordinary table, hence its own module:
- Every attribute is text (ids, `gtin`, `product_type`, `google_product_category` such as `1604` stay as written);
  only `price` and `sale_price` become numbers. They are written with their currency (`15.00 USD`, `USD 15.00`,
  `1,299.00 INR`): the number goes in the column, the currency in `<column>_currency`. A bare number is read with
  no currency (Merchant Center then uses the target country's). A column that mixes currencies is refused, since
  its numbers could not be compared; so is a price written any other way (`15,00 EUR`, `$15`): it names the row.
- Header names may carry the `g:` prefix some exports keep (`g:id`); it is dropped.
- `additional_image_link` is a JSON list of URLs in both formats (XML repeats the element; the TSV separates URLs
  with commas, as Merchant Center asks). Any other element an XML item repeats is a JSON list too, and one with
  sub-attributes (`<g:shipping><g:country>..`) a JSON object, so nothing nested is mistaken for the product's own.
- XML is parsed with defusedxml: a DOCTYPE that declares entities (billion laughs, external files) is refused.

Which files are feeds: an `.xml` file always is (RSS 2.0 with the `g:` namespace, items under rss/channel/item).
A delimited file (`.tsv`, `.txt`, `.csv`) is one when a header name has the `g:` prefix, or when it has both
`image_link` and `availability`: Merchant Center requires both of every product, and ordinary catalogues rarely
name a column either. Anything else is read as an ordinary table, prices and all left as pandas reads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO
from xml.etree.ElementTree import Element, ParseError

import pandas as pd
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from mmgbm.errors import MmgbmError, first_line

GOOGLE_NS = "http://base.google.com/ns/1.0"
PREFIX = "g:"
RECOGNISING_COLUMNS = {"image_link", "availability"}
PRICE_COLUMNS = ("price", "sale_price")
LIST_COLUMNS = ("additional_image_link",)
CURRENCY_SUFFIX = "_currency"

_NUMBER = r"(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?"
# The number before or after an ISO 4217 code, or alone; commas only as thousands separators.
_PRICE = re.compile(rf"(?:(?P<pre>[A-Za-z]{{3}})\s*)?(?P<num>{_NUMBER})(?:\s*(?P<post>[A-Za-z]{{3}}))?")

RowLabel = Callable[[int], str]


def is_merchant_header(columns: Iterable[object]) -> bool:
    names = [str(c).strip() for c in columns]
    return any(n.startswith(PREFIX) for n in names) or RECOGNISING_COLUMNS <= set(names)


def tidy_delimited_feed(frame: pd.DataFrame, source: str, id_column: str) -> pd.DataFrame:
    """A tab- (or comma-) separated feed read with every attribute as text (mmgbm.catalogue reads it as it reads
    any delimited table, broken records and all): header prefixes, prices and image lists tidied."""
    frame.columns = _strip_prefix(frame.columns, source)
    for column in LIST_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].map(_url_list)
    return tidy_prices(frame, source, _labeller(frame, id_column, "line", first=2))


def read_xml_feed(path: Path, id_column: str) -> pd.DataFrame:
    """An RSS 2.0 feed: one row per rss/channel/item, columns in the order attributes first appear."""
    items: list[dict[str, str]] = []
    with open(path, "rb") as source:
        _collect_items(path, source, items)
    if not items:
        raise MmgbmError(f"{path}: no products (no <item> under <rss><channel>); is this the product feed?")
    frame = pd.DataFrame(items, dtype=str)  # text as read_csv(dtype=str) gives it, missing values kept missing
    return tidy_prices(frame, str(path), _labeller(frame, id_column, "item", first=1))


def _collect_items(path: Path, source: BinaryIO, items: list[dict[str, str]]) -> None:
    tags: list[str] = []
    try:
        for event, element in iterparse(source, events=("start", "end")):
            if event == "start":
                if not tags and element.tag != "rss":
                    raise MmgbmError(
                        f"{path}: not an RSS 2.0 feed (the root element is <{_local(element.tag)}>, not <rss>); "
                        "export the Merchant Center feed as RSS 2.0 XML or as a tab-separated file"
                    )
                tags.append(element.tag)
                continue
            tags.pop()
            if element.tag == "item" and tags == ["rss", "channel"]:
                items.append(_item_attributes(element))
                element.clear()  # a feed can hold millions of items; keep one in memory at a time
    except DefusedXmlException as exc:
        raise MmgbmError(
            f"{path}: refused: the XML declares entities or external references ({type(exc).__name__}), which can "
            "expand a small file to gigabytes or read local files; a feed needs none, so remove its <!DOCTYPE>"
        ) from None
    except ParseError as exc:
        line, column = exc.position
        raise MmgbmError(
            f"{path}: malformed XML at line {line}, column {column + 1} ({first_line(exc)}); "
            "fix the feed or export it again"
        ) from None


def tidy_prices(frame: pd.DataFrame, source: str, row: RowLabel) -> pd.DataFrame:
    """`price` and `sale_price` as floats, each followed by its currency column."""
    for column in PRICE_COLUMNS:
        if column not in frame.columns:
            continue
        parsed = [_parse_price(value, column, source, row(i)) for i, value in enumerate(frame[column])]
        currencies = pd.Series([c for _, c in parsed], index=frame.index, dtype=str)
        _check_one_currency(frame, currencies, column, source, row)
        frame[column] = pd.Series([n for n, _ in parsed], index=frame.index, dtype="float64")
        name = column + CURRENCY_SUFFIX
        if name in frame.columns:
            frame = frame.drop(columns=name)
        frame.insert(frame.columns.get_loc(column) + 1, name, currencies)
    return frame


def _parse_price(value: object, column: str, source: str, where: str) -> tuple[float, str | None]:
    if pd.isna(value) or not str(value).strip():
        return float("nan"), None
    match = _PRICE.fullmatch(str(value).strip())
    if match is None or (match["pre"] and match["post"]):
        raise MmgbmError(
            f"{source}: {where}: cannot read {column} {str(value)!r} as a price; write a number and an ISO 4217 "
            "currency code, e.g. '15.00 USD' or '1,299.00 INR'"
        )
    currency = match["pre"] or match["post"]
    return float(match["num"].replace(",", "")), currency.upper() if currency else None


def _check_one_currency(frame: pd.DataFrame, currencies: pd.Series, column: str, source: str, row: RowLabel) -> None:
    named = currencies.dropna()
    if named.nunique() < 2:
        return
    first = named.iloc[0]
    offending = int((named != first).to_numpy().argmax())
    i_first, i_other = frame.index.get_loc(named.index[0]), frame.index.get_loc(named.index[offending])
    raise MmgbmError(
        f"{source}: {column!r} mixes currencies: {first} ({row(i_first)}) and "
        f"{named.iloc[offending]} ({row(i_other)}); prices in different currencies cannot be "
        f"compared, so split the feed into one file per currency (or convert every price to {first})"
    )


def _labeller(frame: pd.DataFrame, id_column: str, unit: str, first: int) -> RowLabel:
    """How an error names the i-th product: its file line (TSV) or item number (XML), and its id where it has one."""
    ids = frame[id_column] if id_column in frame.columns else pd.Series([None] * len(frame), dtype=object)

    def label(i: int) -> str:
        pid = ids.iloc[i]
        return f"{unit} {i + first}" if pd.isna(pid) else f"{unit} {i + first}, id {pid!r}"

    return label


def _strip_prefix(columns: Iterable[object], source: str) -> list[str]:
    names = [str(c).strip() for c in columns]
    names = [n[len(PREFIX) :] if n.startswith(PREFIX) else n for n in names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MmgbmError(f"{source}: the header names {twice[0]!r} twice (with and without 'g:'); keep one of them")
    return names


def _url_list(value: object) -> object:
    if pd.isna(value):
        return value
    urls = [u.strip() for u in str(value).split(",") if u.strip()]
    return json.dumps(urls) if urls else float("nan")


def _item_attributes(item: Element) -> dict[str, str]:
    values: dict[str, list[object]] = {}
    for child in item:
        name = _attribute(child.tag)
        value = _value(child)
        if name is not None and value is not None:
            values.setdefault(name, []).append(value)
    return {
        name: json.dumps(found) if len(found) > 1 or name in LIST_COLUMNS else _text(found[0])
        for name, found in values.items()
    }


def _value(element: Element) -> object:
    if len(element):
        return {_local(sub.tag): (sub.text or "").strip() for sub in element}
    text = (element.text or "").strip()
    return text or None


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _attribute(tag: object) -> str | None:
    # Merchant attributes are in Google's namespace or (title, link, description) in none; others are not ours.
    if not isinstance(tag, str):
        return None
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return local if namespace == GOOGLE_NS else None
    return tag


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]
