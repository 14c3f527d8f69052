"""Model versions: every train writes a new version, the gate makes it current only when it does not score worse
than the current one beyond their noise, `mmgbm models` lists and rolls back, old versions are pruned, and a model
written before versions keeps loading."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mmgbm.cli import app
from mmgbm.config import load_config
from mmgbm.model_versions import REFUSED_EXIT_CODE, versions
from mmgbm.workdir import model_dir, target_models_dir
from tests.modelling_project import make_project

runner = CliRunner()
TARGET = "articleType"


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def said(text: str) -> str:
    """Printed text as one line (the console wraps long lines)."""
    return " ".join(text.split())


def trained(project: Path, *options: object) -> None:
    result = invoke("train", "--config", project, "--target", TARGET, *options)
    assert result.exit_code == 0, result.output


def predictions(project: Path, out: Path) -> pd.DataFrame:
    result = invoke("predict", "--config", project, "--target", TARGET, "--out", out, "--top-k", 2)
    assert result.exit_code == 0, result.output
    return pd.read_csv(out)


def listed(project: Path) -> list[list[str]]:
    """`mmgbm models` as (version, state) per line."""
    result = invoke("models", "--config", project, "--target", TARGET)
    assert result.exit_code == 0, result.output
    return [[line.split()[1], line.split()[-1]] for line in result.stdout.splitlines()]


def shuffle_labels(project: Path, fraction: float) -> None:
    """Give `fraction` of the training products another product's label."""
    table = project.parent / "products.csv"
    frame = pd.read_csv(table, dtype={"id": str})
    rng = np.random.default_rng(7)
    rows = rng.choice(len(frame), int(fraction * len(frame)), replace=False)
    frame.loc[rows, TARGET] = frame.loc[rng.permutation(rows), TARGET].to_numpy()
    frame.to_csv(table, index=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project whose current model learnt from the right labels, and whose table then had 20% of its products'
    labels shuffled: a retrain scores worse than the current model beyond the noise."""
    path = make_project(tmp_path_factory.mktemp("versions"))
    trained(path)
    shuffle_labels(path, 0.2)
    return path


def test_a_retrain_on_shuffled_labels_is_refused_and_predict_keeps_the_current_version(project, tmp_path):
    before = predictions(project, tmp_path / "before.csv")
    first = model_dir(load_config(project), TARGET).name

    refused = invoke("train", "--config", project, "--target", TARGET)
    assert refused.exit_code == REFUSED_EXIT_CODE, refused.output
    line = said(refused.stderr)
    assert line.count("refused:") == 1 and "Traceback" not in line
    new = next(v for v in listed(project) if v[1] == "refused")[0]
    both = re.search(rf"{new}'s out-of-fold accuracy (\S+) is worse than current version {first}'s (\S+) ", line)
    assert both and float(both[1]) < float(both[2]), line
    assert "beyond the gate's margin" in line and f"--use {new}" in line and "--force" in line
    assert model_dir(load_config(project), TARGET).name == first
    assert listed(project) == [[first, "current"], [new, "refused"]]
    pd.testing.assert_frame_equal(predictions(project, tmp_path / "after.csv"), before)

    forced = invoke("train", "--config", project, "--target", TARGET, "--force")
    assert forced.exit_code == 0, forced.output
    assert "forced past the gate" in said(forced.stdout)
    third = model_dir(load_config(project), TARGET).name
    assert third not in (first, new)

    back = invoke("models", "--config", project, "--target", TARGET, "--use", first)
    assert back.exit_code == 0 and said(back.stdout) == f"{TARGET}: version {first} is current (was {third})"
    assert said(invoke("models", "--config", project, "--target", TARGET, "--use", first).stdout).endswith(
        "is already current"
    )
    pd.testing.assert_frame_equal(predictions(project, tmp_path / "rolled-back.csv"), before)


@pytest.mark.slow  # three more trainings: the slow lane keeps the fast suite under a minute
def test_old_versions_beyond_keep_are_removed_never_the_current_one(project):
    cfg = load_config(project)
    root = target_models_dir(cfg, TARGET)
    oldest = versions(root)[0].name
    assert invoke("models", "--config", project, "--target", TARGET, "--use", oldest).exit_code == 0
    refused = invoke("train", "--config", project, "--target", TARGET, "--models.keep", 2)
    assert refused.exit_code == REFUSED_EXIT_CODE, refused.output
    assert [v.state for v in versions(root)] == ["current", "refused"] and versions(root)[0].name == oldest
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        [*(v.name for v in versions(root)), "current", "gate.jsonl"]
    )


def test_using_an_unknown_or_broken_version_is_a_one_line_error(project):
    unknown = invoke("models", "--config", project, "--target", TARGET, "--use", "20200101T000000-00000000")
    assert unknown.exit_code == 1 and "has no model version '20200101T000000-00000000'" in str(unknown.exception)
    cfg = load_config(project)
    current = model_dir(cfg, TARGET).name
    broken = next(v for v in versions(target_models_dir(cfg, TARGET)) if v.name != current)
    (broken.folder / "lightgbm.txt").write_text("tree\n")
    refused = invoke("models", "--config", project, "--target", TARGET, "--use", broken.name)
    assert refused.exit_code == 1 and "lightgbm.txt: missing or changed" in str(refused.exception)
    assert model_dir(cfg, TARGET).name == current
    shutil.rmtree(broken.folder)


@pytest.mark.slow  # two more trainings: the slow lane
def test_a_model_written_before_versions_loads_and_is_gated_against(project, tmp_path):
    """A folder of the old layout (the model's files straight in models/<target>/, no pointer) predicts, is listed
    as the current version "legacy", and a retrain is compared with it."""
    cfg = load_config(project)
    legacy = tmp_path / "legacy"
    shutil.copytree(project.parent, legacy, ignore=shutil.ignore_patterns("models"))
    root = target_models_dir(load_config(legacy / "mmgbm.yaml"), TARGET)
    shutil.copytree(model_dir(cfg, TARGET), root)
    config = legacy / "mmgbm.yaml"
    assert len(predictions(config, tmp_path / "out.csv")) > 0
    assert listed(config) == [["legacy", "current"]]
    refused = invoke("train", "--config", config, "--target", TARGET)  # on the shuffled labels
    assert refused.exit_code == REFUSED_EXIT_CODE and "than current version legacy's" in said(refused.stderr)
    (_, legacy_state), (new, new_state) = listed(config)
    assert (legacy_state, new_state) == ("current", "refused")
    assert invoke("models", "--config", config, "--target", TARGET, "--use", new).exit_code == 0
    assert model_dir(load_config(config), TARGET) == root / new
    assert invoke("models", "--config", config, "--target", TARGET, "--use", "legacy").exit_code == 0
    assert model_dir(load_config(config), TARGET) == root
