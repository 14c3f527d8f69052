"""drift: predict and serve record what they answered (counts), and `mmgbm drift` compares it with the model's
out-of-fold answers: a batch like the training products passes, one whose labels moved is flagged with exit status
4 and a PNG; the service's answers are counted too and written when it stops."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mmgbm.cli import app
from mmgbm.commands.train import train
from mmgbm.config import load_config
from mmgbm.drift import DRIFT_EXIT_CODE, AnswerCounts, compare
from tests.modelling_project import demo_frame, make_project
from tests.service import service_process

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
FIELDS = ["id", "productDisplayName", "season", "usage", "year"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The demo-like project, text and metadata only (the service starts without TensorFlow), with articleType and
    price trained; the held-out products are the `test` split."""
    path = make_project(tmp_path_factory.mktemp("drift"))
    raw = yaml.safe_load(path.read_text())
    raw["features"]["image"]["enabled"] = False
    path.write_text(yaml.safe_dump(raw))
    train(load_config(path), ["articleType", "price"])
    return path


def drift_cli(project: Path, *args: str):
    return runner.invoke(app, ["drift", "--config", str(project), "-t", "articleType", *args])


def predict_cli(project: Path, *args: str, out: Path):
    result = runner.invoke(
        app, ["predict", "--config", str(project), "-t", "articleType", "-t", "price", "--out", str(out), *args]
    )
    assert result.exit_code == 0, result.output
    return pd.read_csv(out)


def test_held_out_batch_passes_and_a_shifted_one_is_flagged(project: Path, tmp_path: Path):
    written = predict_cli(project, "--min-confidence", "0.9", out=tmp_path / "held_out.csv")
    assert list(written.columns) == ["id", "articleType", "articleType_confidence", "price"]  # nothing leaks out
    record = project.parent / "work" / "reports" / "articleType" / "drift" / "predict.json"
    recorded = json.loads(record.read_text())
    # Every answer is recorded, also those --min-confidence left empty.
    assert sum(recorded["labels"].values()) == sum(recorded["confidence"]) == len(written)
    assert Counter(written["articleType"].dropna()) <= Counter(recorded["labels"])
    calm = drift_cli(project)
    assert calm.exit_code == 0, calm.output
    lines = calm.output.strip().splitlines()
    assert lines[0].startswith(f"articleType: {len(written)} answers (predict) against ")
    assert lines[1].startswith("low confidence (< 0.50): ")
    assert lines[2].startswith("labels moved most: ")
    assert lines[3].startswith("verdict: no drift")

    frame = demo_frame()
    test_ids = set(written["id"].astype(str))
    shifted = frame[frame["id"].isin(test_ids) & frame["articleType"].isin(["Shirts", "Heels"])]
    shifted[FIELDS].to_csv(tmp_path / "shifted_input.csv", index=False)
    predict_cli(project, "--input", str(tmp_path / "shifted_input.csv"), out=tmp_path / "shifted.csv")
    flagged = drift_cli(project)
    assert flagged.exit_code == DRIFT_EXIT_CODE, flagged.output
    assert "verdict: DRIFT: the labels moved" in flagged.output
    png = record.parent / "predict.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_batches_pass_and_moved_ones_are_flagged():
    """The statistics alone: batches drawn from the reference pass at any size; a removed label, or answers turned
    unsure, are flagged."""
    rng = np.random.default_rng(1)
    labels = np.array(["Apparel"] * 50 + ["Accessories"] * 25 + ["Footwear"] * 20 + ["Personal Care"] * 5)
    confidences = rng.beta(8, 1, len(labels))
    reference = AnswerCounts("model")
    for _ in range(40):
        reference.add(labels, confidences)
    for size in (30, 300, 3000):
        batch = AnswerCounts("model")
        picked = rng.choice(len(labels), size)
        batch.add(labels[picked], confidences[picked])
        assert not any(shift.flagged for shift in compare(reference, batch, seed=size)), size
    no_footwear = AnswerCounts("model")
    kept = labels != "Footwear"
    no_footwear.add(np.concatenate([labels[kept], labels[labels == "Accessories"]]), rng.beta(8, 1, 105))
    label_shift, low_shift = compare(reference, no_footwear)
    assert label_shift.flagged and not low_shift.flagged
    unsure = AnswerCounts("model")
    unsure.add(labels, rng.beta(2, 2, len(labels)))
    assert compare(reference, unsure)[1].flagged


@pytest.mark.slow  # a real service process started and stopped: the slow lane
def test_the_service_counts_its_answers_and_writes_them_when_it_stops(project: Path):
    frame = demo_frame().iloc[:30]
    products = [{k: v for k, v in row.items() if not pd.isna(v)} for row in frame[FIELDS].to_dict("records")]
    with service_process(project, ["articleType", "price"], cwd=REPO) as url:
        answers = []
        for start in (0, 10):
            response = httpx.post(f"{url}/predict", params={"min_confidence": 0.99}, json=products[start : start + 20])
            assert response.status_code == 200, response.text
            answers += [a["targets"]["articleType"]["top_k"][0]["label"] for a in response.json()["predictions"]]
    served = list((project.parent / "work" / "reports" / "articleType" / "drift" / "serve").glob("*.json"))
    assert len(served) == 1
    assert Counter(json.loads(served[0].read_text())["labels"]) == Counter(answers)
    result = drift_cli(project, "--source", "serve")
    assert result.exit_code in (0, DRIFT_EXIT_CODE), result.output
    assert result.output.startswith("articleType: 40 answers (serve) against ")


def test_what_drift_cannot_compare_is_a_one_line_error(project: Path, tmp_path: Path):
    cases = [
        (["-t", "price"], "drift compares the labels of a flat classification target; 'price' is not one"),
        (["-t", "articleType", "--source", "nightly"], "--source must be one of predict, serve"),
        (["-t", "articleType", "--low-confidence", "1.5"], "--low-confidence must be in (0, 1)"),
    ]
    predict_cli(project, out=tmp_path / "out.csv")
    for args, message in cases:
        result = runner.invoke(app, ["drift", "--config", str(project), *args])
        assert result.exit_code == 1 and message in str(result.exception), (args, result.output)
