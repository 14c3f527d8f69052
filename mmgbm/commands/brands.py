"""`mmgbm brands`: one canonical name per brand, and the brand values that name no brand, for a person to check.

Reads the training split's brand column and the product titles and writes to <workdir>/reports/brands/:

    brands.csv    one line per spelling: brand, canonical, products, reason, no_brand; checked (and edited) by a
                  person, it is what `targets.<name>.normalise` reads back (mmgbm.commands.normalise)
    brands.html   the brands spelled more than one way and the values that look like no brand, largest first,
                  with example titles

Spellings are grouped where they differ only by accents, case, punctuation or spacing (`reason` says which), or
where the normalise file of the target on that column already says so (`alias`); the canonical name is the spelling
most products use unless that file says otherwise, and its decisions (no brand or not) are kept.

A value is marked no brand only on evidence that it is none, never because titles do not name it: at most a fifth
of its products' titles start with it, and either those titles start with 3 or more other brands (values whose own
titles start with them: the seller wrote a fit where the brand goes, "Regular" on shirts whose titles start with
Nike, Puma ...), or every word of it is written inside the titles of other brands, where products are described
("Red", "Slim Fit"; a product's own brand name in its title does not count). Where titles start with their brand for
under half the products (a grocery shop's "Organic Turmeric Powder 200 g"), where they start says nothing: the first
evidence is off, a value not leading its titles is no hint, and the words must be written inside the titles of 10
other brands, not 3; the summary says so in one line.
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
CARRY_SHARE = 0.5  # titles that start with their product's brand this often are where the catalogue writes brands
MANY_NAMES = 3  # titles starting with this many other brands are many brands' products
INSIDE_BRANDS = 3  # a word written inside the titles of this many other brands describes products...
INSIDE_BRANDS_ALONE = 10  # ...or this many, where titles do not carry brands and nothing else hints the value is none
LONGEST_BRAND = 6  # words of a title compared with a brand's name
EXAMPLES = 3  # titles shown per spelling in the page

ALIAS = "alias"


@dataclass
class BrandReport:
    table: pd.DataFrame  # COLUMNS, one line per spelling, groups largest first
    csv_path: Path
    html_path: Path
    note: str = ""  # one line where the titles do not carry brands, so where they start marked nothing

    def describe(self) -> str:
        t = self.table
        merged = t[t["brand"] != t["canonical"]]
        no_brand = t[t["no_brand"] != ""]
        return (
            f"{len(t):,} spellings on {int(t['products'].sum()):,} products: {len(merged):,} merged into another "
            f"spelling ({merged['canonical'].nunique():,} brands); {len(no_brand):,} values on "
            f"{int(no_brand['products'].sum()):,} products look like no brand\n"
            + (f"{self.note}\n" if self.note else "")
            + f"-> {self.csv_path}\n-> {self.html_path}"
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
    table, examples, note = find_brands(labels, frame[titles], declared_names(cfg, column))
    folder = brands_dir(cfg)
    report = BrandReport(table, folder / "brands.csv", folder / "brands.html", note)
    write_atomically(report.csv_path, lambda tmp: table.to_csv(tmp, index=False))
    write_atomically(report.html_path, lambda tmp: tmp.write_text(_page(table, examples, column, note)))
    return report


def declared_names(cfg: Config, column: str) -> LabelNames | None:
    """The names a person already keeps for `column`: the normalise file of a target on it, if any."""
    files = [t.normalise for t in cfg.targets.values() if t.column == column and t.normalise not in (None, "auto")]
    return read_names(Path(files[0])) if files else None


def find_brands(
    labels: pd.Series, titles: pd.Series, declared: LabelNames | None = None
) -> tuple[pd.DataFrame, dict[str, list[str]], str]:
    """One line per spelling of `labels` (None = no value; `titles` row for row) with its canonical name, products,
    reason and no_brand (COLUMNS), groups largest first; up to EXAMPLES titles per spelling; and a line saying so
    where the titles do not carry brands (else ""). `declared` (a person's file) decides the spellings it knows."""
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
            canonical, no_brand = automatic.name(spelling), suspects.reasons.get(fold(spelling), "")
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
    return table[COLUMNS].reset_index(drop=True), examples, suspects.note()


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


@dataclass
class NoBrandValues:
    """The values of a brand column that look like no brand (`reasons`: per key (`fold`), why), and the share of
    labelled products whose title starts with their own brand (`carried`): below CARRY_SHARE, where titles start
    says nothing about brands and no value is marked on that ground."""

    reasons: dict[str, str]
    carried: float

    @property
    def titles_carry_brands(self) -> bool:
        return self.carried >= CARRY_SHARE

    def note(self) -> str:
        if self.titles_carry_brands:
            return ""
        return (
            f"titles rarely start with their brand ({100 * self.carried:.0f}% of products): no value is marked on "
            f"where titles start"
        )


def _leader(words: list[str], keys) -> str | None:
    """The longest of `keys` the title (its words) starts with, None if none."""
    found = None
    for m in range(1, min(len(words), LONGEST_BRAND) + 1):
        key = fold(" ".join(words[:m]))
        if key in keys:
            found = key
    return found


def _tokens(text: str) -> list[str]:
    """The folded words of a name or title, punctuation dropped ("Women's" -> "women", "s")."""
    return [w for w in (fold(part) for part in re.split(r"[\W_]+", text)) if w]


def _described(labels, titles) -> dict[str, dict[str, str]]:
    """Per word (folded), the brands (keys) whose titles write it past their start, with one such title. A
    product's own brand name is skipped in its title: a name is no descriptor of the brand it names."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for label, title in zip(labels, titles):
        key, own = fold(label), set(_tokens(label))
        for word in set(_tokens(title)[1:]) - own:
            found[word].setdefault(key, title)
    return found


def no_brand_values(labels, titles) -> NoBrandValues:
    """The values that look like no brand, on positive evidence only; see the module docstring. `labels` and
    `titles` row for row, every label given."""
    by_key: dict[str, list[list[str]]] = defaultdict(list)
    led: dict[str, int] = Counter()
    for label, title in zip(labels, titles):
        key, words = fold(label), title.split()
        by_key[key].append(words)
        led[key] += _leader(words, {key}) == key
    names: dict[str, str] = {}  # key -> its most common spelling, whose words are looked for in titles
    for label, _ in Counter(labels).most_common():
        names.setdefault(fold(label), label)
    found = NoBrandValues({}, sum(led.values()) / max(len(labels), 1))
    suspects = [key for key, t in by_key.items() if led[key] <= LEAD_SHARE * len(t)]
    # Brands whose own titles start with them: where a suspect's titles start with one of these, its seller wrote
    # the product's real brand where the brand goes.
    brand_first = set(by_key) - set(suspects) if found.titles_carry_brands else set()
    described = _described(labels, titles)
    # Not leading its own titles is some evidence in a catalogue that writes brands first; elsewhere none.
    many = INSIDE_BRANDS if found.titles_carry_brands else INSIDE_BRANDS_ALONE
    for key in suspects:
        n, titles_words = len(by_key[key]), by_key[key]
        leaders = Counter(k for k in (_leader(words, brand_first) for words in titles_words) if k not in (None, key))
        words = list(dict.fromkeys(_tokens(names[key])))
        others = [{k: t for k, t in described.get(w, {}).items() if k != key} for w in words]
        if len(leaders) >= MANY_NAMES:
            common = ", ".join(names[k] for k, _ in leaders.most_common(EXAMPLES))
            more = " ..." if len(leaders) > EXAMPLES else ""
            found.reasons[key] = (
                f"{_not_leading(led[key], n)}; {sum(leaders.values()):,} start with {len(leaders):,} other brands "
                f"({common}{more})"
            )
        elif words and all(len(o) >= many for o in others):
            rarest = min(others, key=len)
            said = " and ".join(f"'{w}'" for w in words)
            found.reasons[key] = (
                f"{_not_leading(led[key], n) + '; ' if found.titles_carry_brands else ''}{said} "
                f"{'is' if len(words) == 1 else 'are'} written inside the titles of at least {len(rarest):,} other "
                f"brands (e.g. {next(iter(rarest.values()))!r})"
            )
    return found


def _not_leading(led: int, n: int) -> str:
    """How few of a value's `n` products' titles start with it (`led`)."""
    if n == 1:
        return "its one product's title does not start with it"
    if not led:
        return f"none of its {n:,} products' titles starts with it"
    return f"only {led:,} of its {n:,} products' titles start with it"


def _page(table: pd.DataFrame, examples: dict[str, list[str]], column: str, note: str) -> str:
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
{f"<p>{html.escape(note)}.</p>" if note else ""}
<p>Their products are left out of training once brands.csv is the target's normalise file.</p>
{section(no_brand, "no_brand")}
<p>{single:,} brands spelled one way only are listed in brands.csv.</p>
</body></html>
"""
