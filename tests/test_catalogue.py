import json
from pathlib import Path

import pandas as pd
import pytest

from mmgbm.catalogue import in_holdout, load_all_products, load_split, read_table
from mmgbm.config import load_config
from mmgbm.errors import MmgbmError


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_reads_every_format_with_string_ids(tmp_path: Path, fmt: str):
    frame = pd.DataFrame({"id": [10, 11, 12], "title": ['a, "quoted"', "multi\nline", None]})
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")))
    out = read_table(path, "id")
    assert out["id"].tolist() == ["10", "11", "12"]
    assert out["title"].iloc[0] == 'a, "quoted"' and out["title"].iloc[1] == "multi\nline"


def test_duplicate_ids_are_refused_with_examples(tmp_path: Path):
    path = tmp_path / "dup.csv"
    pd.DataFrame({"id": ["x", "y", "x"], "t": [1, 2, 3]}).to_csv(path, index=False)
    with pytest.raises(MmgbmError, match=r"dup.csv: 1 duplicate product ids .*'x'"):
        read_table(path, "id")


def test_empty_ids_name_the_file_lines(tmp_path: Path):
    path = tmp_path / "null.csv"
    pd.DataFrame({"id": ["x", None, "z"], "t": [1, 2, 3]}).to_csv(path, index=False)
    with pytest.raises(MmgbmError, match=r"empty id .*file lines 3"):
        read_table(path, "id")


def test_missing_id_column_suggests_the_closest(tmp_path: Path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"productid": [1], "title": ["x"]}).to_csv(path, index=False)
    with pytest.raises(MmgbmError, match="no id column 'product_id'; did you mean 'productid'"):
        read_table(path, "product_id")


def test_unreadable_and_unknown_tables_are_one_line_errors(tmp_path: Path):
    bad = tmp_path / "t.parquet"
    bad.write_text("not parquet")
    with pytest.raises(MmgbmError, match="cannot read as parquet"):
        read_table(bad, "id")
    sheet = tmp_path / "t.xlsx"
    sheet.write_text("x")
    with pytest.raises(MmgbmError, match="unknown table format"):
        read_table(sheet, "id")
    with pytest.raises(MmgbmError, match="not found"):
        read_table(tmp_path / "missing.csv", "id")


def test_columns_named_by_the_config_must_exist(tiny_config: Path):
    cfg = load_config(tiny_config, {"data.categorical_columns": ["seasn"]})
    with pytest.raises(MmgbmError, match="no column 'seasn'.*did you mean 'season'"):
        load_split(cfg, "train")


def test_holdout_is_stable_disjoint_and_complete(tiny_config: Path):
    cfg = load_config(tiny_config, {"data.holdout": {"fraction": 0.5, "seed": 3}})
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert set(train["id"]).isdisjoint(test["id"])
    assert sorted(train["id"].tolist() + test["id"].tolist()) == ["a1", "a2", "a3", "a4"]
    assert load_split(cfg, "test")["id"].tolist() == test["id"].tolist()
    assert set(load_all_products(cfg)["id"]) == {"a1", "a2", "a3", "a4"}


def test_holdout_membership_does_not_move_when_the_catalogue_grows():
    ids = pd.Series([f"p{i}" for i in range(2000)])
    small = in_holdout(ids[:1000], 0.2, 0)
    big = in_holdout(ids, 0.2, 0)
    assert (small.values == big[:1000].values).all()
    assert 0.15 < big.mean() < 0.25


def test_unknown_split_lists_the_known_ones(tiny_config: Path):
    with pytest.raises(MmgbmError, match="unknown split 'valid'.*train"):
        load_split(load_config(tiny_config), "valid")
