"""Write the sample Google Merchant Center feed in tests/data/feeds/ (merchant_feed.tsv and merchant_feed.xml, the
same 40 products) from real products of the Flipkart catalogue (../shared/data/flipkart/products.csv beside this repo).

Products with photos, a brand, a description and prices, taken in file order one top-level category at a time so
the sample spans the catalogue. Merchant Center attributes from Flipkart's columns:
    id          uniq_id                 title / description   product_name / description (whitespace collapsed)
    link        product_url             image_link            the first URL of `image`
    additional_image_link              the other URLs (TSV: comma-separated; XML: one element each)
    price       retail_price, as `1,299.00 INR`
    sale_price  discounted_price where it is below retail_price
    product_type                        the category path, `A > B > C` as Merchant Center writes it
    google_product_category            Google's taxonomy id for the top-level categories that have a clear match
    condition / availability            new / in stock (the crawl lists products on sale)

    python scripts/make_sample_feed.py [--data PATH] [--products 40]
"""

from __future__ import annotations

import argparse
import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from mmgbm.feeds import GOOGLE_NS

REPO = Path(__file__).resolve().parents[1]
FLIPKART = REPO.parent / "shared/data/flipkart/products.csv"
OUT = REPO / "tests" / "data" / "feeds"
ATTRIBUTES = [
    "id",
    "title",
    "description",
    "link",
    "image_link",
    "additional_image_link",
    "price",
    "sale_price",
    "brand",
    "product_type",
    "google_product_category",
    "condition",
    "availability",
]
# Attributes RSS itself has; the rest are in Google's namespace.
RSS_ELEMENTS = {"title", "description", "link"}
# Google product taxonomy: Apparel & Accessories > Clothing / Shoes / Jewelry, Home & Garden > Kitchen & Dining / Decor.
GOOGLE_CATEGORY = {
    "Clothing": "1604",
    "Footwear": "187",
    "Jewellery": "188",
    "Kitchen & Dining": "638",
    "Home Decor & Festive Needs": "696",
}
DESCRIPTION_MAX = 5000  # Merchant Center's limit


def pick(products: pd.DataFrame, count: int) -> pd.DataFrame:
    usable = products.dropna(subset=["image", "brand", "description", "retail_price", "discounted_price", "cat_l1"])
    usable = usable[usable["image"].map(lambda s: len(json.loads(s)) > 0)]
    # Round-robin over top-level categories, each in file order: the first of each, then the second of each, ...
    rank = usable.groupby("cat_l1", sort=False).cumcount()
    order = pd.DataFrame({"rank": rank, "category": usable["cat_l1"].map(list(usable["cat_l1"].unique()).index)})
    return usable.loc[order.sort_values(["rank", "category"]).index[:count]]


def inr(amount: float) -> str:
    return f"{amount:,.2f} INR"


def feed_rows(products: pd.DataFrame) -> list[dict[str, object]]:
    rows = []
    for p in products.itertuples(index=False):
        images = json.loads(p.image)
        path = json.loads(p.product_category_tree)[0].split(">>")
        rows.append(
            {
                "id": p.uniq_id,
                "title": " ".join(p.product_name.split()),
                "description": " ".join(p.description.split())[:DESCRIPTION_MAX],
                "link": p.product_url,
                "image_link": images[0],
                "additional_image_link": images[1:],
                "price": inr(p.retail_price),
                "sale_price": inr(p.discounted_price) if p.discounted_price < p.retail_price else "",
                "brand": p.brand.strip(),
                # Flipkart ends a long path with "..." where it cut it; Merchant Center wants whole levels.
                "product_type": " > ".join(level.strip() for level in path if not level.strip().endswith("...")),
                "google_product_category": GOOGLE_CATEGORY.get(p.cat_l1, ""),
                "condition": "new",
                "availability": "in stock",
            }
        )
    return rows


def write_tsv(rows: list[dict[str, object]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, ATTRIBUTES, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "additional_image_link": ",".join(row["additional_image_link"])})


def write_xml(rows: list[dict[str, object]], path: Path) -> None:
    ET.register_namespace("g", GOOGLE_NS)
    rss = ET.Element("rss", {"version": "2.0"})
    channel = ET.SubElement(rss, "channel")
    for tag, text in [
        ("title", "Flipkart sample products"),
        ("link", "http://www.flipkart.com"),
        ("description", "Products from the Flipkart Products catalogue (2016 crawl)"),
    ]:
        ET.SubElement(channel, tag).text = text
    for row in rows:
        item = ET.SubElement(channel, "item")
        for name in ATTRIBUTES:
            values = row[name] if isinstance(row[name], list) else [row[name]]
            for value in filter(None, values):
                tag = name if name in RSS_ELEMENTS else f"{{{GOOGLE_NS}}}{name}"
                ET.SubElement(item, tag).text = str(value)
    ET.indent(rss)
    ET.ElementTree(rss).write(path, encoding="utf-8", xml_declaration=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FLIPKART, help="the Flipkart products.csv")
    parser.add_argument("--products", type=int, default=40)
    args = parser.parse_args()
    rows = feed_rows(pick(pd.read_csv(args.data), args.products))
    OUT.mkdir(parents=True, exist_ok=True)
    write_tsv(rows, OUT / "merchant_feed.tsv")
    write_xml(rows, OUT / "merchant_feed.xml")
    print(f"{len(rows)} products -> {OUT / 'merchant_feed.tsv'}, {OUT / 'merchant_feed.xml'}")


if __name__ == "__main__":
    main()
