"""Google Merchant Center feeds as catalogue tables: the tab-separated and the RSS XML file, read through read_table
and the CLI as a user meets them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mmgbm.catalogue import read_table
from mmgbm.cli import app
from mmgbm.errors import MmgbmError

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
G = "http://base.google.com/ns/1.0"


def write_feed(tmp_path: Path, fmt: str, rows: list[dict[str, str]], prefix: str = "") -> Path:
    """A small feed with these attributes, as Merchant Center takes it: TSV (header names with `prefix`) or XML."""
    if fmt == "tsv":
        path = tmp_path / "feed.tsv"
        names = list(dict.fromkeys(k for row in rows for k in row))
        lines = ["\t".join(prefix + n for n in names)] + ["\t".join(row.get(n, "") for n in names) for row in rows]
        path.write_text("\n".join(lines) + "\n")
        return path
    path = tmp_path / "feed.xml"
    items = "".join("<item>" + "".join(f"<g:{k}>{v}</g:{k}>" for k, v in row.items()) + "</item>\n" for row in rows)
    path.write_text(f'<?xml version="1.0"?>\n<rss version="2.0" xmlns:g="{G}"><channel>\n{items}</channel></rss>\n')
    return path


def test_both_sample_feeds_read_to_the_same_products():
    tsv = read_table(FEEDS / "merchant_feed.tsv", "id")
    xml = read_table(FEEDS / "merchant_feed.xml", "id")
    pd.testing.assert_frame_equal(tsv, xml, check_like=True)
    assert len(tsv) == 40 and tsv["id"].iloc[0] == "be42df7c45ea5505cb27c71e981010a3"
    ring = tsv.iloc[0]
    assert ring["title"] == "Karatcraft Trilic Gold Diamond 18 K Ring"
    # "48,596.00 INR" and "30,817.00 INR": numbers a regression target can learn from, the currency beside them.
    assert (ring["price"], ring["price_currency"], ring["sale_price"]) == (48596.0, "INR", 30817.0)
    assert tsv["price"].dtype == "float64" and set(tsv["price_currency"]) == {"INR"}
    # Category ids stay text, as written: a category, not a quantity.
    assert ring["google_product_category"] == "188" and ring["product_type"] == "Jewellery > Rings"
    assert json.loads(ring["additional_image_link"])[0].startswith("http://img")


@pytest.mark.parametrize("fmt", ["tsv", "xml"])
def test_prices_in_every_merchant_form_become_numbers_with_their_currency(tmp_path: Path, fmt: str):
    prices = ["15.00 USD", "USD 15.50", "1,299.00 usd", "7", ""]
    path = write_feed(
        tmp_path,
        fmt,
        [{"id": f"p{i}", "image_link": "x.jpg", "availability": "in stock", "price": p} for i, p in enumerate(prices)],
    )
    frame = read_table(path, "id")
    assert frame["price"].tolist()[:4] == [15.0, 15.5, 1299.0, 7.0] and pd.isna(frame["price"].iloc[4])
    assert frame["price_currency"].tolist()[:3] == ["USD"] * 3 and frame["price_currency"].iloc[3:].isna().all()


@pytest.mark.parametrize(
    ("fmt", "first", "where"),
    [("tsv", "line 2, id 'p1'", "line 4, id 'p3'"), ("xml", "item 1, id 'p1'", "item 3, id 'p3'")],
)
def test_a_feed_mixing_currencies_is_refused_naming_the_row(tmp_path: Path, fmt: str, first: str, where: str):
    rows = [
        {"id": f"p{i}", "price": p, "image_link": "x.jpg", "availability": "in stock"}
        for i, p in enumerate(["10.00 USD", "12.00 USD", "9.00 EUR"], start=1)
    ]
    with pytest.raises(MmgbmError) as caught:
        read_table(write_feed(tmp_path, fmt, rows), "id")
    message = str(caught.value)
    assert "\n" not in message and "feed." + fmt in message
    assert f"USD ({first}) and EUR ({where})" in message and "one file per currency" in message


@pytest.mark.parametrize(("fmt", "where"), [("tsv", "line 3, id 'p2'"), ("xml", "item 2, id 'p2'")])
def test_a_price_written_some_other_way_is_refused_naming_the_row(tmp_path: Path, fmt: str, where: str):
    rows = [
        {"id": "p1", "price": "1.00 EUR", "image_link": "x.jpg", "availability": "in stock"},
        {"id": "p2", "price": "15,00 EUR"},
    ]
    with pytest.raises(MmgbmError, match=f"{where}: cannot read price '15,00 EUR' as a price.*'15.00 USD'"):
        read_table(write_feed(tmp_path, fmt, rows), "id")


def test_g_prefixed_tsv_headers_are_attribute_names_and_ids_and_categories_stay_text(tmp_path: Path):
    rows = [
        {
            "id": "00123",
            "title": "Shirt",
            "price": "9.99 GBP",
            "product_type": "1604",
            "google_product_category": "1604",
        }
    ]
    frame = read_table(write_feed(tmp_path, "tsv", rows, prefix="g:"), "id")
    assert list(frame.columns) == ["id", "title", "price", "price_currency", "product_type", "google_product_category"]
    assert frame.iloc[0].tolist() == ["00123", "Shirt", 9.99, "GBP", "1604", "1604"]


def test_an_ordinary_csv_is_not_taken_for_a_feed(tmp_path: Path):
    path = tmp_path / "products.csv"
    path.write_text("id,title,price\n1,shirt,15.00 USD\n2,socks,3\n")
    frame = read_table(path, "id")
    assert frame["price"].tolist() == ["15.00 USD", "3"] and "price_currency" not in frame.columns


def test_nested_attributes_do_not_pass_for_the_products_own(tmp_path: Path):
    path = tmp_path / "feed.xml"
    path.write_text(
        f'<rss version="2.0" xmlns:g="{G}" xmlns:c="http://base.google.com/cns/1.0"><channel><item>'
        "<g:id>p1</g:id><title>Mug</title><g:price>5.00 USD</g:price><c:price>1</c:price>"
        "<g:shipping><g:country>US</g:country><g:price>99.00 USD</g:price></g:shipping>"
        "<g:additional_image_link>a.jpg</g:additional_image_link></item></channel></rss>"
    )
    product = read_table(path, "id").iloc[0]
    assert product["price"] == 5.0 and product["title"] == "Mug"
    assert json.loads(product["shipping"]) == {"country": "US", "price": "99.00 USD"}
    assert json.loads(product["additional_image_link"]) == ["a.jpg"]


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>1</g:id><title>&lol3;</title>
</item></channel></rss>"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>1</g:id><title>&secret;</title>
</item></channel></rss>"""


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_xml_declaring_entities_is_refused_in_one_line(tmp_path: Path, document: str):
    path = tmp_path / "feed.xml"
    path.write_text(document)
    with pytest.raises(MmgbmError) as caught:
        read_table(path, "id")
    assert str(caught.value).startswith(f"{path}: refused") and "<!DOCTYPE>" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_malformed_xml_names_the_line(tmp_path: Path):
    path = write_feed(tmp_path, "xml", [{"id": "p1"}, {"id": "p2"}])
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace("</g:id>", "")  # the second item, on line 4
    path.write_text("\n".join(lines))
    with pytest.raises(MmgbmError, match=r"feed.xml: malformed XML at line 4, column \d+ \(mismatched tag"):
        read_table(path, "id")


@pytest.mark.parametrize(("fmt", "where"), [("tsv", "file lines 3"), ("xml", "items 2")])
def test_a_product_without_an_id_is_named(tmp_path: Path, fmt: str, where: str):
    rows = [{"id": "p1", "title": "a", "image_link": "x.jpg", "availability": "in stock"}, {"title": "b"}]
    with pytest.raises(MmgbmError, match=f"1 rows have an empty id in 'id' \\({where}\\)"):
        read_table(write_feed(tmp_path, fmt, rows), "id")


def test_feeds_without_products_are_one_line_errors(tmp_path: Path):
    (tmp_path / "empty.xml").write_text(f'<rss version="2.0" xmlns:g="{G}"><channel><title>t</title></channel></rss>')
    with pytest.raises(MmgbmError, match=r"empty.xml: no products \(no <item>"):
        read_table(tmp_path / "empty.xml", "id")
    (tmp_path / "atom.xml").write_text('<feed xmlns="http://www.w3.org/2005/Atom"><entry/></feed>')
    with pytest.raises(MmgbmError, match=r"atom.xml: not an RSS 2.0 feed \(the root element is <feed>"):
        read_table(tmp_path / "atom.xml", "id")
    (tmp_path / "empty.tsv").write_text("g:id\tg:title\tg:price\n")
    with pytest.raises(MmgbmError, match=r"empty.tsv: no products"):
        read_table(tmp_path / "empty.tsv", "id")


FEED_CONFIG = {
    "workdir": "work",
    "data": {
        "splits": {"train": str(FEEDS / "merchant_feed.xml")},
        "id_column": "id",
        "text_columns": ["title", "description"],
        "image_column": "image_link",
        "categorical_columns": ["brand", "google_product_category"],
    },
    "targets": {"price": {"column": "price", "task": "regression", "log_target": True}},
}


def test_validate_accepts_a_config_whose_training_split_is_a_feed(write_config):
    result = CliRunner().invoke(app, ["validate", "--config", str(write_config(FEED_CONFIG))])
    assert result.exit_code == 0, result.output
    assert "train: 40 products, columns OK" in result.output


def test_a_broken_feed_stops_the_cli_with_one_line(tmp_path: Path, write_config):
    rows = [{"id": "p1", "price": "10.00 USD"}, {"id": "p2", "price": "USD 1O.00"}]
    feed = write_feed(tmp_path, "xml", rows)
    config = write_config({**FEED_CONFIG, "data": {"splits": {"train": str(feed)}}, "targets": {}})
    result = subprocess.run(
        [sys.executable, "-m", "mmgbm", "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "item 2, id 'p2': cannot read price 'USD 1O.00'" in result.stderr
