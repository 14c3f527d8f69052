"""`mmgbm brands`: one canonical name per brand, and the brand values that name no brand, for a person to check.

Reads the training split's brand column and the product titles and writes to <workdir>/reports/brands/:

    brands.csv    one line per spelling: brand, canonical, products, reason, no_brand; checked (and edited) by a
                  person, it is what `targets.<name>.normalise` reads back (mmgbm.commands.normalise)
    brands.html   the brands spelled more than one way and the values that look like no brand, largest first,
                  with example titles

Spellings are grouped where they differ only by accents, case, punctuation or spacing (`reason` says which), or
where the normalise file of the target on that column already says so (`alias`); the canonical name is the spelling
most products use unless that file says otherwise, and its decisions (no brand or not) are kept. A value looks like
no brand when at most a fifth of its products' titles start with it and either those titles start with many other
names (the seller wrote a fit where the brand goes: "Regular" on shirts whose titles start with 104 names) or every
word of it is written inside other brands' titles, where products are described ("Red", "Slim Fit").
"""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mmgbm.catalogue import load_split
from mmgbm.commands.normalise import COLUMNS, read_names
from mmgbm.commands.targets import given_labels
from mmgbm.config import Config
from mmgbm.errors import MmgbmError
from mmgbm.estimator.label_names import LabelNames, differences, fold
from mmgbm.features.atomic import write_atomically
from mmgbm.workdir import brands_dir

LEAD_SHARE = 0.2  # a brand's own titles start with it far more often than this
MANY_NAMES = 3  # titles starting with this many different names (over as many products) are many brands' titles
INSIDE_BRANDS = 3  # a word written inside the titles of this many other brands describes products
LONGEST_BRAND = 6  # words of a title compared with a brand's name
EXAMPLES = 3  # titles shown per spelling in the page
ALIAS = "alias"


@dataclass
class BrandReport:
    table: pd.DataFrame  # COLUMNS, one line per spelling, groups largest first
    csv_path: Path
    html_path: Path

    def describe(self) -> str:
        t = self.table
        merged = t[t["brand"] != t["canonical"]]
        no_brand = t[t["no_brand"] != ""]
        return (
            f"{len(t):,} spellings on {int(t['products'].sum()):,} products: {len(merged):,} merged into another "
            f"spelling ({merged['canonical'].nunique():,} brands); {len(no_brand):,} values on "
            f"{int(no_brand['products'].sum()):,} products look like no brand\n-> {self.csv_path}\n-> "
            f"{self.html_path}"
        )


def brands(cfg: Config, column: str, titles: str | None = None) -> BrandReport:
    """Group the spellings of the training split's `column` and find its values that name no brand, reading the
    product titles (`titles`, default the first text column); write brands.csv and brands.html."""
    frame = load_split(cfg, "train", with_targets=False)
    source = f"{cfg.data.splits['train']} (train)"
    titles = titles or next(iter(cfg.data.text_columns), None)
    if titles is None:
        raise MmgbmError("mmgbm brands reads the product titles: pass --titles COLUMN or set data.text_columns")
    for name in (column, titles):
        if name not in frame.columns:
            raise MmgbmError(
                f"{source}: no column {name!r}; pick the brand column with --column and the titles with --titles"
            )
    labels = given_labels(frame, column)
    if labels.isna().all():
        raise MmgbmError(f"{source}: column {column!r} has no values; is it the brand column?")
    table, examples = find_brands(labels, frame[titles], declared_names(cfg, column))
    folder = brands_dir(cfg)
    report = BrandReport(table, folder / "brands.csv", folder / "brands.html")
    write_atomically(report.csv_path, lambda tmp: table.to_csv(tmp, index=False))
    write_atomically(report.html_path, lambda tmp: tmp.write_text(_page(table, examples, column)))
    return report


def declared_names(cfg: Config, column: str) -> LabelNames | None:
    """The names a person already keeps for `column`: the normalise file of a target on it, if any."""
    files = [t.normalise for t in cfg.targets.values() if t.column == column and t.normalise not in (None, "auto")]
    return read_names(Path(files[0])) if files else None


def find_brands(
    labels: pd.Series, titles: pd.Series, declared: LabelNames | None = None
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """One line per spelling of `labels` (None = no value; `titles` row for row) with its canonical name, products,
    reason and no_brand (COLUMNS), groups largest first; and up to EXAMPLES titles per spelling. `declared` (a
    person's file) decides the spellings it knows."""
    given = labels.notna().to_numpy()
    labels = labels.to_numpy()[given]
    titles = titles.fillna("").astype(str).to_numpy()[given]
    counts = Counter(labels)
    automatic = LabelNames.grouped(counts)
    suspects = no_brand_values(labels, titles)
    rows = []
    for spelling, products in counts.items():
        if declared is not None and declared.knows(spelling):
            canonical, no_brand = _declared(spelling, declared, automatic)
        else:
            canonical, no_brand = automatic.name(spelling), suspects.get(fold(spelling), "")
        rows.append(
            {
                "brand": spelling,
                "canonical": canonical,
                "products": products,
                "reason": _reason(spelling, canonical),
                "no_brand": no_brand,
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["group"] = table.groupby("canonical")["products"].transform("sum")
    table["first"] = table["brand"] != table["canonical"]
    table = table.sort_values(
        ["group", "canonical", "first", "products", "brand"], ascending=[False, True, True, False, True], kind="stable"
    )
    examples: dict[str, list[str]] = defaultdict(list)
    for spelling, title in zip(labels, titles):
        if len(examples[spelling]) < EXAMPLES and title:
            examples[spelling].append(title)
    return table[COLUMNS].reset_index(drop=True), examples


def _declared(spelling: str, declared: LabelNames, automatic: LabelNames) -> tuple[str, str]:
    """(canonical, no_brand) of a spelling a person's file settles: its own line, or the lines of its other
    spellings."""
    name = declared.name(spelling)
    if spelling in declared.canonical:
        return declared.canonical[spelling], declared.no_label.get(spelling, "")
    if name is None:
        return automatic.name(spelling), f"marked no brand in {Path(declared.source).name} (another spelling)"
    return name, ""


def _reason(spelling: str, canonical: str) -> str:
    if spelling == canonical:
        return ""
    if fold(spelling) == fold(canonical):
        return "+".join(differences(spelling, canonical))
    return ALIAS


def no_brand_values(labels, titles) -> dict[str, str]:
    """Per key (`fold`) of a value that looks like no brand, why; see the module docstring. `labels` and `titles`
    row for row, every label given."""
    by_key: dict[str, list[list[str]]] = defaultdict(list)
    inside: dict[str, dict[str, str]] = defaultdict(dict)  # word -> {brand key: a title holding it past the start}
    for label, title in zip(labels, titles):
        key, words = fold(label), title.split()
        by_key[key].append(words)
        for word in words[1:]:
            inside[fold(word)].setdefault(key, title)
    names: dict[str, str] = {}  # key -> its most common spelling, whose words are looked for in titles
    for label, _ in Counter(labels).most_common():
        names.setdefault(fold(label), label)
    reasons = {}
    for key, titles_words in by_key.items():
        n = len(titles_words)
        led = sum(
            any(fold(" ".join(words[:m])) == key for m in range(1, min(len(words), LONGEST_BRAND) + 1))
            for words in titles_words
        )
        if led > LEAD_SHARE * n:
            continue
        start = (
            "its one product's title does not start with it"
            if n == 1
            else f"none of its {n:,} products' titles starts with it"
            if not led
            else f"only {led:,} of its {n:,} products' titles start with it"
        )
        firsts = Counter(fold(words[0]) for words in titles_words if words)
        shown = {fold(words[0]): words[0] for words in titles_words if words}
        words = [w for w in (fold(part) for part in re.split(r"[\W_]+", names[key])) if w]
        others = [{k: t for k, t in inside.get(w, {}).items() if k != key} for w in words]
        if n >= MANY_NAMES and len(firsts) >= MANY_NAMES:
            common = ", ".join(shown[k] for k, _ in firsts.most_common(EXAMPLES))
            reasons[key] = f"{start}; they start with {len(firsts):,} other names ({common} ...)"
        elif words and all(len(o) >= INSIDE_BRANDS for o in others):
            rarest = min(others, key=len)
            said = " and ".join(f"'{w}'" for w in words)
            reasons[key] = (
                f"{start}; {said} {'is' if len(words) == 1 else 'are'} written inside the titles of at "
                f"least {len(rarest):,} other brands (e.g. {next(iter(rarest.values()))!r})"
            )
    return reasons


def _page(table: pd.DataFrame, examples: dict[str, list[str]], column: str) -> str:
    """The report a person reads before editing brands.csv: merged groups, then values that look like no brand."""
    groups = [g for _, g in table.groupby("canonical", sort=False)]
    merged = [g for g in groups if len(g) > 1 and not (g["no_brand"] != "").all()]
    no_brand = [g for g in groups if (g["no_brand"] != "").any()]

    def spellings(group: pd.DataFrame, say: str) -> str:
        rows = []
        for r in group.itertuples():
            titles = "<br>".join(html.escape(t) for t in examples.get(r.brand, []))
            rows.append(
                f"<tr><td><b>{html.escape(r.brand)}</b></td><td>{r.products:,}</td>"
                f"<td>{html.escape(getattr(r, say) or ('canonical' if say == 'reason' else ''))}</td>"
                f"<td><small>{titles}</small></td></tr>"
            )
        return "\n".join(rows)

    def section(groups_: list[pd.DataFrame], say: str) -> str:
        return "\n".join(
            f"<h3>{html.escape(g['canonical'].iloc[0])} <small>({int(g['products'].sum()):,} products)</small></h3>"
            f"<table><tr><th>spelling</th><th>products</th><th>{say}</th><th>example titles</th></tr>"
            f"{spellings(g, say)}</table>"
            for g in groups_
        )

    single = sum(len(g) == 1 and (g["no_brand"] == "").all() for g in groups)
    title = f"mmgbm brands: {html.escape(column)}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; }} table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: left; vertical-align: top; }}
h3 {{ margin: 1.2em 0 0.3em; }}
</style></head><body>
<h1>{title}</h1>
<p>{len(table):,} spellings on {int(table["products"].sum()):,} training products. brands.csv lists every spelling
with its canonical name; edit it (merge two groups by giving them one canonical, split one by giving a spelling its
own, rename a canonical, fill in or clear no_brand) and name it in <code>targets.&lt;name&gt;.normalise</code>.</p>
<h2>Brands spelled more than one way ({len(merged):,})</h2>
{section(merged, "reason")}
<h2>Values that look like no brand ({len(no_brand):,})</h2>
<p>Their products are left out of training once brands.csv is the target's normalise file.</p>
{section(no_brand, "no_brand")}
<p>{single:,} brands spelled one way only are listed in brands.csv.</p>
</body></html>
"""
