"""`mmgbm brands` and `targets.<name>.normalise` through the CLI, on a catalogue the tests write: the spellings of
one brand become one name, a colour written in the brand field is found and left out of training, a person's edits
to brands.csv (a merge, a split, a value marked no brand) are what the model learns, and a model is only used with
the names it was trained with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mmgbm.cli import app
from mmgbm.commands.normalise import COLUMNS
from mmgbm.commands.serve import PredictionService
from mmgbm.config import load_config
from mmgbm.errors import MmgbmError
from mmgbm.workdir import current_version, version_dir
from tests.test_label_in_text import brand_names, catalogue, written_project

runner = CliRunner()
RED_PRODUCTS = 8  # training products whose brand field says "Red": titles of other brands


def spelled(rng: np.random.Generator, written: str, per_brand: int, start: int, brand: str | None = None):
    """Products whose titles start with `written`, labelled `brand` (default: as written)."""
    return catalogue(rng, [written], per_brand, start).assign(brand=brand or written)


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    made_up = brand_names(rng, 60)
    known, once = made_up[:20], made_up[20:]
    train = pd.concat(
        [
            catalogue(rng, known, 5, 0),
            catalogue(rng, once, 1, 500),
            spelled(rng, "DressBerry", 8, 600),
            spelled(rng, "Dressberry", 3, 620),
            spelled(rng, "DRESS BERRY", 2, 640),
            spelled(rng, "FashBlush", 5, 660),
            spelled(rng, "Fash Blush", 3, 680),
            spelled(rng, "Red Chief", 5, 700),
            spelled(rng, "Red Tape", 5, 720),
            spelled(rng, "Nike", 6, 740),
            spelled(rng, "Nike Air", 4, 760),
            # A colour where the brand goes: the titles start with the products' real brands.
            catalogue(rng, known[:RED_PRODUCTS], 1, 800).assign(brand="Red"),
            catalogue(rng, known[:2], 1, 900).assign(brand=None),  # no brand given at all
        ]
    )
    test = pd.concat(
        [
            catalogue(rng, known, 1, 2000),
            spelled(rng, "DRESSBERRY", 3, 2100, brand="DressBerry"),  # a spelling training never saw
            spelled(rng, "Nike Air", 2, 2200),
            spelled(rng, "Fash Blush", 2, 2300),
            # Brands training saw once, written in capitals: the title's first words are the best guess of the brand.
            pd.concat([spelled(rng, b.upper(), 1, 2500 + i, brand=b) for i, b in enumerate(once[:10])]),
            catalogue(rng, known[8:10], 1, 2400).assign(brand="Red"),
        ]
    )
    return train, test


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Train and test tables, a config with a brand target read from the titles, text features, and the report of
    `mmgbm brands --column brand`."""
    path = written_project(tmp_path_factory.mktemp("brands"), *tables())
    result = runner.invoke(app, ["brands", "--config", str(path), "--column", "brand"])
    assert result.exit_code == 0, result.output
    return path


def report(project: Path) -> pd.DataFrame:
    return pd.read_csv(project.parent / "work" / "reports" / "brands" / "brands.csv", keep_default_na=False)


def edited(project: Path, name: str = "edited.csv") -> Path:
    """brands.csv as a person leaves it: "Nike Air" merged into "Nike", "Fash Blush" split off "FashBlush"."""
    table = report(project).set_index("brand")
    table.loc["Nike Air", "canonical"] = "Nike"
    table.loc["Fash Blush", "canonical"] = "Fash Blush"
    path = project.parent / name
    table.reset_index().to_csv(path, index=False)
    return path


def sibling(project: Path, workdir: Path) -> Path:
    """Another workdir sharing the project's text features: a second model of the same target."""
    workdir.mkdir()
    (workdir / "features").symlink_to(project.parent / "work" / "features")
    return workdir


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def said(result) -> str:
    """What a command printed, as one line (the console wraps long lines)."""
    return " ".join(result.output.split())


def classes(project: Path, workdir: str = "work") -> set[str]:
    root = project.parent / workdir / "models" / "brand"
    return set(json.loads((version_dir(root, current_version(root)) / "labels.json").read_text())["classes"])


def one_line_error(result, *expected: str) -> None:
    assert result.exit_code == 1 and isinstance(result.exception, MmgbmError), result.output
    message = str(result.exception)
    assert "\n" not in message and all(part in message for part in expected), message


def test_brands_groups_spellings_of_a_brand_and_finds_a_colour_written_as_one(project: Path):
    table = report(project)
    assert list(table.columns) == COLUMNS
    row = table.set_index("brand")
    # The spelling most products use is the canonical one; the reason says how the others differ.
    assert row.loc[["DressBerry", "Dressberry", "DRESS BERRY"], "canonical"].tolist() == ["DressBerry"] * 3
    assert row.loc["Dressberry", "reason"] == "case" and row.loc["DRESS BERRY", "reason"] == "case+spacing"
    assert row.loc["Dressberry", "products"] == 3
    # Names that differ in a word stay apart.
    assert row.loc["Red Chief", "canonical"] == "Red Chief" and row.loc["Red Tape", "canonical"] == "Red Tape"
    assert row.loc["Nike Air", "canonical"] == "Nike Air"
    assert "start with 8 other brands" in row.loc["Red", "no_brand"]
    assert (row.drop("Red")["no_brand"] == "").all()
    assert table["brand"].iloc[0] == "DressBerry"  # the largest group first
    page = (project.parent / "work" / "reports" / "brands" / "brands.html").read_text()
    merged, no_brand = page.split("Values that look like no brand")
    assert "DRESS BERRY" in merged and "DressBerry" in merged and "Red Tape" not in merged
    assert "Red" in no_brand and "DressBerry" not in no_brand


def test_the_edited_csv_is_what_training_evaluation_predict_and_audit_use(project: Path, tmp_path: Path):
    names = edited(project)
    trained = invoke("train", "--config", project, "-t", "brand", "--targets.brand.normalise", names)
    assert trained.exit_code == 0, trained.output
    assert f"dropped 2 with a missing target and {RED_PRODUCTS} marked no_brand in edited.csv" in said(trained)
    learned = classes(project)
    assert {"Nike", "DressBerry", "FashBlush", "Fash Blush"} <= learned
    assert not {"Nike Air", "Dressberry", "DRESS BERRY", "Red"} & learned

    evaluated = invoke("evaluate", "--config", project, "-t", "brand", "--targets.brand.normalise", names)
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((project.parent / "work" / "reports" / "brand" / "metrics.json").read_text())
    assert metrics["dropped_no_label"] == 2 and "dropped 2 marked no_brand" in said(evaluated)
    assert metrics["fused"]["rows"] == len(pd.read_csv(project.parent / "test.csv")) - 2

    out = tmp_path / "predictions.csv"
    predicted = invoke(
        "predict", "--config", project, "-t", "brand", "--top-k", "3", "--out", out, "--targets.brand.normalise", names
    )
    assert predicted.exit_code == 0, predicted.output
    sub = pd.read_csv(out, keep_default_na=False)
    test = pd.read_csv(project.parent / "test.csv")
    spelled_other_way = (test["title"].str.split().str[0].str.isupper() & (test["brand"] != "Red")).to_numpy()
    assert spelled_other_way.sum() == 13
    assert (sub["brand"][spelled_other_way] == test["brand"][spelled_other_way]).mean() >= 0.9
    assert (sub["brand"][test["title"].str.startswith("Nike Air").to_numpy()] == "Nike").all()
    ranked = sub[["brand_top1", "brand_top2", "brand_top3"]].to_numpy().ravel()
    assert not {"Nike Air", "Dressberry", "DRESSBERRY", "Red"} & set(ranked)

    audited = invoke("audit", "--config", project, "-t", "brand", "--targets.brand.normalise", names)
    assert audited.exit_code == 0, audited.output
    audit = pd.read_csv(project.parent / "work" / "reports" / "brand" / "audit.csv", keep_default_na=False)
    assert set(audit["given_label"]) <= learned


def test_a_model_is_refused_with_other_names_than_it_was_trained_with(project: Path, tmp_path: Path):
    names = edited(project, "trained_with.csv")
    assert (
        invoke(
            "train",
            "--config",
            project,
            "-t",
            "brand",
            "--workdir",
            sibling(project, tmp_path / "work"),
            "--targets.brand.normalise",
            names,
        ).exit_code
        == 0
    )
    other = report(project)  # the names before the person's edits
    other.to_csv(tmp_path / "other.csv", index=False)
    settings = ["-t", "brand", "--workdir", tmp_path / "work", "--targets.brand.normalise"]
    refused = invoke("predict", "--config", project, "--out", tmp_path / "p.csv", *settings, tmp_path / "other.csv")
    one_line_error(refused, "trained with the names of", "trained_with.csv", "other.csv", "mmgbm train --target brand")
    one_line_error(
        invoke("predict", "--config", project, "--out", tmp_path / "p.csv", *settings, "null"),
        "now gives the labels as written (no normalise)",
    )
    with pytest.raises(MmgbmError, match="now gives normalise: auto"):
        PredictionService(
            load_config(project, {"workdir": str(tmp_path / "work"), "targets.brand.normalise": "auto"}), ["brand"]
        )
    # An edit that changes no name (a reason, a count) is the same names.
    same = pd.read_csv(names, keep_default_na=False).assign(reason="checked", products=0)
    same.to_csv(tmp_path / "same.csv", index=False)
    assert (
        invoke("predict", "--config", project, "--out", tmp_path / "p.csv", *settings, tmp_path / "same.csv").exit_code
        == 0
    )


def test_normalise_auto_merges_spelling_variants_but_no_names_differing_in_a_word(project: Path, tmp_path: Path):
    workdir = sibling(project, tmp_path / "auto")
    trained = invoke(
        "train", "--config", project, "-t", "brand", "--workdir", workdir, "--targets.brand.normalise", "auto"
    )
    assert trained.exit_code == 0, trained.output
    learned = classes(project, str(workdir))
    assert {"DressBerry", "FashBlush", "Red Chief", "Red Tape", "Nike", "Nike Air", "Red"} <= learned
    assert not {"Dressberry", "DRESS BERRY", "Fash Blush"} & learned


def test_rerunning_brands_keeps_a_persons_decisions(project: Path, tmp_path: Path):
    names = edited(project, "kept.csv")
    table = pd.read_csv(names, keep_default_na=False).set_index("brand")
    table.loc["Red", "no_brand"] = ""  # the person says Red is a brand after all
    table.reset_index().to_csv(names, index=False)
    result = invoke(
        "brands",
        "--config",
        project,
        "--column",
        "brand",
        "--workdir",
        tmp_path / "again",
        "--targets.brand.normalise",
        names,
    )
    assert result.exit_code == 0, result.output
    again = pd.read_csv(tmp_path / "again" / "reports" / "brands" / "brands.csv", keep_default_na=False)
    row = again.set_index("brand")
    assert row.loc["Nike Air", "canonical"] == "Nike" and row.loc["Nike Air", "reason"] == "alias"
    assert row.loc["Fash Blush", "canonical"] == "Fash Blush" and row.loc["Red", "no_brand"] == ""
    assert row.loc["Dressberry", "canonical"] == "DressBerry"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: t.drop(columns="no_brand"), ["bad.csv", "no column 'no_brand'"]),
        (lambda t: t.assign(canonical=t["canonical"].mask(t.index == 1, "")), ["bad.csv line 3", "'canonical'"]),
        (lambda t: pd.concat([t, t.head(1)]), ["bad.csv line", "listed again (first on line 2)"]),
        (
            lambda t: t.assign(canonical=t["canonical"].mask(t["brand"] == "DressBerry", "Dressberry")),
            ["bad.csv line", "circle (DressBerry -> Dressberry -> DressBerry)"],
        ),
    ],
)
def test_a_wrong_edit_of_the_csv_is_a_one_line_error_naming_the_line(project: Path, tmp_path: Path, edit, expected):
    edit(report(project)).to_csv(tmp_path / "bad.csv", index=False)
    one_line_error(
        invoke("validate", "--config", project, "--targets.brand.normalise", tmp_path / "bad.csv"), *expected
    )


# Issue 38: a value is marked no brand only on evidence that it is none, on catalogues whose titles do not carry
# the brand as on those that lead with it.
GROCERY_ITEMS = ["Turmeric Powder", "Red Chilli Powder", "Basmati Rice", "Red Lentils", "Green Tea", "Ghee"]
GROCERY_WORDS = ["Organic", "Fresh", "Premium", "Pure", "Natural", "Daily"]
FEED = Path(__file__).parent / "data" / "feeds" / "merchant_feed.tsv"
NO_BRAND_TITLES = "titles rarely start with their brand"


def brands_of(folder: Path, frame: pd.DataFrame, write_config, *args: str) -> tuple[pd.DataFrame, str]:
    """`mmgbm brands --column brand` on `frame` written as the training table: brands.csv indexed by spelling, and
    what the command printed."""
    frame.to_csv(folder / "train.csv", index=False)
    raw = {
        "workdir": str(folder / "work"),
        "data": {"splits": {"train": str(folder / "train.csv")}, "text_columns": ["title", "description"]},
        "targets": {"brand": {"column": "brand"}},
    }
    result = invoke("brands", "--config", write_config(raw), "--column", "brand", *args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(folder / "work" / "reports" / "brands" / "brands.csv", keep_default_na=False)
    return table.set_index("brand"), said(result)


def grocery(rng: np.random.Generator) -> pd.DataFrame:
    """A grocery shop's table: titles such as "Organic Turmeric Powder 200 g", the brand in its own column, named in
    some descriptions, first or mid-sentence; and three products whose brand field says "Red"."""
    rows = []
    for brand in [*brand_names(rng, 24), "Fresho"]:
        for _ in range(6):
            item = GROCERY_ITEMS[rng.integers(len(GROCERY_ITEMS))]
            rows.append(
                {
                    "brand": brand,
                    "title": f"{rng.choice(GROCERY_WORDS)} {item} {rng.choice([100, 200, 500])} g",
                    "description": rng.choice([f"{brand} presents {item}.", f"{item}, packed by {brand}.", item]),
                }
            )
    rows += [{"brand": "Red", "title": f"Daily Ghee {g} g", "description": "Ghee."} for g in (100, 200, 500)]
    return pd.DataFrame(rows).assign(id=lambda f: [f"g{i}" for i in range(len(f))])


def test_titles_that_do_not_carry_brands_mark_no_brand_only_on_a_descriptor(tmp_path: Path, write_config):
    table, printed = brands_of(tmp_path, grocery(np.random.default_rng(5)), write_config, "--titles", "title")
    # Every brand's titles start with other names (Organic, Fresh ...): no evidence where titles never name a brand.
    assert (table.drop("Red")["no_brand"] == "").all()
    assert f"{NO_BRAND_TITLES} (0% of products): no value is marked on where titles start" in printed
    assert "1 values on 3 products look like no brand" in printed
    # A colour is still found: other brands' titles carry it as a descriptor ("Red Lentils").
    assert table.loc["Red", "no_brand"].startswith("'red' is written inside the titles of at least ")
    page = (tmp_path / "work" / "reports" / "brands" / "brands.html").read_text()
    assert NO_BRAND_TITLES in page
    # Descriptions name some brands, Fresho included: a brand's own name in its own text is no descriptor of it.
    table, printed = brands_of(tmp_path, grocery(np.random.default_rng(5)), write_config, "--titles", "description")
    assert (table.drop("Red")["no_brand"] == "").all() and NO_BRAND_TITLES in printed


def test_a_fit_and_a_colour_are_found_where_titles_lead_with_the_brand_and_said_once(tmp_path: Path, write_config):
    rng = np.random.default_rng(7)
    known = brand_names(rng, 12)
    frame = pd.concat(
        [
            catalogue(rng, known, 4, 0),
            # "Regular" where the brand goes: one title starts with it, the rest with other brands.
            catalogue(rng, ["Regular"], 1, 100),
            catalogue(rng, known[:5], 1, 200).assign(brand="Regular"),
            # Pink in other brands' titles describes the product; a seller wrote it twice in the brand field.
            pd.DataFrame({"brand": known[:4], "title": [f"{b} Pink Mug 2 pieces" for b in known[:4]]}),
            catalogue(rng, known[6:8], 1, 300).assign(brand="Pink/Pink", title=lambda f: f["kind"] + " 2 pieces"),
        ]
    ).assign(description="", id=lambda f: [f"p{i}" for i in range(len(f))])
    table, printed = brands_of(tmp_path, frame, write_config)
    regular = table.loc["Regular", "no_brand"]
    assert regular.startswith("only 1 of its 6 products' titles start with it; 5 start with 5 other brands (")
    assert "Regular" not in regular.split("brands (")[1]
    named = regular.split("brands (")[1].rstrip(" .)").split(", ")
    assert len(named) == len(set(named)) == 3 and set(named) <= set(known)
    pink = table.loc["Pink/Pink", "no_brand"]
    assert "; 'pink' is written inside the titles of at least 4 other brands" in pink and pink.count("pink") == 1
    assert (table.drop(["Regular", "Pink/Pink"])["no_brand"] == "").all()
    assert NO_BRAND_TITLES not in printed


def test_the_feed_sample_marks_no_brand_neither_as_written_nor_without_the_brand_in_its_titles(
    tmp_path: Path, write_config
):
    feed = pd.read_csv(FEED, sep="\t", dtype=str)[["id", "title", "description", "brand"]]
    table, printed = brands_of(tmp_path, feed, write_config)
    assert (table["no_brand"] == "").all() and NO_BRAND_TITLES not in printed
    without = feed.assign(title=[t.replace(b, "").strip() for t, b in zip(feed["title"], feed["brand"])])
    table, printed = brands_of(tmp_path, without, write_config)
    assert (table["no_brand"] == "").all() and NO_BRAND_TITLES in printed
