"""The command line as a user meets it: help, validation, and one-line errors with no traceback."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from mmgbm.cli import app
from tests.conftest import DEMO_CONFIG

runner = CliRunner()


def mmgbm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmgbm", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_lists_the_pipeline_commands():
    out = runner.invoke(app, ["--help"]).output
    for command in ("extract-images", "extract-text", "train", "evaluate", "predict", "validate", "demo"):
        assert command in out


def test_validate_counts_products_per_split():
    result = runner.invoke(app, ["validate", "--config", str(DEMO_CONFIG)])
    assert result.exit_code == 0, result.output
    assert "train: 4" in result.output and "test: " in result.output


def test_user_errors_are_one_line_without_traceback(tiny_config: Path, tiny_catalogue: Path):
    cases = [
        (["validate", "--config", "missing.yaml"], "config file missing.yaml not found"),
        (["validate", "--config", str(tiny_config), "--model.learnin_rate", "1"], "did you mean 'learning_rate'"),
        (["validate", "--config", str(tiny_config), "--data.categorical_columns", "[seasn]"], "no column 'seasn'"),
    ]
    for args, expected in cases:
        result = mmgbm(*args)
        assert result.returncode == 1, result
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_duplicate_ids_stop_with_examples(tiny_config: Path, tiny_catalogue: Path):
    frame = pd.read_csv(tiny_catalogue)
    pd.concat([frame, frame.head(1)]).to_csv(tiny_catalogue, index=False)
    result = mmgbm("validate", "--config", str(tiny_config))
    assert result.returncode == 1 and "duplicate product ids" in result.stderr and "'a1'" in result.stderr


def test_extract_text_help_names_the_word_and_character_ngrams_and_their_settings():
    out = " ".join(runner.invoke(app, ["extract-text", "--help"]).output.split())  # rich wraps the help
    assert "word n-grams of 1-2 words (features.text.ngram_range)" in out
    assert "character n-grams of 2-5 characters within words (features.text.char_ngram_range" in out
