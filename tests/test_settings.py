"""Each model setting is declared once: the estimators' parameters, which the config's `model:` section names with
the same defaults."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mmgbm.cli import app
from mmgbm.commands.train import FROM_TARGET, RENAMED, build_estimator
from mmgbm.config import ModelConfig, load_config, parse_overrides
from mmgbm.errors import MmgbmError
from mmgbm.estimator import MMGBMClassifier, MMGBMRegressor


def test_every_estimator_parameter_is_a_model_setting_with_the_estimators_default():
    settings = {RENAMED.get(name, name): value for name, value in ModelConfig().model_dump().items()}
    settings["lightgbm_params"] = settings["lightgbm_params"] or None  # {} in YAML is "none" to the estimator
    for kind in (MMGBMClassifier, MMGBMRegressor):
        for name, default in kind().get_params().items():
            if name not in FROM_TARGET:
                assert name in settings, f"{kind.__name__}({name}=...) cannot be set from the config"
                assert settings[name] == default, (
                    f"model.{name}: the config says {settings[name]!r}, {kind.__name__} {default!r}"
                )
    taken = set(MMGBMClassifier().get_params()) | set(MMGBMRegressor().get_params())
    assert set(settings) <= taken, f"settings no estimator reads: {set(settings) - taken}"


def test_every_setting_reaches_the_estimator(tiny_config: Path):
    cfg = load_config(
        tiny_config,
        parse_overrides(
            ["--model.selection_margin_se", "3.5", "--model.linear_c", "4", "--model.params", "{max_bin: 63}"]
        ),
    )
    model = build_estimator(cfg, cfg.targets["colour"])
    assert (model.selection_margin_se, model.linear_c, model.lightgbm_params) == (3.5, 4.0, {"max_bin": 63})


def test_contradicting_settings_stop_train_before_it_reads_anything(tiny_config: Path):
    """The estimator's own check of its parameters, run by `train` first: one error line (the CLI prints it)."""
    result = CliRunner().invoke(app, ["train", "-c", str(tiny_config), "--model.candidates", "40"])
    assert isinstance(result.exception, MmgbmError)
    assert str(result.exception).startswith("model settings: head_top_k (32) must be at least candidates (40)")
    assert "\n" not in str(result.exception) and not (tiny_config.parent / "work").exists()
