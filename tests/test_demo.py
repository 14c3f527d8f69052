"""The whole pipeline through `mmgbm demo`, on a small slice of the bundled real sample."""

import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mmgbm.cli import app
from tests.conftest import DEMO_CONFIG, REPO

DEMO_DATA = REPO / "mmgbm" / "data" / "demo"


@pytest.mark.slow  # a real TensorFlow network, end to end
def test_demo_runs_extract_train_evaluate_predict_end_to_end(tmp_path: Path):
    products = pd.read_csv(DEMO_DATA / "products.csv", dtype={"id": str})
    keep = products[products["articleType"].isin(["Watches", "Heels", "Tshirts"])].head(60)
    keep.to_csv(tmp_path / "products.csv", index=False)
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["workdir"] = "work"
    raw["data"]["splits"] = {"train": "products.csv"}
    raw["data"]["images_root"] = str(DEMO_DATA)
    raw["targets"] = {"articleType": raw["targets"]["articleType"]}
    # Random weights at a small size keep the test fast; the real weights are exercised in test_images.py.
    raw["features"]["image"].update(weights="none", image_size=64)
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(raw))

    result = CliRunner().invoke(app, ["demo", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "articleType on test" in result.output and "accuracy" in result.output
    # Training shows its stages, as `mmgbm train` does, and its summary before the evaluation.
    assert "articleType: stacker" in result.output
    assert result.output.index("articleType: saving") < result.output.index("articleType on test")
    submission = pd.read_csv(tmp_path / "work" / "submission.csv", dtype={"id": str})
    test_ids = pd.read_csv(tmp_path / "products.csv", dtype={"id": str}).set_index("id")
    assert 0 < len(submission) < len(keep)
    assert set(submission["articleType"]) <= {"Watches", "Heels", "Tshirts"}
    # Names carry the article type, so even this tiny model must get most of the test products right.
    truth = test_ids.loc[submission["id"], "articleType"].to_numpy()
    assert (submission["articleType"].to_numpy() == truth).mean() >= 0.8
    assert (tmp_path / "work" / "reports" / "articleType" / "metrics.json").is_file()


def test_the_bundled_demo_config_ships_inside_the_package_with_everything_it_names():
    """`mmgbm demo` must run from a plain (non-editable) install: its config, table, photos and weights are
    package data, and the config names them relative to itself."""
    from importlib.resources import files

    from mmgbm.cli import DEMO_CONFIG as CLI_DEMO
    from mmgbm.config import load_config

    packaged = Path(str(files("mmgbm") / "data" / "demo" / "mmgbm.yaml"))
    assert CLI_DEMO == packaged and packaged.is_file()
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mmgbm"]
    assert "data/demo/*.yaml" in patterns
    cfg = load_config(packaged)
    assert cfg.data.splits["train"].is_file() and cfg.data.images_root.is_dir()
    assert Path(cfg.features.image.weights).is_file()
