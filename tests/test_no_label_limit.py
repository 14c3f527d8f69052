"""`targets.<name>.max_no_label`: a names file that would leave many training products out stops `train` in one line
instead of training on what is left, and the setting accepts it."""

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
    refused = invoke("train", *settings, "--workdir", sibling(project, tmp_path / "refused"))
    one_line_error(
        refused,
        f"marked.csv marks {marked} of {labelled:,} labelled products",
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
