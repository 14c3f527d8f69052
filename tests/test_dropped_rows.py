"""Products a target cannot learn from are named, never dropped in bulk in silence: a names file that would leave more
than `targets.<name>.max_no_label` of the training products out stops `train` (and `validate` says so) until the
setting accepts it; prices written as text are shown as such, not counted as merely missing."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from tests.test_brands import classes, invoke, one_line_error, project, report, said, sibling  # noqa: F401

MARKED = {"DressBerry": 8, "Dressberry": 3, "DRESS BERRY": 2, "Nike": 6, "Red Chief": 5}  # products per spelling


def marked_file(project: Path) -> Path:
    """brands.csv with real brands marked no brand by mistake, as a person or a tool might."""
    table = report(project).set_index("brand")
    table.loc[list(MARKED), "no_brand"] = "marked by mistake"
    path = project.parent / "marked.csv"
    table.reset_index().to_csv(path, index=False)
    return path


def test_train_stops_when_the_names_file_leaves_more_than_the_limit_out(project: Path, tmp_path: Path):
    names = marked_file(project)
    labelled = int(pd.read_csv(project.parent / "train.csv")["brand"].notna().sum())
    marked = sum(MARKED.values()) + 8  # and the colour "Red", which brands.csv itself marks
    settings = ["--config", project, "-t", "brand", "--targets.brand.normalise", names]
    expected = f"marked.csv marks {marked} of {labelled:,} labelled products"
    checked = invoke("validate", "--config", project, "--targets.brand.normalise", names)
    assert checked.exit_code == 1 and expected in said(checked), checked.output
    refused = invoke("train", *settings, "--workdir", sibling(project, tmp_path / "refused"))
    one_line_error(
        refused,
        expected,
        "more than targets.brand.max_no_label (5%)",
        # the values marked most, with their products
        "DressBerry (8)",
        "Red (8)",
        "Nike (6)",
        "Red Chief (5)",
        f"set targets.brand.max_no_label: {math.ceil(100 * marked / labelled) / 100:g} to train on the rest",
    )
    assert not (tmp_path / "refused" / "models" / "brand").exists()  # nothing trained on what was left

    accepted = invoke(
        "train", *settings, "--workdir", sibling(project, tmp_path / "accepted"), "--targets.brand.max_no_label", "0.2"
    )
    assert accepted.exit_code == 0, accepted.output
    assert f"{marked} marked no_brand in marked.csv" in said(accepted)
    assert not {"DressBerry", "Nike", "Red Chief", "Red"} & classes(project, tmp_path / "accepted")


def test_prices_written_as_text_are_named_by_validate_and_train(tmp_path: Path):
    rows = [{"id": f"p{i}", "title": f"rice {i % 7} kg", "price": f"Rs. {100 + i}.00"} for i in range(30)]
    rows += [{"id": f"q{i}", "title": f"oil {i % 5} l", "price": 50 + i} for i in range(20)]
    pd.DataFrame(rows).to_csv(tmp_path / "shop.csv", index=False)
    config = tmp_path / "mmgbm.yaml"
    config.write_text(
        "workdir: work\ndata: {splits: {train: shop.csv}, text_columns: [title]}\n"
        "targets: {price: {column: price, task: regression, log_target: true}}\n"
        "features: {image: {enabled: false}, text: {min_df: 1}}\n"
    )
    checked = invoke("validate", "--config", config)
    assert checked.exit_code == 1
    assert "30 values of 'price' are not numbers (e.g. 'Rs. 100.00')" in said(checked), checked.output
    assert invoke("extract-text", "--config", config).exit_code == 0
    trained = invoke("train", "--config", config, "--model.n_folds", "2")
    assert trained.exit_code == 0, trained.output
    assert "dropped 30 with a missing target (30 written but not numbers, e.g. 'Rs. 100.00')" in said(trained)
