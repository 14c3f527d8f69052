import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mmgbm.catalogue import in_holdout, load_all_products, load_split, read_table
from mmgbm.cli import app
from mmgbm.config import load_config
from mmgbm.errors import MmgbmError, MmgbmWarning

runner = CliRunner()


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
    with pytest.raises(MmgbmError, match=r"empty id .*file lines 3\)"):
        read_table(path, "id")


def test_empty_ids_after_descriptions_spanning_lines_name_the_line_their_record_starts_on(tmp_path: Path):
    path = tmp_path / "shop.csv"
    path.write_text('id,title\nx,"Turmeric\npowder, 200 g"\ny,"Rice\n\n5 kg"\n,Oil 1 l\nz,Salt\n,"Tea\nleaves"\n')
    with pytest.raises(MmgbmError, match=r"2 rows have an empty id in 'id' \(file lines 7, 9\)"):
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


# Line 1 is the header; p1's and p4's descriptions span lines, so record 7 (p7, one field too many) starts on line 11,
# where pandas alone would say "line 8".
BROKEN_CSV = (
    "id,title,price\n"
    'p1,"a shirt\nin two lines",10\n'
    "p2,jeans,30\n"
    'p3,"a ""quoted"", title",25\n'
    'p4,"a dress\n\nwith a blank line",12\n'
    "p5,socks,3\n"
    "p6,,4\n"
    "p7,a hat, blue,7\n"
    "p8,a scarf,9\n"
)
BROKEN_LINE = 11


def broken_catalogue(tmp_path: Path, write_config) -> Path:
    (tmp_path / "products.csv").write_text(BROKEN_CSV)
    return write_config({"workdir": "run", "data": {"splits": {"train": "products.csv"}, "text_columns": ["title"]}})


def test_a_broken_record_stops_validate_naming_the_file_line_it_starts_on(tmp_path: Path, write_config):
    config = broken_catalogue(tmp_path, write_config)
    result = runner.invoke(app, ["validate", "--config", str(config)])
    assert isinstance(result.exception, MmgbmError)  # what `mmgbm` prints as its one line
    assert str(result.exception).endswith(
        f"products.csv line {BROKEN_LINE} (id 'p7'): record has 4 fields, the header has 3; fix the record or set "
        "data.bad_rows: skip to read on"
    )


def test_bad_rows_skip_reads_on_lists_the_record_and_prints_one_note(tmp_path: Path, write_config):
    config = broken_catalogue(tmp_path, write_config)
    # A holdout reads the training table twice (its two parts): still one note.
    args = ["validate", "--config", str(config), "--data.bad_rows", "skip", "--data.holdout", "{fraction: 0.5}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = tmp_path / "run" / "reports" / "bad_rows" / "train.csv"
    note = f"products.csv: 1 broken record skipped (line {BROKEN_LINE}) -> {report}"
    assert " ".join(result.output.split()).count(note) == 1, result.output
    train, test = (int(re.search(rf"{split}: (\d+) products", result.output)[1]) for split in ("train", "test"))
    assert train + test == 7
    assert pd.read_csv(report).to_dict("records") == [
        {"line": BROKEN_LINE, "id": "p7", "reason": "record has 4 fields, the header has 3"}
    ]
    # Once the record is mended the report goes: it lists what the last read skipped.
    (tmp_path / "products.csv").write_text(BROKEN_CSV.replace("a hat, blue", "a blue hat"))
    assert runner.invoke(app, args).exit_code == 0 and not report.exists()


def test_skipping_reads_the_other_records_exactly_as_if_the_broken_one_were_not_there(tmp_path: Path):
    broken, mended = tmp_path / "broken.csv", tmp_path / "mended.csv"
    broken.write_text(BROKEN_CSV)
    mended.write_text(BROKEN_CSV.replace("p7,a hat, blue,7\n", ""))
    with pytest.warns(MmgbmWarning, match=f"1 broken record skipped \\(line {BROKEN_LINE}\\)"):
        skipped = read_table(broken, "id", skipped_report=tmp_path / "skipped.csv")
    pd.testing.assert_frame_equal(skipped, read_table(mended, "id"))
    assert skipped["title"].iloc[3] == "a dress\n\nwith a blank line" and skipped["price"].dtype == "int64"


def test_a_broken_first_record_is_not_taken_for_an_index(tmp_path: Path):
    # pandas alone reads this without a word, with the ids as an index and every value one column off.
    path = tmp_path / "first.csv"
    path.write_text("id,title\np1,a hat,extra\np2,a scarf\n")
    with pytest.raises(MmgbmError, match=r"first.csv line 2 \(id 'p1'\): record has 3 fields, the header has 2"):
        read_table(path, "id")


def test_a_broken_feed_record_is_named_and_skipped_like_a_table_record(tmp_path: Path):
    path = tmp_path / "feed.tsv"
    path.write_text(
        "id\ttitle\tprice\timage_link\tavailability\n"
        'p1\t"a ring\nin gold"\t15.00 USD\thttp://x/1.jpg\tin stock\n'
        "p2\ta chain\t9.00 USD\thttp://x/2.jpg\tin stock\textra\n"
        "p3\ta watch\t99.00 USD\thttp://x/3.jpg\tin stock\n"
    )
    with pytest.raises(MmgbmError, match=r"feed.tsv line 4 \(id 'p2'\): record has 6 fields, the header has 5"):
        read_table(path, "id")
    with pytest.warns(MmgbmWarning, match=r"1 broken record skipped \(line 4\)"):
        frame = read_table(path, "id", skipped_report=tmp_path / "skipped.csv")
    assert frame["id"].tolist() == ["p1", "p3"] and frame["price"].tolist() == [15.0, 99.0]
    assert set(frame["price_currency"]) == {"USD"}


def test_a_command_that_reads_every_split_reads_on_past_a_broken_record_with_one_note(tmp_path: Path, write_config):
    config = broken_catalogue(tmp_path, write_config)
    args = ["extract-text", "--config", str(config), "--data.bad_rows", "skip", "--features.text.min_df", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert output.count(f"1 broken record skipped (line {BROKEN_LINE})") == 1
    assert "fitted on 7 train products" in output
