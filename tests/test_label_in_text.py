"""label_in_text: labels never seen in training but written first in a text column are predicted, scored and kept
in the artifact; without the setting the model only predicts its classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mmgbm.cli import app
from mmgbm.commands.artifact import load_artifact
from mmgbm.commands.train import train
from mmgbm.config import load_config
from mmgbm.errors import MmgbmError
from mmgbm.estimator import FUSED
from mmgbm.stores import extract_text
from mmgbm.workdir import model_dir
from tests.test_estimator import FAST

runner = CliRunner()
NOUNS = ["kadhai", "table runner", "curtain", "bedsheet", "mug", "lamp", "cushion cover", "wall clock"]
SYLLABLES = ["ka", "zo", "ri", "ven", "tul", "mar", "sho", "pel", "dra", "quin", "bo", "lex"]


def brand_names(rng: np.random.Generator, n: int) -> list[str]:
    """Distinct made-up brands of one to three words, e.g. 'Kazo' or 'Rimar Pel Home'."""
    names: set[str] = set()
    while len(names) < n:
        words = [("".join(rng.choice(SYLLABLES, 2))).capitalize() for _ in range(rng.choice([1, 1, 2, 3]))]
        names.add(" ".join(words))
    return sorted(names)


def catalogue(rng: np.random.Generator, brands: list[str], per_brand: int, start: int) -> pd.DataFrame:
    rows = []
    for brand in brands:
        for _ in range(per_brand):
            noun = NOUNS[rng.integers(len(NOUNS))]
            rows.append(
                {
                    "id": f"p{start + len(rows)}",
                    "brand": brand,
                    "kind": noun.split()[-1],
                    "title": f"{brand} {noun} {rng.integers(1, 9)} pieces",
                }
            )
    return pd.DataFrame(rows)


def written_project(folder: Path, train_frame: pd.DataFrame, test_frame: pd.DataFrame) -> Path:
    """A project of title, brand (label_in_text: title) and kind, with its text features extracted."""
    train_frame.to_csv(folder / "train.csv", index=False)
    test_frame.to_csv(folder / "test.csv", index=False)
    raw = {
        "workdir": "work",
        "data": {
            "splits": {"train": "train.csv", "test": "test.csv"},
            "text_columns": ["title"],
            "categorical_columns": ["kind"],
        },
        "targets": {"brand": {"column": "brand", "label_in_text": "title"}, "kind": {"column": "kind"}},
        "features": {"image": {"enabled": False}, "text": {"min_df": 1}},
        "model": {**FAST},
    }
    path = folder / "mmgbm.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    extract_text(load_config(path))
    return path


def trained_project(folder: Path, train_frame: pd.DataFrame, test_frame: pd.DataFrame) -> Path:
    """`written_project` with brand trained through the CLI."""
    path = written_project(folder, train_frame, test_frame)
    result = runner.invoke(app, ["train", "--config", str(path), "-t", "brand"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Train: 30 brands with six products each and 60 brands seen once; test: 30 known brands and 30 new ones."""
    rng = np.random.default_rng(0)
    brands = brand_names(rng, 120)
    known, once, new = brands[:30], brands[30:90], brands[90:]
    train_frame = pd.concat([catalogue(rng, known, 6, 0), catalogue(rng, once, 1, 1000)])
    test_frame = pd.concat([catalogue(rng, known, 1, 2000), catalogue(rng, new, 1, 3000)])
    return trained_project(tmp_path_factory.mktemp("label_in_text"), train_frame, test_frame)


def new_brand_rows(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    test = pd.read_csv(path.parent / "test.csv", dtype={"id": str})
    unseen = ~test["brand"].isin(set(pd.read_csv(path.parent / "train.csv")["brand"]))
    return test, unseen


def test_unseen_brand_written_first_in_the_title_is_predicted_through_the_cli(project: Path, tmp_path: Path):
    out = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["predict", "--config", str(project), "-t", "brand", "--top-k", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sub = pd.read_csv(out, dtype=str)
    test, unseen = new_brand_rows(project)
    assert unseen.sum() == 30
    assert (sub["brand"] == test["brand"])[unseen].mean() >= 0.8
    assert (sub["brand"] == test["brand"])[~unseen].mean() >= 0.8  # known brands are not lost on the way
    assert (sub["brand"] == sub["brand_top1"]).all()  # the first of the top-k is the final label
    assert (sub["brand_top1"] != sub["brand_top2"]).all()
    assert (sub[["brand_p1", "brand_p2"]].astype(float).sum(axis=1) <= 1 + 1e-6).all()


def test_evaluate_counts_copied_labels_as_they_are_and_the_artifact_keeps_the_chooser(project: Path):
    result = runner.invoke(app, ["evaluate", "--config", str(project), "-t", "brand", "--split", "test"])
    assert result.exit_code == 0, result.output
    cfg = load_config(project)
    metrics = json.loads((cfg.workdir / "reports" / "brand" / "metrics.json").read_text())[FUSED]
    assert metrics["unseen_class_rows"] == 30
    # Half the test brands were never seen: without copying, accuracy could not pass 0.5.
    assert metrics["accuracy"] >= 0.8
    new = {row["class"]: row for row in metrics["per_class"] if row["train_support"] == 0}
    assert sum(row["recall"] == 1.0 for row in new.values()) >= 24
    artifact = load_artifact(model_dir(cfg, "brand"), "brand")
    assert artifact.metrics["label_in_text"]["kept"] is True
    assert artifact.metrics["label_in_text"]["chooser"] > artifact.metrics["label_in_text"]["model"]


def test_without_the_setting_only_training_classes_are_predicted(project: Path, tmp_path: Path):
    cfg = load_config(project, {"targets.brand.label_in_text": None, "workdir": str(tmp_path / "off")})
    cfg.workdir.mkdir()
    (cfg.workdir / "features").symlink_to(load_config(project).workdir / "features")
    [summary] = train(cfg, ["brand"])
    assert summary.metrics["label_in_text"] is None
    out = runner.invoke(
        app,
        [
            "predict",
            "--config",
            str(project),
            "-t",
            "brand",
            "--top-k",
            "1",
            "--targets.brand.label_in_text",
            "null",
            "--workdir",
            str(cfg.workdir),
            "--out",
            str(tmp_path / "off.csv"),
        ],
    )
    assert out.exit_code == 0, out.output
    sub = pd.read_csv(tmp_path / "off.csv", dtype=str)
    train_brands = set(pd.read_csv(project.parent / "train.csv")["brand"])
    assert set(sub["brand"]) <= train_brands
    test, unseen = new_brand_rows(project)
    assert (sub["brand"] == test["brand"])[unseen].sum() == 0


def test_a_label_in_text_column_that_does_not_exist_is_a_one_line_error(project: Path):
    cfg = load_config(project, {"targets.brand.label_in_text": "titel"})
    with pytest.raises(MmgbmError, match="no column 'titel' \\(label_in_text of target 'brand'\\)") as error:
        train(cfg, ["brand"])
    assert "\n" not in str(error.value)


def test_label_in_text_is_only_for_multiclass_targets(project: Path):
    with pytest.raises(MmgbmError, match="label_in_text only applies to task: multiclass"):
        load_config(project, {"targets.kind.task": "regression", "targets.kind.label_in_text": "title"})


def test_a_new_brand_ends_where_the_training_titles_product_words_begin(tmp_path: Path):
    """Every word of these titles is capitalised ("Kazo Rimar Alloy Ring 3 pieces"), so the shape of the words cannot
    tell a two-word brand from a one-word brand followed by its material; the training titles can: "Alloy" is in
    many of them and never in a brand, while the words of a brand never seen are in none."""
    rng = np.random.default_rng(1)
    brands = brand_names(rng, 160)
    materials = ["Alloy", "Brass", "Cotton", "Steel", "Silver", "Wooden"]

    def titled(frame: pd.DataFrame) -> pd.DataFrame:
        words = frame["title"].str.split()
        material = rng.choice(materials, len(frame))
        return frame.assign(
            title=[
                f"{b} {m} {' '.join(w[len(b.split()) :]).title()}" for b, m, w in zip(frame["brand"], material, words)
            ]
        )

    train_frame = titled(pd.concat([catalogue(rng, brands[:40], 4, 0), catalogue(rng, brands[40:120], 1, 1000)]))
    test_frame = titled(catalogue(rng, brands[120:], 1, 2000))
    path = trained_project(tmp_path, train_frame, test_frame)
    out = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["predict", "--config", str(path), "-t", "brand", "--out", str(out)])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv(out, dtype=str)["brand"]
    assert (predicted == test_frame["brand"].to_numpy()).mean() >= 0.95  # 0.875 without what the titles say


# ---- issue 38: invented labels must look like names -------------------------------------------------------------
PRODUCT_WORDS = ["Organic", "Premium", "Classic", "Natural", "Handmade", "Deluxe"]


def led_by(frame: pd.DataFrame, words) -> pd.DataFrame:
    """The titles with their brand replaced by `words` (one per row): products whose text does not start with the
    brand."""
    return frame.assign(title=[f"{w}{t[len(b) :]}" for w, t, b in zip(words, frame["title"], frame["brand"])])


def finished(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Titles ending in a product word ("... 3 pieces in Organic finish"), after the words the chooser reads first: it
    is common in the training texts, across every brand, but never leads one."""
    return frame.assign(title=frame["title"] + " in " + rng.choice(PRODUCT_WORDS, len(frame)) + " finish")


def predicted_brands(path: Path, folder: Path) -> pd.DataFrame:
    """The test table with the brand predicted through the CLI beside it (`predicted`)."""
    out = folder / "predictions.csv"
    result = runner.invoke(app, ["predict", "--config", str(path), "-t", "brand", "--out", str(out)])
    assert result.exit_code == 0, result.output
    test = pd.read_csv(path.parent / "test.csv", dtype={"id": str})
    return test.assign(predicted=pd.read_csv(out, dtype=str)["brand"].to_numpy())


def chooser_metrics(path: Path) -> dict:
    cfg = load_config(path)
    return load_artifact(model_dir(cfg, "brand"), "brand").metrics["label_in_text"]


@pytest.fixture(scope="module")
def led_by_other_words(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Train: brands leading every title (40 with four products, 120 seen once), titles ending in a product word.
    Test: 40 new brands leading their titles ("new"), and known brands' products whose titles start with a product
    word ("product word": "Organic table runner ...") or with a made-up word with punctuation stuck on
    ("punctuated": "Kazo, table runner ...", "(Kazo table runner ...")."""
    rng = np.random.default_rng(2)
    brands = brand_names(rng, 240)
    train_frame = finished(pd.concat([catalogue(rng, brands[:40], 4, 0), catalogue(rng, brands[40:160], 1, 1000)]), rng)
    made_up = [name.split()[0] for name in brands[200:240]]
    groups = {
        "new": catalogue(rng, brands[160:200], 1, 2000),
        "product word": led_by(catalogue(rng, brands[:40], 1, 3000), rng.choice(PRODUCT_WORDS, 40)),
        "punctuated": led_by(
            catalogue(rng, brands[:40], 1, 4000), [f"{w}," if i % 2 else f"({w}" for i, w in enumerate(made_up)]
        ),
    }
    test_frame = finished(pd.concat([g.assign(group=name) for name, g in groups.items()]), rng)
    folder = tmp_path_factory.mktemp("led_by_other_words")
    path = trained_project(folder, train_frame, test_frame.drop(columns="group"))
    return path, predicted_brands(path, folder).assign(group=test_frame["group"].to_numpy())


def test_product_words_leading_the_text_are_never_invented_and_unseen_brands_still_are(led_by_other_words):
    path, test = led_by_other_words
    train_brands = set(pd.read_csv(path.parent / "train.csv")["brand"])
    by_group = {name: group for name, group in test.groupby("group")}
    # "Organic" leads no training title, so only the training texts' other words tell it is no brand.
    assert by_group["product word"]["predicted"].isin(train_brands).all()
    new = by_group["new"]
    assert (new["predicted"] == new["brand"]).mean() >= 0.8
    summary = chooser_metrics(path)
    assert summary["new_labels"] is True
    assert summary["new_label_precision"] >= 0.5


def test_words_with_punctuation_at_either_end_are_never_written(led_by_other_words):
    path, test = led_by_other_words
    predicted = test["predicted"].astype(str)
    assert not (predicted.str.match(r"^\W") | predicted.str.contains(r"\W$")).any()
    punctuated = test[test["group"] == "punctuated"]
    assert punctuated["predicted"].isin(set(pd.read_csv(path.parent / "train.csv")["brand"])).all()


def test_new_labels_are_switched_off_where_out_of_fold_copies_of_them_were_mostly_wrong(tmp_path: Path):
    """A catalogue where a brand leads a quarter of the titles and a made-up product line (as name-like as a brand)
    leads the rest: copying a first word no training product has as its label is right a quarter of the time, so no
    new label may be written, while the known brands stay."""
    rng = np.random.default_rng(3)
    brands = brand_names(rng, 400)
    lines = [f"{name.split()[0]}{rng.integers(100, 999)}" for name in brands[200:400]]

    def lined(frame: pd.DataFrame) -> pd.DataFrame:
        quarter = np.arange(len(frame)) % 4 == 0
        return pd.concat([frame[quarter], led_by(frame[~quarter], lines[: int((~quarter).sum())])])

    train_frame = pd.concat([catalogue(rng, brands[:30], 4, 0), lined(catalogue(rng, brands[30:150], 1, 1000))])
    test_frame = lined(catalogue(rng, brands[150:200], 1, 2000))
    path = trained_project(tmp_path, train_frame, test_frame)
    test = predicted_brands(path, tmp_path)
    assert test["predicted"].isin(set(train_frame["brand"])).all()
    summary = chooser_metrics(path)
    assert summary["new_labels"] is False
    assert summary["new_label_picks"] == 0 or summary["new_label_precision"] < 0.5


def test_brands_made_of_product_words_are_copied_where_the_catalogue_names_brands_so(tmp_path: Path):
    """Titles always start with the brand, and some brands are phrases of the catalogue's product words ("Organic
    Deluxe"): the chooser's out-of-fold copies of such names were right, so a new one is written too."""
    rng = np.random.default_rng(4)
    made_up = brand_names(rng, 100)
    phrases = [f"{a} {b}" for a in PRODUCT_WORDS for b in PRODUCT_WORDS if a != b]
    phrases = [phrases[i] for i in rng.permutation(len(phrases))]
    train_frame = finished(
        pd.concat(
            [
                catalogue(rng, made_up[:30], 4, 0),
                catalogue(rng, made_up[30:90], 1, 1000),
                catalogue(rng, phrases[:20], 1, 2000),
            ]
        ),
        rng,
    )
    test_frame = finished(catalogue(rng, phrases[20:], 1, 3000), rng)
    path = trained_project(tmp_path, train_frame, test_frame)
    test = predicted_brands(path, tmp_path)
    assert (test["predicted"] == test["brand"]).mean() >= 0.8
    summary = chooser_metrics(path)
    assert summary["product_word_labels"] is True
    assert summary["product_word_label_precision"] >= 0.5
