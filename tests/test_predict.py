"""predict: one row per input product in input order, missing modalities, top-k / probabilities, --target all,
unseen metadata levels, and refusal of features made differently from the model's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mmgbm.catalogue import load_split
from mmgbm.cli import app
from mmgbm.commands.predict import predict
from mmgbm.config import load_config
from mmgbm.errors import MmgbmError
from mmgbm.estimator.metadata import MetadataEncoder
from mmgbm.stores import extract_text
from tests.modelling_project import DEMO_TABLE, NO_IMAGE, demo_frame, make_project
from tests.photo_server import photo_server
from tests.test_images import fake_encoder  # noqa: F401 (a fixture: predict's on-the-fly embedding, faked)

runner = CliRunner()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    path = make_project(tmp_path_factory.mktemp("predict"))
    result = runner.invoke(app, ["train", "--config", str(path), "-t", "articleType", "-t", "price", "-t", "is_men"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def with_colour(project: Path, tmp_path_factory) -> Path:
    """The project with baseColour trained too: every configured target has a model."""
    folder = tmp_path_factory.mktemp("predict-all") / "project"
    shutil.copytree(project.parent, folder)
    path = folder / project.name
    result = runner.invoke(app, ["train", "--config", str(path), "-t", "baseColour"])
    assert result.exit_code == 0, result.output
    return path


def test_cli_writes_one_row_per_product_in_input_order_with_topk(project: Path, tmp_path: Path):
    out = tmp_path / "submission.csv"
    result = runner.invoke(
        app,
        ["predict", "--config", str(project), "-t", "articleType", "-t", "price", "--out", str(out), "--top-k", "3"],
    )
    assert result.exit_code == 0, result.output
    sub = pd.read_csv(out, dtype={"id": str})
    test = load_split(load_config(project), "test")
    assert sub["id"].tolist() == test["id"].tolist()
    assert list(sub.columns) == [
        "id",
        "articleType",
        "articleType_top1",
        "articleType_p1",
        "articleType_top2",
        "articleType_p2",
        "articleType_top3",
        "articleType_p3",
        "price",
    ]
    assert f"{len(sub):,} products x {len(sub.columns)} columns -> {out}" in result.output  # the id counted too
    assert (sub["articleType"] == sub["articleType_top1"]).all()
    assert (sub["articleType_p1"] >= sub["articleType_p2"]).all()
    assert (sub["price"] > 0).all()  # back on the original scale, not log1p
    assert (sub["articleType"] == test["articleType"]).mean() > 0.85


def test_products_without_image_or_text_still_get_predictions(project: Path, tmp_path: Path, fake_encoder):
    frame = demo_frame()
    no_image = frame.iloc[:3]  # the fixture stores no embedding for the first products
    new = frame.iloc[[NO_IMAGE + 1, NO_IMAGE + 2]].assign(id=["new-1", "new-2"])  # not in any store
    blank = frame.iloc[[NO_IMAGE + 3]].assign(id="blank", productDisplayName="")
    table = pd.concat([new, no_image, blank]).iloc[::-1]
    table.to_csv(tmp_path / "input.csv", index=False)
    out = predict(load_config(project), ["articleType", "price"], input_path=tmp_path / "input.csv", top_k=2)
    assert out["id"].tolist() == table["id"].tolist()
    assert out["articleType"].notna().all() and np.isfinite(out["price"]).all()
    # Text of products missing from the store is vectorised on the fly: the new products are still read.
    by_id = out.set_index("id")
    assert (by_id.loc[["new-1", "new-2"], "articleType"].to_numpy() == new["articleType"].to_numpy()).all()


def test_products_with_text_but_no_photo_are_predicted_from_the_text(project: Path, tmp_path: Path):
    """The fixture's first products have no photo; their names say the article type. A prediction from the class
    prior would put one type on all of them."""
    no_photo = demo_frame().iloc[:NO_IMAGE]
    no_photo.to_csv(tmp_path / "no_photo.csv", index=False)
    out = predict(load_config(project), ["articleType"], input_path=tmp_path / "no_photo.csv")
    truth = no_photo["articleType"].to_numpy()
    assert (out["articleType"].to_numpy() == truth).mean() > 0.8 > no_photo["articleType"].value_counts(True).max()


def test_cli_predict_embeds_a_photo_the_store_lacks_and_says_so(project: Path, tmp_path: Path, fake_encoder):
    """A product of the --input table has a photo that was never extracted: predict embeds it on the fly (the
    encoder faked, as in test_images) and says how many, instead of predicting it as if it had none."""
    table = demo_frame().iloc[:3].copy()  # the fixture's products without a photo
    table.loc[table.index[0], "image"] = pd.read_csv(DEMO_TABLE, dtype=str)["image"].iloc[0]
    table.to_csv(tmp_path / "input.csv", index=False)
    result = runner.invoke(
        app,
        [
            "predict",
            "-c",
            str(project),
            "-t",
            "articleType",
            "--input",
            str(tmp_path / "input.csv"),
            "--out",
            str(tmp_path / "out.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 products have a photo that is not in the image store" in result.output
    assert fake_encoder == {"fits": 1, "embedded": 1}
    assert pd.read_csv(tmp_path / "out.csv", dtype=str)["id"].tolist() == table["id"].tolist()


def test_cli_predict_fetches_a_photo_url_the_store_lacks_as_it_reads_the_same_photo_from_disk(
    project: Path, tmp_path: Path, fake_encoder
):
    """A product of the --input table whose photo is a URL (data.remote_images, given as dotted options) is fetched
    once and embedded on the fly, and predicted exactly as the same photo given as a path under images_root; with
    remote_images off the URL is never requested and the product is still predicted (as one without a photo)."""
    photo = pd.read_csv(DEMO_TABLE, dtype=str)["image"].iloc[0]
    table = demo_frame().iloc[:3].copy()  # the fixture's products without a photo in the store
    remote = ["--data.remote_images", "true", "--data.remote_image_hosts", "[127.0.0.1]"]

    def run(image: str, name: str, *options: str) -> tuple[str, pd.DataFrame]:
        table.loc[table.index[0], "image"] = image
        table.to_csv(tmp_path / f"{name}.csv", index=False)
        result = runner.invoke(
            app,
            [
                "predict",
                "-c",
                str(project),
                "-t",
                "articleType",
                "-t",
                "price",
                "--top-k",
                "3",
                "--input",
                str(tmp_path / f"{name}.csv"),
                "--out",
                str(tmp_path / f"{name}-out.csv"),
                *options,
            ],
        )
        assert result.exit_code == 0, result.output
        out = pd.read_csv(tmp_path / f"{name}-out.csv", dtype={"id": str})
        assert out["id"].tolist() == table["id"].tolist()
        return result.output, out

    with photo_server(DEMO_TABLE.parent) as server:
        output, by_url = run(f"{server.url}/photos/{photo}", "by-url", *remote)
        assert "1 products have a photo that is not in the image store" in output
        assert fake_encoder == {"fits": 1, "embedded": 1}
        assert dict(server.served) == {photo: 1}
        _, by_path = run(photo, "by-path")
        pd.testing.assert_frame_equal(by_url, by_path)

        server.requests.clear()
        output, off = run(f"{server.url}/photos/{photo}", "remote-off")
        assert not server.requests
        assert "not in the image store" not in output
        assert "1 products have a photo URL that was not read (predicted without it)" in output
        assert fake_encoder == {"fits": 2, "embedded": 2}  # only the by-path run embedded anything more
    assert off.iloc[1:].equals(by_url.iloc[1:])
    assert off.loc[0, "price"] != by_url.loc[0, "price"]  # predicted without its photo: the photo counts


def test_all_targets_and_class_probabilities(project: Path):
    cfg = load_config(project)
    # baseColour is configured but not trained in this project: `all` must say so instead of skipping it.
    with pytest.raises(MmgbmError, match="no trained model for target 'baseColour'"):
        predict(cfg, ["all"])
    out = predict(cfg, ["is_men"], probabilities=True)
    probs = out[["is_men_p_no", "is_men_p_yes"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert set(out["is_men"]) <= {"yes", "no"}


def test_all_means_every_configured_target(with_colour: Path):
    out = predict(load_config(with_colour), ["all"])
    assert list(out.columns) == ["id", "articleType", "baseColour", "price", "is_men"]


def test_refuses_features_from_another_vectorizer(tmp_path: Path):
    path = make_project(tmp_path)
    cfg = load_config(path)
    assert runner.invoke(app, ["train", "--config", str(path), "-t", "is_men"]).exit_code == 0
    refit = load_config(path, {"features.text.min_df": 2})
    extract_text(refit, overwrite=True)
    with pytest.raises(MmgbmError, match="text/text features differ from those model .* retrain"):
        predict(refit, ["is_men"])
    with pytest.raises(MmgbmError):
        predict(cfg, ["is_men"])  # the stored vectorizer no longer matches this config either
    result = runner.invoke(app, ["predict", "--config", str(path), "-t", "is_men", "--features.text.min_df", "2"])
    assert result.exit_code != 0 and "retrain" in str(result.exception)


def test_refuses_a_model_trained_with_images_when_images_are_off(project: Path):
    cfg = load_config(project, {"features.image.enabled": False})
    with pytest.raises(MmgbmError, match="trained with image/b0 features"):
        predict(cfg, ["is_men"])


def test_metadata_levels_rare_bucketed_and_unseen_missing():
    train = pd.DataFrame({"season": ["a"] * 5 + ["b"] * 5 + ["rare"], "year": ["2011", "x", "2012"] + ["1"] * 8})
    enc = MetadataEncoder(("season",), ("year",), min_count=5).fit(train)
    out = enc.transform(pd.DataFrame({"season": ["b", "rare", "never-seen", None], "year": [1, 2, "n/a", 3]}))
    assert out["season"].tolist()[:2] == [1.0, 2.0]  # 'rare' shares the bucket after the kept levels
    assert np.isnan(out["season"].iloc[2]) and np.isnan(out["season"].iloc[3])
    new = pd.DataFrame({"season": ["b", "rare", "never-seen", None]})
    assert enc.count_unseen(new) == {"season": 1}  # the missing value is not an unseen level
    assert np.isnan(out["year"].iloc[2]) and out["year"].iloc[0] == 1.0
    with pytest.raises(ValueError, match="no metadata column"):
        enc.transform(pd.DataFrame({"year": [1]}))


def test_products_with_a_photo_but_no_text_are_predicted_from_the_photo(with_colour: Path, tmp_path: Path):
    """The synthetic photos carry the colour; with the names blanked, a model that fell back to the class prior
    would predict one colour for all. Whatever the model predicts with (stack or a text head), the photo decides."""
    cfg = load_config(with_colour)
    test = load_split(cfg, "test")
    blank = test[~test["id"].isin(demo_frame()["id"].iloc[:NO_IMAGE])].assign(productDisplayName="")
    blank.to_csv(tmp_path / "blank.csv", index=False)
    out = predict(cfg, ["baseColour"], input_path=tmp_path / "blank.csv")
    assert out["baseColour"].nunique() > 3
    assert (out["baseColour"].to_numpy() == blank["baseColour"].to_numpy()).mean() > 0.5


def test_min_confidence_fills_only_confident_labels(project: Path):
    cfg = load_config(project)
    everything = predict(cfg, ["articleType"])
    safe = predict(cfg, ["articleType"], min_confidence=0.9)
    filled = safe["articleType"].notna()
    assert 0 < filled.sum() < len(safe)
    assert (safe.loc[filled, "articleType_confidence"] >= 0.9).all()
    assert (safe.loc[~filled, "articleType_confidence"] < 0.9).all()
    assert (safe.loc[filled, "articleType"] == everything.loc[filled, "articleType"]).all()
    with pytest.raises(MmgbmError, match="--min-confidence must be in"):
        predict(cfg, ["articleType"], min_confidence=1.5)


def test_predict_input_with_a_broken_record_names_its_line_or_reads_on_past_it(project: Path, tmp_path: Path):
    table = tmp_path / "new.csv"
    demo_frame().iloc[:NO_IMAGE].to_csv(table, index=False)
    columns = len(demo_frame().columns)
    with table.open("a") as f:
        f.write("broken-1" + ",x" * columns + "\n")  # one field more than the header
    line = NO_IMAGE + 2
    args = ["predict", "--config", str(project), "-t", "articleType", "--input", str(table)]
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "refused.csv")])
    assert refused.exit_code == 1 and f"new.csv line {line} (id 'broken-1')" in str(refused.exception)
    out = tmp_path / "predicted.csv"
    read_on = runner.invoke(app, [*args, "--out", str(out), "--data.bad_rows", "skip"])
    assert read_on.exit_code == 0, read_on.output
    assert f"1 broken record skipped (line {line})" in " ".join(read_on.output.split())
    assert pd.read_csv(out, dtype={"id": str})["id"].tolist() == demo_frame().iloc[:NO_IMAGE]["id"].astype(str).tolist()
    report = pd.read_csv(Path(load_config(project).workdir) / "reports" / "bad_rows" / "input.csv")
    assert report[["line", "id"]].to_dict("records") == [{"line": line, "id": "broken-1"}]
