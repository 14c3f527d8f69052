"""train -> evaluate on the demo products: every task, the modalities, reports, and the artifact on disk."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from mmgbm.catalogue import load_split
from mmgbm.cli import app
from mmgbm.commands.artifact import FORMAT_VERSION, load_artifact
from mmgbm.commands.evaluate import evaluate
from mmgbm.commands.predict import predict
from mmgbm.commands.train import build_estimator, train
from mmgbm.config import load_config
from mmgbm.errors import MmgbmError
from mmgbm.estimator import FUSED, ProductMatrix
from mmgbm.stores import load_products
from mmgbm.workdir import model_dir
from tests.modelling_project import demo_frame, make_project
from tests.test_label_in_text import brand_names, catalogue, written_project

runner = CliRunner()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    path = make_project(tmp_path_factory.mktemp("train"))
    result = runner.invoke(app, ["train", "--config", str(path), "--target", "all"])
    assert result.exit_code == 0, result.output
    return path


def test_train_writes_one_artifact_per_target_that_loads_alone(project: Path):
    cfg = load_config(project)
    for name in cfg.targets:
        folder = model_dir(cfg, name)
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [
                "manifest.json",
                "estimator.skops",
                "lightgbm.txt",
                "labels.json",
                "config.json",
                "fingerprints.json",
                "metrics.json",
            ]
        )
        artifact = load_artifact(folder, name)
        assert set(artifact.fingerprints) == {"text/text", "image/b0", "image/colour"}
        assert artifact.config["targets"][name]["column"] == cfg.targets[name].column
    labels = json.loads((model_dir(cfg, "baseColour") / "labels.json").read_text())
    assert "Black" in labels["classes"]
    assert json.loads((model_dir(cfg, "price") / "labels.json").read_text()) == {"transform": "log1p"}


def test_fused_model_is_never_worse_than_a_single_head_on_validation(project: Path):
    cfg = load_config(project)
    for name in cfg.targets:
        m = load_artifact(model_dir(cfg, name), name).metrics
        heads = {n: v for n, v in m["validation"].items() if n != FUSED}
        if m["choice"] == FUSED:
            assert m["validation"][FUSED] > max(heads.values())
        else:  # the stack did not clearly win: the best head predicts alone
            assert m["validation"][m["choice"]] == max(heads.values())
        assert set(m["modality_heads"]) == {"text", "image"}


def test_price_drops_missing_and_nonpositive_targets_and_reports_both_scales(project: Path):
    cfg = load_config(project)
    metrics = load_artifact(model_dir(cfg, "price"), "price").metrics
    frame = demo_frame()
    train_ids = set(load_split(cfg, "train")["id"])
    bad = frame["id"].isin(train_ids) & ~(frame["price"] > 0)
    nonpositive = frame["id"].isin(train_ids) & (frame["price"] <= 0)
    assert metrics["dropped_missing"] + metrics["dropped_nonpositive"] == bad.sum() > 0
    assert metrics["dropped_nonpositive"] == nonpositive.sum()
    [result] = evaluate(cfg, ["price"])
    fused = result.metrics[FUSED]
    assert {"mae_log", "rmse_log", "mae"} <= set(fused)
    # Price follows the article type, which the text names: far better than predicting the median.
    y = np.log1p(frame["price"][frame["price"] > 0])
    assert fused["mae_log"] < 0.7 * float(np.mean(np.abs(y - np.median(y))))


def test_evaluate_writes_metrics_and_pictures_through_the_cli(project: Path):
    result = runner.invoke(app, ["evaluate", "--config", str(project), "-t", "articleType", "-t", "is_men"])
    assert result.exit_code == 0, result.output
    assert "fused accuracy" in result.output and "text alone" in result.output
    reports = load_config(project).workdir / "reports"
    for name in ("articleType", "is_men"):
        metrics = json.loads((reports / name / "metrics.json").read_text())
        assert metrics[FUSED]["accuracy"] > 0.85
        assert {"accuracy", "macro_f1", "weighted_f1", "per_class", "unseen_class_rows"} <= set(metrics[FUSED])
        assert set(metrics["modalities"]) == {"text", "image"}
        assert abs(sum(metrics["importance_by_modality"].values()) - 1) < 1e-6
        calibration = metrics["calibration"]
        assert calibration["ece"] < 0.1 and sum(b["rows"] for b in calibration["bins"]) == metrics[FUSED]["rows"]
        coverage = {row["coverage"]: row["accuracy"] for row in calibration["coverage"]}
        assert coverage[0.5] >= coverage[1.0] == metrics[FUSED]["accuracy"]
        for png in ("confusion_matrix.png", "per_class_f1.png", "importance_by_modality.png", "reliability.png"):
            assert (reports / name / png).read_bytes()[:4] == b"\x89PNG"


def test_image_modality_carries_the_colour(project: Path):
    # The synthetic embeddings encode the colour: the image alone must beat chance by far.
    [result] = evaluate(load_config(project), ["baseColour"])
    assert result.metrics["modalities"]["image"]["accuracy"] > 0.5


@pytest.mark.slow  # two full trainings: the slow lane keeps the fast suite under a minute
def test_training_is_deterministic(tmp_path: Path):
    path = make_project(tmp_path, demo_frame().head(270), n_folds=2, stack_folds=2)
    cfg = load_config(path)
    first = [s.metrics["validation"] for s in train(cfg, ["baseColour"])]
    p1 = predict(cfg, ["baseColour"], probabilities=True)
    second = [s.metrics["validation"] for s in train(cfg, ["baseColour"])]
    p2 = predict(cfg, ["baseColour"], probabilities=True)
    assert first == second
    assert p1.equals(p2)


def test_unseen_classes_and_metadata_levels_in_evaluation_are_counted_not_crashed_on(tmp_path: Path):
    frame = demo_frame().head(270)
    cfg_path = make_project(tmp_path, frame, n_folds=2, stack_folds=2)
    cfg = load_config(cfg_path)
    train(cfg, ["baseColour"])
    # Relabel some held-out products with a colour training never saw.
    test = load_split(cfg, "test")
    frame.loc[frame["id"].isin(test["id"].iloc[:5]), "baseColour"] = "Ultraviolet"
    frame.loc[frame["id"].isin(test["id"].iloc[:7]), "usage"] = "Space travel"
    frame.to_csv(tmp_path / "products.csv", index=False)
    [result] = evaluate(cfg, ["baseColour"])
    train_colours = set(load_split(cfg, "train")["baseColour"])
    test = load_split(cfg, "test").dropna(subset=["baseColour"])
    unseen = test["baseColour"][~test["baseColour"].isin(train_colours)]
    assert result.metrics[FUSED]["unseen_class_rows"] == len(unseen) >= 5
    assert "Ultraviolet" in result.metrics[FUSED]["unseen_classes"]
    usages = set(load_split(cfg, "train")["usage"].dropna())
    new_usage = int((test["usage"].notna() & ~test["usage"].isin(usages)).sum())
    assert new_usage >= 7 and result.metrics["unseen_metadata_levels"] == {"season": 0, "usage": new_usage}
    assert f"metadata levels unseen in training (read as missing): usage {new_usage}" in result.describe()


def test_binary_target_needs_exactly_two_values(tmp_path: Path):
    frame = demo_frame()
    frame["is_men"] = frame["gender"]  # five values
    cfg = load_config(make_project(tmp_path, frame))
    with pytest.raises(MmgbmError, match="binary but has 5 distinct values"):
        train(cfg, ["is_men"])


@pytest.mark.slow  # trains on a synthetic 300-class catalogue
def test_large_label_spaces_rerank_few_candidates_with_knn_heads_only(tmp_path: Path):
    cfg = load_config(make_project(tmp_path, candidates=3, linear_max_weights=10))
    [summary] = train(cfg, ["articleType"])
    assert not any(name.endswith(".linear") for name in summary.metrics["validation"])
    [result] = evaluate(cfg, ["articleType"])
    assert result.metrics[FUSED]["accuracy"] > 0.8
    top = predict(cfg, ["articleType"], top_k=5)
    assert "articleType_top3" in top and "articleType_top4" not in top  # only 3 candidates exist


def test_unknown_target_is_a_one_line_error(project: Path):
    with pytest.raises(MmgbmError, match="unknown target 'nope'"):
        train(load_config(project), ["nope"])


def test_artifact_holds_no_config_object_and_knows_its_target(project: Path):
    cfg = load_config(project)
    folder = model_dir(cfg, "price")
    assert b"mmgbm.config" not in (folder / "estimator.skops").read_bytes()  # flat parameters, no pydantic
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["target"] == {
        "name": "price",
        "column": "price",
        "task": "regression",
        "log_target": True,
        "normalise": None,
        "path": None,
    }
    assert load_artifact(folder, "price").model.log_target is True


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda folder: _edit_manifest(folder, format_version=1),
            f"format 1; this mmgbm reads format {FORMAT_VERSION}",
        ),
        (lambda folder: (folder / "manifest.json").unlink(), "older format"),
        (lambda folder: (folder / "lightgbm.txt").write_text("tree\n"), "lightgbm.txt: missing or changed"),
        (
            lambda folder: _edit_manifest(folder, target={"name": "is_men", "column": "is_men", "task": "binary"}),
            "holds a model of target 'is_men', not 'price'",
        ),
    ],
)
def test_damaged_or_foreign_artifacts_are_refused_in_one_line(tmp_path: Path, project: Path, damage, message):
    cfg = load_config(project)
    folder = tmp_path / "price"
    shutil.copytree(model_dir(cfg, "price"), folder)
    damage(folder)
    with pytest.raises(MmgbmError, match=message):
        load_artifact(folder, "price")


def _edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_writing_reports_leaves_the_matplotlib_backend_alone(tmp_path: Path):
    code = (
        "import matplotlib; matplotlib.use('pdf'); from mmgbm.commands.reports import importance_png; "
        f"importance_png(__import__('pathlib').Path({str(tmp_path / 'i.png')!r}), {{'text': 1.0}}, 't'); "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "pdf"
    assert (tmp_path / "i.png").read_bytes()[:4] == b"\x89PNG"


def test_a_single_class_target_is_refused_not_trained(tmp_path: Path):
    frame = demo_frame()
    frame["baseColour"] = "Black"
    cfg = load_config(make_project(tmp_path, frame))
    with pytest.raises(MmgbmError, match="cannot train target 'baseColour': y has a single class"):
        train(cfg, ["baseColour"])


@pytest.mark.slow  # two full trainings: the slow lane
def test_last_bit_differences_in_the_features_leave_the_model_unchanged(tmp_path):
    """Other machines, BLAS builds and a cluster's row chunks compute the same features to within their last bits;
    the heads' ranks, the gate's choice and the probabilities must not depend on those bits. (Before the heads'
    scores were settled on a grid, nudging every feature of the demo products by one float32 step moved
    probabilities by 0.03, and noise of 1e-12 flipped the gate's choice.)"""
    cfg = load_config(make_project(tmp_path, demo_frame().head(270), n_folds=2, stack_folds=2))
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    X, new = (load_products(cfg, frame)[0] for frame in (train, test))
    text = {
        name: sp.csr_matrix((np.nextafter(m.data, np.float32(np.inf)), m.indices, m.indptr), shape=m.shape)
        for name, m in X.text.items()
    }
    dense = {name: np.nextafter(block, np.float32(np.inf)) for name, block in X.dense.items()}
    nudged = ProductMatrix(X.ids, text, X.words, dense, X.meta)
    models = [
        build_estimator(cfg, cfg.targets["articleType"]).fit(m, train["articleType"].to_numpy()) for m in (X, nudged)
    ]
    # Here the heads' verdicts do not move and the stack's move for one product; a settled score within a bit of a
    # grid point may still cross it, which can move a probability by ~1e-5 (test_cluster.py), never by the 0.03 of
    # unsettled scores.
    assert models[0].choice_ == models[1].choice_
    # At most one training product's out-of-fold verdict may change (counted in products: the shares' float
    # difference for exactly one product can exceed 1 / n by a rounding step).
    moved = {n: round(abs(models[0].validation_[n] - models[1].validation_[n]) * len(X)) for n in models[0].validation_}
    assert max(moved.values()) <= 1, moved
    np.testing.assert_allclose(models[1].predict_proba(new), models[0].predict_proba(new), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(models[1].predict(new), models[0].predict(new))


def stage_lines(output: str, target: str) -> list[str]:
    """The lines `train` printed for one target: its stages, then its summary."""
    return [line for line in output.splitlines() if line.startswith(f"{target}: ")]


def one_line_matching(lines: list[str], pattern: str) -> str:
    found = [line for line in lines if re.match(pattern, line)]
    assert len(found) == 1, (pattern, lines)
    return found[0]


@pytest.fixture(scope="module")
def brands_trained(tmp_path_factory) -> tuple[Path, str]:
    """A catalogue whose titles start with the brand (label_in_text: title) and a second target, kind, trained
    through the CLI; the config and what train printed (CliRunner's output is no terminal, as a file is not)."""
    rng = np.random.default_rng(0)
    brands = brand_names(rng, 60)
    frame = pd.concat([catalogue(rng, brands[:30], 6, 0), catalogue(rng, brands[30:], 1, 1000)])
    path = written_project(tmp_path_factory.mktemp("stages"), frame, frame.head(10))
    result = runner.invoke(app, ["train", "--config", str(path), "-t", "brand", "-t", "kind"])
    assert result.exit_code == 0, result.output
    return path, result.output


def test_train_shows_each_stage_of_each_target_as_one_line_when_piped(brands_trained):
    _, output = brands_trained
    assert "\r" not in output  # no spinner redrawn in place
    lines = output.splitlines()
    assert lines[0].startswith("reading the training table and its features")
    for target in ("brand", "kind"):
        said = stage_lines(output, target)
        assert len(said) == len(set(said))  # each stage once, as it ended
        heads = [line for line in said if re.match(rf"{target}: head \S+ folds 3/3 \d+:\d\d:\d\d$", line)]
        assert len(heads) >= 2
        one_line_matching(said, rf"{target}: stacker rounds on 3 folds (\d+)/\1 ")
        one_line_matching(said, rf"{target}: stacker final rounds (\d+)/\1 ")
        assert said[-2].startswith(f"{target}: saving") and said[-1].startswith(f"{target}: 210 products")
        assert said.index(heads[-1]) < said.index(one_line_matching(said, rf"{target}: stacker rounds"))
    one_line_matching(stage_lines(output, "brand"), "brand: label-in-text chooser ")
    assert not [line for line in stage_lines(output, "kind") if "label-in-text" in line]
    # Each summary as soon as its target is trained, before the next target's first stage.
    assert lines.index(stage_lines(output, "brand")[-1]) < lines.index(stage_lines(output, "kind")[0])


def test_train_summary_names_the_label_in_text_choosers_choice_and_its_accuracy(brands_trained):
    path, output = brands_trained
    chooser = json.loads((model_dir(load_config(path), "brand") / "metrics.json").read_text())["label_in_text"]
    assert chooser["kept"]
    summary = stage_lines(output, "brand")[-1]
    assert (
        f"label-in-text chooser (title): kept, out-of-fold accuracy {chooser['chooser']:.4f} "
        f"vs the model's {chooser['model']:.4f}"
    ) in summary
    assert "label-in-text" not in stage_lines(output, "kind")[-1]


def test_train_summary_says_the_chooser_was_not_kept_where_titles_do_not_start_with_the_label(tmp_path: Path):
    rng = np.random.default_rng(1)
    frame = catalogue(rng, brand_names(rng, 20), 6, 0)
    frame["title"] = "set of " + frame["kind"] + " by " + frame["brand"]  # the brand last, never first
    path = written_project(tmp_path, frame, frame.head(10))
    result = runner.invoke(app, ["train", "--config", str(path), "-t", "brand"])
    assert result.exit_code == 0, result.output
    chooser = json.loads((model_dir(load_config(path), "brand") / "metrics.json").read_text())["label_in_text"]
    assert not chooser["kept"]
    assert "label-in-text chooser (title): not kept, " in stage_lines(result.output, "brand")[-1]


def test_train_shows_the_regression_stackers_rounds_and_the_image_heads_folds(tmp_path: Path):
    path = make_project(tmp_path, demo_frame().head(270), n_folds=2, stack_folds=2)
    result = runner.invoke(app, ["train", "--config", str(path), "-t", "price"])
    assert result.exit_code == 0, result.output
    said = stage_lines(result.output, "price")
    assert [line for line in said if re.match(r"price: head image\.\S+ folds 2/2 ", line)]
    one_line_matching(said, r"price: stacker rounds on 2 folds (\d+)/\1 ")
    one_line_matching(said, r"price: stacker final rounds (\d+)/\1 ")
    assert said[-1].startswith("price: ") and "out-of-fold MAE" in said[-1]
