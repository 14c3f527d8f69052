"""The goals of issue 31 on the Flipkart catalogue, on one holdout draw: brand spellings merged, no false merges,
fit / colour values found as no brand, and brand accuracy on canonical names beside today's.

    python scripts/bench_brands.py [--holdout-seed N] [--no-accuracy]

Runs `mmgbm brands --column brand` on the training split of configs/flipkart.yaml (--holdout-seed N draws another
20% of products as the test split, in the sibling workdirs bench_accuracy.py uses), then counts on its brands.csv:
- merged: of the groups of training spellings that differ only by accents, case, punctuation or spacing, the share
  whose spellings all got one canonical name (goal >= 98%);
- false merges: the pairs of names that share a word but are different brands (their letters differ: Red Chief /
  Red Tape) are listed, and a group formed that holds such a pair is a false merge; goal <= 1% of the groups formed;
- no brand: of the fit / colour values the issue names, the share flagged (goal >= 90%); the same over every value
  made only of the colour / fit / size words of VOCABULARY (by values and by products), and the flagged values
  outside that list, for a person to judge;
- on catalogues whose titles do not carry the brand (issue 38), Flipkart rewritten by catalogue_variants.py
  (brand removed from the titles, moved to their end, grocery-style titles; and the grocery descriptions read as
  titles), with the same holdout draw: the training products marked no brand, those whose value is made of the
  colour / fit / size words (the Flipkart brand column's own, rightly marked), and the rest, real brands: goal
  <= 1% of training products;
then (unless --no-accuracy) trains brand twice in `<workdir>-brands`, sharing the text features: as today (no
normalise) and with brands.csv as written (normalise), and scores both on the test products: today's model on the
labels as written (today's figure, and without the products marked no brand), both on canonical names (truth and
prediction read through brands.csv, products marked no brand left out), and how many predictions are another
spelling of a brand in brands.csv or a value marked no brand.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from bench_accuracy import CONFIGS, split_config
from catalogue_variants import FLIPKART, variant

from mmgbm.catalogue import load_split
from mmgbm.commands.brands import brands
from mmgbm.commands.normalise import read_names
from mmgbm.commands.predict import predict
from mmgbm.commands.targets import given_labels
from mmgbm.commands.train import train
from mmgbm.config import Config, load_config
from mmgbm.estimator.label_names import fold
from mmgbm.stores import extract_text

NAMED = ["Regular", "Red", "Purple", "Slim Fit", "Grey"]  # the fit / colour values issue 31 names
COLOURS = {
    "black",
    "white",
    "red",
    "pink",
    "purple",
    "blue",
    "beige",
    "multicolor",
    "multicolour",
    "multi",
    "maroon",
    "brown",
    "grey",
    "gray",
    "yellow",
    "green",
    "skin",
    "orange",
    "peach",
    "navy",
    "cream",
    "gold",
    "silver",
    "steel",
    "turquoise",
    "turquise",
    "magenta",
    "majenta",
    "magentta",
    "mauve",
    "coffee",
    "cherry",
    "nude",
    "rust",
    "olive",
    "lavender",
    "rani",
    "falsa",
    "firozy",
    "mehroon",
    "violet",
    "khaki",
    "chocolate",
    "wine",
}
FITS = {"regular", "slim", "fit", "relaxed", "realx", "normal", "comfortable", "smart", "skinny", "trim", "loose"}
SIZES = {"plus", "free", "size", "xs", "xl", "xxl"}
SHADES = {
    "light",
    "dark",
    "deep",
    "baby",
    "hot",
    "neon",
    "royal",
    "sky",
    "powder",
    "carrot",
    "bold",
    "glossy",
    "vibrant",
    "melange",
    "n",
    "print",
    "leopard",
}
VOCABULARY = COLOURS | FITS | SIZES | SHADES
SHARED_WORDS_IGNORED = {"and", "the", "of", "by", "for", "n", "a", "in", "on", "s"}  # words that make no brand
SHOWN = 12
# (variant, the column read as titles; None = product_name): catalogues whose titles do not carry the brand.
VARIANT_RUNS = [("brand_removed", None), ("brand_at_end", None), ("grocery", None), ("grocery", "description")]
MOST_MARKED = 0.01  # issue 38: at most this share of training products marked no brand where titles carry none


def words(name: str) -> list[str]:
    return [w for w in (fold(part) for part in re.split(r"[\W_]+", name)) if w]


def is_fit_or_colour(name: str) -> bool:
    named = words(name)
    return bool(named) and set(named) <= VOCABULARY and not set(named) <= SHADES


def groups_merged(table: pd.DataFrame) -> tuple[int, int]:
    """(groups of spellings sharing a key, those whose spellings all got one canonical name)."""
    by_key = table.groupby(table["brand"].map(fold))["canonical"]
    spellings = by_key.size()
    canonicals = by_key.nunique()[spellings > 1]
    return len(canonicals), int((canonicals == 1).sum())


def false_merges(table: pd.DataFrame) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    """(pairs of names sharing a word whose letters differ, those made one brand, groups formed)."""
    keys = (
        table.assign(key=table["brand"].map(fold))
        .groupby("key")
        .agg(name=("brand", "first"), canonical=("canonical", "first"), products=("products", "sum"))
    )
    by_word = defaultdict(list)
    for key, name in keys["name"].items():
        for word in set(words(name)) - SHARED_WORDS_IGNORED:
            by_word[word].append(key)
    pairs = {
        tuple(sorted(pair)) for holders in by_word.values() if len(holders) <= 200 for pair in combinations(holders, 2)
    }  # a word in hundreds of names ("fashion") links no brand
    ordered = sorted(pairs, key=lambda p: -(keys.loc[p[0], "products"] + keys.loc[p[1], "products"]))
    named = [(keys.loc[a, "name"], keys.loc[b, "name"]) for a, b in ordered]
    merged = [pair for pair, (a, b) in zip(named, ordered) if keys.loc[a, "canonical"] == keys.loc[b, "canonical"]]
    formed = int((table.groupby("canonical").size() > 1).sum())
    return named, merged, formed


def no_brand_found(table: pd.DataFrame) -> None:
    flagged = table["no_brand"] != ""
    named = table[table["brand"].isin(NAMED)]
    share = (named["no_brand"] != "").mean()
    print(
        f"no brand: the values the issue names: {int((named['no_brand'] != '').sum())} of {len(named)} flagged "
        f"({', '.join(named['brand'])}) {100 * share:.0f}% (goal >= 90%: {'PASS' if share >= 0.9 else 'FAIL'})"
    )
    listed = table["brand"].map(is_fit_or_colour)
    products = table.loc[listed, "products"]
    print(
        f"  every value made of colour / fit / size words: {int((listed & flagged).sum())} of {int(listed.sum())} "
        f"values flagged ({100 * (listed & flagged).sum() / listed.sum():.1f}%), "
        f"{int(table.loc[listed & flagged, 'products'].sum()):,} of {int(products.sum()):,} products "
        f"({100 * table.loc[listed & flagged, 'products'].sum() / products.sum():.1f}%)"
    )
    missed = table[listed & ~flagged]
    print(f"  not flagged: {', '.join(f'{b} ({n})' for b, n in zip(missed['brand'], missed['products']))}")
    outside = table[flagged & ~listed]
    print(
        f"  flagged outside the word list ({len(outside)}, for a person to judge): "
        f"{', '.join(f'{b} ({n})' for b, n in zip(outside['brand'], outside['products']))}"
    )


def variants(folder: Path, seed: int) -> None:
    """`mmgbm brands` on each of VARIANT_RUNS, written under `folder`, and how many training products it marks."""
    products = pd.read_csv(FLIPKART)
    print("\ncatalogues whose titles do not carry the brand (scripts/catalogue_variants.py):")
    for name, titles in VARIANT_RUNS:
        path = folder / "variants" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        variant(products, name).to_csv(path, index=False)
        overrides = {"data.splits.train": str(path), "data.numeric_columns": [], "data.holdout.seed": seed}
        report = brands(
            load_config(CONFIGS["flipkart"], {**overrides, "workdir": str(path.with_suffix(""))}), "brand", titles
        )
        table = report.table
        marked = table[table["no_brand"] != ""]
        words = marked["brand"].map(is_fit_or_colour)
        others = marked[~words]
        total = int(table["products"].sum())
        all_marked, of_words, of_others = (int(t["products"].sum()) for t in (marked, marked[words], others))
        ok = of_others <= MOST_MARKED * total
        print(
            f"  {name} ({titles or 'product_name'}): {all_marked:,} of {total:,} training products marked no brand "
            f"({100 * all_marked / total:.2f}%), {of_words:,} of them with colour / fit / size values; other values: "
            f"{len(others)} on {of_others:,} products ({100 * of_others / total:.2f}%; goal <= "
            f"{100 * MOST_MARKED:.0f}%: {'PASS' if ok else 'FAIL'})"
        )
        shown = ", ".join(f"{b} ({n})" for b, n in zip(others["brand"][:SHOWN], others["products"][:SHOWN]))
        print(f"    {report.note or 'titles carry brands'}; other values marked: {shown or 'none'}")


def accuracy(cfg: Config, csv: Path) -> None:
    """Today's brand model and the normalised one, trained in the same session and scored on the test products."""
    normalised = "brand_canonical"
    # brands.csv as written, whatever share it marks: Flipkart's brand column holds colours and fits on more products
    # than max_no_label allows by default.
    cfg.targets[normalised] = cfg.targets["brand"].model_copy(update={"normalise": csv, "max_no_label": 1.0})
    names = read_names(csv)
    truth = given_labels(load_split(cfg, "test"), "brand").to_numpy()
    labelled = pd.notna(truth)
    canonical_truth = np.full(len(truth), None, dtype=object)
    canonical_truth[labelled] = names.names(truth[labelled])
    scored = pd.notna(canonical_truth)
    print(
        f"\nbrand on {int(labelled.sum()):,} labelled test products; {int((labelled & ~scored).sum()):,} marked "
        f"no brand are left out of the canonical figures"
    )
    print(
        f"{'model':<24} {'as written':>10} {'brands only':>11} {'canonical':>10} {'other spelling':>14} "
        f"{'no brand':>8} {'train s':>8}"
    )
    for target, label in (("brand", "today (no normalise)"), (normalised, "normalise: brands.csv")):
        started = time.perf_counter()
        train(cfg, [target], force=True)
        seconds = time.perf_counter() - started
        predicted = predict(cfg, [target], split="test")[target].to_numpy().astype(object)
        read = names.names(predicted)
        written = [np.mean(predicted[rows] == truth[rows]) for rows in (labelled, scored)]
        shown = [f"{100 * w:.2f}%" if target == "brand" else "-" for w in written]
        on_canonical = np.mean(read[scored] == canonical_truth[scored])
        other = int((pd.notna(read) & (read != predicted)).sum())
        print(
            f"{label:<24} {shown[0]:>10} {shown[1]:>11} {100 * on_canonical:>9.2f}% {other:>14,} "
            f"{int(pd.isna(read).sum()):>8,} {seconds:>8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holdout-seed", type=int, default=0, help="which 20%% of products are the test split")
    parser.add_argument("--no-accuracy", action="store_true", help="only the grouping and no-brand goals")
    args = parser.parse_args()
    base = split_config(CONFIGS["flipkart"], args.holdout_seed, {})
    folder = Path(base.workdir).parent / f"{Path(base.workdir).name}-brands"
    cfg = load_config(CONFIGS["flipkart"], {"workdir": str(folder), "data.holdout.seed": args.holdout_seed})
    started = time.perf_counter()
    report = brands(cfg, "brand")
    print(f"holdout seed {args.holdout_seed}: {report.describe()} ({time.perf_counter() - started:.1f}s)\n")
    table = pd.read_csv(report.csv_path, keep_default_na=False)

    groups, merged = groups_merged(table)
    print(
        f"merged: {merged} of {groups} groups of spellings differing only by accents, case, punctuation or spacing "
        f"({100 * merged / groups:.1f}%; goal >= 98%: {'PASS' if merged >= 0.98 * groups else 'FAIL'})"
    )
    pairs, wrong, formed = false_merges(table)
    print(
        f"false merges: {len(wrong)} of {formed} groups formed ({100 * len(wrong) / max(formed, 1):.2f}%; goal <= "
        f"1%: {'PASS' if len(wrong) <= 0.01 * formed else 'FAIL'}) among {len(pairs):,} pairs of names sharing a "
        f"word, the largest: {'; '.join(f'{a} / {b}' for a, b in pairs[:SHOWN])}"
    )
    for a, b in wrong:
        print(f"  made one: {a} / {b}")
    no_brand_found(table)
    variants(folder, args.holdout_seed)
    if not args.no_accuracy:
        base_features = Path(base.workdir) / "features"
        extract_text(base)
        if not (folder / "features").exists():
            (folder / "features").symlink_to(base_features, target_is_directory=True)
        accuracy(cfg, report.csv_path)


if __name__ == "__main__":
    main()
