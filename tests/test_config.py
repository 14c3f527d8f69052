import importlib.util
import re
from pathlib import Path

import pytest
from fsspec.registry import known_implementations

from mmgbm.config import load_config, parse_overrides
from mmgbm.errors import MmgbmError
from mmgbm.workdir import features_dir
from tests.conftest import DEMO_CONFIG, REPO


def test_relative_paths_resolve_against_the_config_folder(tiny_config: Path, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)  # somewhere else than the config's folder
    cfg = load_config(tiny_config)
    assert cfg.workdir == tiny_config.parent / "work"
    assert cfg.data.splits["train"] == tiny_config.parent / "products.csv"


def test_the_feature_store_is_the_workdirs_unless_a_folder_or_url_says_otherwise(tiny_config: Path):
    assert str(features_dir(load_config(tiny_config))) == str(tiny_config.parent / "work" / "features")
    moved = load_config(tiny_config, {"store": "../shared-features"})  # relative to the config, as every path
    assert str(features_dir(moved)) == str(tiny_config.parent.parent / "shared-features")
    assert str(features_dir(load_config(tiny_config, {"store": "s3://bucket/catalogue/"}))) == "s3://bucket/catalogue"
    local = features_dir(load_config(tiny_config, {"store": "file:///srv/features"}))  # a folder, renamed into
    assert local.root == Path("/srv/features")
    # A storage whose package is not installed here (fsspec knows dozens): the package is named, not a traceback.
    protocol, spec = next(
        (protocol, spec)
        for protocol, spec in known_implementations.items()
        if "err" in spec and importlib.util.find_spec(spec["class"].split(".")[0]) is None
    )
    with pytest.raises(MmgbmError, match=f"store {protocol}://bucket/x: .*{re.escape(spec['err'])}"):
        load_config(tiny_config, {"store": f"{protocol}://bucket/x"})


def test_found_as_mmgbm_yaml_in_the_working_directory(tiny_config: Path, monkeypatch):
    monkeypatch.chdir(tiny_config.parent)
    assert load_config(None).targets["colour"].column == "colour"


def test_missing_default_config_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MmgbmError, match="--config"):
        load_config(None)


def test_overrides_change_one_run_and_are_typed(tiny_config: Path):
    overrides = parse_overrides(
        ["--model.learning_rate", "0.03", "--features.text.min_df=1", "--targets.colour.task", "binary"]
    )
    cfg = load_config(tiny_config, overrides)
    assert cfg.model.learning_rate == 0.03
    assert cfg.features.text.min_df == 1
    assert cfg.targets["colour"].task == "binary"
    assert load_config(tiny_config).model.learning_rate != 0.03


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["--model.learnin_rate", "1"], "did you mean 'learning_rate'"),
        (["--targets.colour.colum", "x"], "did you mean 'column'"),
        (["--data.holdout.fractin", "0.1"], "did you mean 'fraction'"),
        (["--features.image.backbone", "b7"], "'b0' or 'b3'"),
        (["--model.learning_rate", "-1"], "greater than 0"),
        (["--store", "nope://bucket/features"], "store nope://bucket/features: unknown storage 'nope'; give a folder"),
    ],
)
def test_bad_settings_are_one_line_errors_with_hints(tiny_config: Path, override, expected):
    with pytest.raises(MmgbmError, match=expected) as err:
        load_config(tiny_config, parse_overrides(override))
    assert "\n" not in str(err.value)


def test_a_train_split_is_required(write_config, tiny_catalogue):
    path = write_config({"data": {"splits": {"test": tiny_catalogue.name}}})
    with pytest.raises(MmgbmError, match="'train' split"):
        load_config(path)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  splits: [unclosed\n")
    with pytest.raises(MmgbmError, match="bad.yaml line"):
        load_config(path)


def test_log_target_only_for_regression(write_config, tiny_catalogue):
    path = write_config(
        {
            "data": {"splits": {"train": tiny_catalogue.name}},
            "targets": {"c": {"column": "colour", "task": "multiclass", "log_target": True}},
        }
    )
    with pytest.raises(MmgbmError, match="log_target"):
        load_config(path)


def test_shipped_configs_validate():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert "train" in cfg.data.splits, path
    assert load_config(DEMO_CONFIG).features.image.weights.endswith("efficientnetb0_notop.h5")


def test_paths_typed_on_the_command_line_are_relative_to_the_current_folder(tmp_path: Path, monkeypatch):
    """`--workdir runs/demo` means ./runs/demo where it was typed; the config's own paths stay relative to it."""
    from typer.testing import CliRunner

    from mmgbm.cli import app

    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    result = CliRunner().invoke(
        app, ["validate", "-c", str(DEMO_CONFIG), "--workdir", "runs/demo", "--features.image.weights", "none"]
    )
    assert result.exit_code == 0, result.output
    assert f"workdir: {here / 'runs' / 'demo'}" in result.output.replace("\n", "")
    assert load_config(DEMO_CONFIG).workdir.is_relative_to(DEMO_CONFIG.parent)  # the config's own: beside it
