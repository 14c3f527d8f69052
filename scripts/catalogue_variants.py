"""Catalogues unlike Flipkart, made from it: titles that do not start with the brand.

Flipkart writes every title brand first ("Alisha Solid Women's Cycling Shorts"); a grocery shop writes "Organic
Turmeric Powder 200 g" and keeps the brand in its own column, at most mentioned in the description. A rule that reads
where a brand sits in a title must hold on both, so the benchmarks and tests run it on these variants of the shared
Flipkart catalogue, which keep its products, brands, categories and prices and change only how the text is written:

    brand_removed   the title without the brand's words anywhere
    brand_at_end    the title without the brand, then the brand ("Solid Women's Cycling Shorts Alisha")
    grocery         a generic title from the product's category and a pack size ("Fresh Cycling Shorts 200 g"),
                    and a description that names the brand for some products, in the middle of a sentence or first

    python scripts/catalogue_variants.py OUT_DIR [--products N] [--seed S]

writes OUT_DIR/<variant>.csv (uniq_id, product_name, description, brand, discounted_price, cat_l1..cat_l3, the
ratings).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

FLIPKART = Path(__file__).resolve().parents[2] / "shared" / "data" / "flipkart" / "products.csv"
VARIANTS = ("brand_removed", "brand_at_end", "grocery")
# Everything the flipkart config reads but the text; the raw category tree and specifications repeat the title.
KEPT = ["uniq_id", "brand", "discounted_price", "cat_l1", "cat_l2", "cat_l3", "product_rating", "overall_rating"]
DESCRIPTORS = ["Fresh", "Organic", "Premium", "Classic", "Natural", "Pure", "Daily", "Value Pack", "Everyday", "Select"]
UNITS = [("g", [100, 200, 250, 500]), ("kg", [1, 2, 5]), ("ml", [100, 200, 500]), ("L", [1, 2]), ("pcs", [2, 4, 6])]
# How a grocery description mentions the brand: None = not at all.
MENTIONS = [None, "{brand} presents {rest}.", "{rest}, packed by {brand}.", "{rest}. A {brand} product.", None]


def without_brand(title: str, brand: str | float) -> str:
    """The title with every whole-word occurrence of the brand removed, spaces and leading punctuation tidied."""
    title = str(title) if isinstance(title, str) else ""
    if isinstance(brand, str) and brand.strip():
        title = re.sub(rf"(?<!\w){re.escape(brand.strip())}(?!\w)", " ", title, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", title).strip(" -,:;|")


def _leaf(row) -> str:
    """The deepest category level written, its last three words ("Shorts", "Cycling Shorts")."""
    for level in ("cat_l3", "cat_l2", "cat_l1"):
        if isinstance(row[level], str) and row[level].strip():
            return " ".join(row[level].replace("&", " ").split()[-3:])
    return "Product"


def variant(frame: pd.DataFrame, name: str, seed: int = 0) -> pd.DataFrame:
    """One variant of a Flipkart-shaped table (product_name, brand, categories); see the module docstring."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}")
    rng = np.random.default_rng(seed)
    out = frame[KEPT].copy()
    rest = [without_brand(t, b) for t, b in zip(frame["product_name"], frame["brand"])]
    brands = frame["brand"].where(frame["brand"].notna(), None).tolist()
    if name == "brand_removed":
        out["product_name"] = rest
        out["description"] = rest
    elif name == "brand_at_end":
        out["product_name"] = [f"{r} {b}".strip() if b else r for r, b in zip(rest, brands)]
        out["description"] = rest
    else:
        titles, descriptions = [], []
        for (_, row), r, b in zip(frame.iterrows(), rest, brands):
            unit, sizes = UNITS[rng.integers(len(UNITS))]
            titles.append(f"{DESCRIPTORS[rng.integers(len(DESCRIPTORS))]} {_leaf(row)} {rng.choice(sizes)} {unit}")
            mention = MENTIONS[rng.integers(len(MENTIONS))]
            descriptions.append(mention.format(brand=b, rest=r) if mention and b else f"{r}.")
        out["product_name"] = titles
        out["description"] = descriptions
    return out[["uniq_id", "product_name", "description", *KEPT[1:]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--products", type=int, default=None, help="the first N products only (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frame = pd.read_csv(FLIPKART, nrows=args.products)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in VARIANTS:
        path = args.out / f"{name}.csv"
        variant(frame, name, args.seed).to_csv(path, index=False)
        print(f"{name}: {len(frame):,} products -> {path}")


if __name__ == "__main__":
    main()
