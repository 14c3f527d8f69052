"""Review: answers to the audit's suspects become lines of <workdir>/labels/<target>.csv that two reviewers and a
crash cannot damage; train learns the decided labels, evaluate scores against them, audit hides what was decided;
the review service records only valid answers, from this machine or with the token, and never runs a title as HTML.
The page itself is driven in a real browser by test_review_browser.py."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mmgbm.catalogue import in_holdout, load_split
from mmgbm.cli import app
from mmgbm.commands.artifact import load_artifact
from mmgbm.commands.predict import predict
from mmgbm.commands.review import ReviewService, create_review_app
from mmgbm.config import load_config
from mmgbm.corrections import COLUMNS, Decision, append_decision, read_corrections
from mmgbm.errors import MmgbmError
from mmgbm.workdir import labels_path, model_dir
from tests.modelling_project import demo_frame, make_project
from tests.review_project import SCRIPT, audit_suspects, decisions, review_project

runner = CliRunner()
LOCAL = "http://127.0.0.1:8000"


def said(result) -> str:
    """A command's output as one line: the console wraps it at its width."""
    return " ".join(result.output.split())


def decision(pid: str, decided: str = "Shirts", **more: str) -> Decision:
    return Decision(pid, "articleType", "Tshirts", "Shirts", decided, **more)


def _append_many(path: str, writer: int, count: int) -> None:
    for i in range(count):
        append_decision(Path(path), decision(f"{writer}-{i}", by=f"reviewer {writer}, the careful one"))


def test_two_reviewers_at_once_lose_nothing(tmp_path: Path):
    """Four processes append 50 answers each at the same time: 200 whole lines under one header."""
    path = tmp_path / "labels" / "articleType.csv"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(str(path), w, 50)) for w in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=60)
    assert [p.exitcode for p in writers] == [0, 0, 0, 0]
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and lines.count(lines[0]) == 1
    read = read_corrections(path, "articleType")
    assert read.torn == 0 and set(read.latest.index) == {f"{w}-{i}" for w in range(4) for i in range(50)}
    assert len(lines) == 201


def test_a_writer_killed_mid_stream_leaves_only_whole_lines(tmp_path: Path):
    """A reviewer's service killed while it appends: every line in the file reads back whole, and the next
    answer appends cleanly after them."""
    path = tmp_path / "articleType.csv"
    code = (
        "import sys; from pathlib import Path; from mmgbm.corrections import Decision, append_decision\n"
        "for i in range(100_000): append_decision(Path(sys.argv[1]), "
        "Decision(str(i), 'articleType', 'Tshirts', 'Shirts', 'Shirts', 'reviewer 9, the careful one'))"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 30
    while (not path.exists() or path.stat().st_size < 20_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    before = read_corrections(path, "articleType")
    assert len(before.latest) > 50
    append_decision(path, decision("after"))
    after = read_corrections(path, "articleType")
    assert after.torn == 0 and len(after.latest) == len(before.latest) + 1


def test_a_write_cut_short_by_a_crash_is_ignored_then_cut_off(tmp_path: Path):
    path = tmp_path / "articleType.csv"
    append_decision(path, decision("1"))
    with path.open("ab") as file:
        file.write(b"2,articleType,Tshirts,Shirts,Shi")  # the power went: no newline, half a line
    read = read_corrections(path, "articleType")
    assert list(read.latest.index) == ["1"] and read.torn == 1
    append_decision(path, decision("3", "Tshirts"))
    assert path.read_text().splitlines()[1:] == [
        line for line in path.read_text().splitlines()[1:] if line.startswith(("1,", "3,"))
    ]
    read = read_corrections(path, "articleType")
    assert read.latest["decided"].to_dict() == {"1": "Shirts", "3": "Tshirts"} and read.torn == 0


def test_a_full_disk_leaves_no_half_answer(tmp_path: Path, monkeypatch):
    path = tmp_path / "articleType.csv"
    append_decision(path, decision("1"))
    size = path.stat().st_size
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    with pytest.raises(MmgbmError, match="no space left"):
        append_decision(path, decision("2"))
    assert path.stat().st_size == size


def test_the_last_answer_wins_and_a_broken_edit_is_a_one_line_error(tmp_path: Path):
    path = tmp_path / "articleType.csv"
    append_decision(path, decision("1", "Shirts"))
    append_decision(path, decision("1", "Tops"))
    assert read_corrections(path, "articleType").latest.loc["1", "decided"] == "Tops"
    with path.open("a") as file:
        file.write("2,articleType,Tshirts\n")
    with pytest.raises(MmgbmError, match=r"articleType.csv line 4: 3 fields where the header has 9; fix or delete"):
        read_corrections(path, "articleType")
    path.write_text(",".join(COLUMNS) + "\n5,baseColour,Red,Blue,Blue,,,,\n")
    with pytest.raises(MmgbmError, match=r"line 2, column target: 'baseColour' is not 'articleType'"):
        read_corrections(path, "articleType")
    with pytest.raises(MmgbmError, match="line breaks"):
        append_decision(path, decision("6", by="two\nlines"))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, str]:
    return review_project(tmp_path_factory.mktemp("review"))


@pytest.fixture
def decided(project):
    """The labels file is each test's own: removed after it."""
    path = labels_path(load_config(project[0]), "articleType")
    yield path
    path.unlink(missing_ok=True)


def service(path: Path, host: str = "127.0.0.1", token: str | None = None, **client) -> TestClient:
    return TestClient(create_review_app(ReviewService(load_config(path)), host, token), base_url=LOCAL, **client)


def test_answers_are_recorded_with_what_the_reviewer_was_shown(project, decided):
    path, _ = project
    client = service(path)
    queue = client.get("/review/articleType/queue", params={"limit": 5}).json()
    assert queue["left"] == queue["suspects"] == len(audit_suspects(path)) and queue["decided"] == 0
    first, second = queue["queue"][:2]
    assert "Tshirts" in queue["classes"] and len(queue["queue"]) == 5
    answer = client.post(
        "/review/articleType/decisions", json={"id": first["id"], "decided": first["suggested"], "by": "ana"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["left"] == queue["left"] - 1
    client.post("/review/articleType/decisions", json={"id": second["id"], "decided": second["given"]})
    rows = decisions(path)
    assert list(rows.columns) == COLUMNS
    assert rows[["id", "given", "suggested", "decided", "by"]].values.tolist() == [
        [first["id"], first["given"], first["suggested"], first["suggested"], "ana"],
        [second["id"], second["given"], second["suggested"], second["given"], ""],
    ]
    manifest = model_dir(load_config(path), "articleType") / "manifest.json"
    assert rows["model"].tolist() == [hashlib.sha256(manifest.read_bytes()).hexdigest()[:12]] * 2
    assert rows["at"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").all() and rows["audit"].str.len().eq(12).all()
    after = client.get("/review/articleType/queue", params={"limit": 5}).json()
    assert after["decided"] == 2 and [s["id"] for s in after["queue"][:3]] == [s["id"] for s in queue["queue"][2:5]]


def test_a_label_only_held_out_products_carry_can_be_picked(project, tmp_path):
    """A class whose every training product is mislabelled is no class of the model, yet the right answer."""
    folder = tmp_path / "project"
    shutil.copytree(project[0].parent, folder)
    table = pd.read_csv(folder / "products.csv", dtype={"id": str})
    held_out = next(i for i in (f"new-{n}" for n in range(100)) if in_holdout(pd.Series([i]), 0.2, 0).iloc[0])
    pd.concat([table, pd.DataFrame({"id": [held_out], "articleType": ["Jeans"]})]).to_csv(
        folder / "products.csv", index=False
    )
    client = service(folder / project[0].name)
    assert "Jeans" in client.get("/review/articleType/queue").json()["classes"]
    answer = {"id": audit_suspects(project[0])["id"][0], "decided": "Jeans"}
    assert client.post("/review/articleType/decisions", json=answer).status_code == 200


@pytest.mark.parametrize(
    "answer, reason",
    [
        ({"id": "no-such-product", "decided": "Shirts"}, "product 'no-such-product' is not in the training table"),
        ({"id": "{not_suspect}", "decided": "Shirts"}, "is not among the suspects of"),
        ({"id": "{suspect}", "decided": "Jeans"}, "'Jeans' is not a class of 'articleType'"),
        ({"id": "{suspect}", "decided": "Shirts", "role": "admin"}, "role: Extra inputs are not permitted"),
        ({"id": "{suspect}", "decided": "Shirts", "by": "a\nb"}, "by: String should match pattern"),
        ({"id": "{suspect}", "decided": ""}, "decided: String should have at least 1 character"),
    ],
)
def test_answers_are_checked_against_the_table_and_the_classes(project, decided, answer, reason):
    path, _ = project
    suspects = audit_suspects(path)
    train_ids = _model(path).train_ids_
    ids = {"{suspect}": suspects["id"][0], "{not_suspect}": next(i for i in train_ids if i not in set(suspects["id"]))}
    answer = {**answer, "id": ids.get(answer["id"], answer["id"])}
    response = service(path).post("/review/articleType/decisions", json=answer)
    assert response.status_code == 422
    assert reason in response.json()["detail"] and "\n" not in response.json()["detail"]
    assert not decided.exists()


def test_writes_need_this_machine_or_the_token(project, decided):
    path, _ = project
    answer = {"id": audit_suspects(path)["id"][0], "decided": "Shirts"}
    url = "/review/articleType/decisions"
    open_to_all = service(path, host="0.0.0.0")
    refused = open_to_all.post(url, json=answer)
    assert refused.status_code == 403 and "MMGBM_REVIEW_TOKEN" in refused.json()["detail"]
    assert open_to_all.get("/review/articleType/queue").status_code == 200  # reading is not writing
    local = service(path)
    another_site = local.post(url, json=answer, headers={"Origin": "http://evil.example"})
    rebound = local.post(url, json=answer, headers={"Host": "evil.example:8000"})
    assert another_site.status_code == rebound.status_code == 403
    assert not decided.exists()
    with_token = service(path, host="0.0.0.0", token="s3cret")
    assert with_token.post(url, json=answer).status_code == 401
    assert with_token.post(url, json=answer, headers={"X-Review-Token": "s3cre"}).status_code == 401
    assert (
        with_token.post(
            url, json=answer, headers={"X-Review-Token": "s3cret", "Origin": "https://review.example"}
        ).status_code
        == 200
    )
    assert decisions(path)["id"].tolist() == [answer["id"]]


def test_a_script_in_a_title_is_served_as_data_never_as_html(project):
    path, scripted = project
    client = service(path)
    page = client.get("/review/articleType")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "pwned" not in page.text  # the page is static: catalogue text arrives as JSON, set as text by the script
    queue = client.get("/review/articleType/queue", params={"limit": 100}).json()["queue"]
    shown = next(s for s in queue if s["id"] == scripted)
    assert shown["title"].startswith(SCRIPT)
    report = (path.parent / "work" / "reports" / "articleType" / "audit.html").read_text()
    assert "window.pwned" in report and "<script>window.pwned" not in report and "&lt;script&gt;" in report


def test_photos_are_served_small_and_only_of_suspects(project):
    path, _ = project
    client = service(path)
    queue = client.get("/review/articleType/queue").json()["queue"]
    with_photo = next(s for s in queue if s["photo"])
    photo = client.get(with_photo["photo"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content[:2] == b"\xff\xd8"
    missing = client.get("/review/articleType/photo", params={"id": "/etc/passwd"})
    assert missing.status_code == 404 and missing.json() == {"detail": "no photo of product '/etc/passwd' to show"}


def test_every_review_endpoint_documents_its_refusals(project):
    schema = service(project[0]).get("/openapi.json").json()
    answers = {
        (path, method): operation["responses"]
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if path.startswith("/review")
    }
    assert ("/review/{target}/decisions", "post") in answers
    for (path, method), responses in answers.items():
        refusals = {status: r for status, r in responses.items() if status.startswith("4")}
        assert "422" in refusals, (path, method)
        for status, response in refusals.items():
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Problem"}, (
                path,
                method,
                status,
            )


def test_review_without_an_audit_says_what_to_run(tmp_path: Path):
    path = make_project(tmp_path / "fresh", demo_frame().head(120))
    with pytest.raises(MmgbmError, match=r"no audit to review yet; run `mmgbm audit -t TARGET` first"):
        ReviewService(load_config(path))


@pytest.fixture
def own_copy(project, tmp_path: Path) -> Path:
    """A copy of the reviewed project for a test that retrains or re-audits it."""
    shutil.copytree(project[0].parent, tmp_path / "project")
    return tmp_path / "project" / project[0].name


def _model(path: Path):
    return load_artifact(model_dir(load_config(path), "articleType"), "articleType").model


def test_train_learns_the_decided_labels_and_audit_hides_them(own_copy: Path):
    path = own_copy
    clean = demo_frame().set_index("id")["articleType"]
    table = pd.read_csv(path.parent / "products.csv", dtype={"id": str}).set_index("id")["articleType"]
    train_ids = _model(path).train_ids_
    flipped = [pid for pid in train_ids if clean[pid] != table[pid]]
    for pid in flipped:  # a reviewer restores each flipped label
        append_decision(
            labels_path(load_config(path), "articleType"), Decision(pid, "articleType", table[pid], "", clean[pid])
        )
    trained = runner.invoke(app, ["train", "-c", str(path), "-t", "articleType"])
    assert trained.exit_code == 0, trained.output
    assert f"{len(flipped)} labels corrected by articleType.csv" in said(trained)
    counts = dict(zip(_model(path).classes_, _model(path).class_counts_))
    assert counts == clean[train_ids].value_counts().to_dict()  # it learnt from the true labels again
    audited = runner.invoke(app, ["audit", "-c", str(path), "-t", "articleType"])
    assert audited.exit_code == 0, audited.output
    assert f"{len(flipped)} decided by reviewers, left out" in said(audited)
    assert not set(audit_suspects(path)["id"]) & set(flipped)
    # Forced: the gate would keep the model of the corrected labels, which scores better (mmgbm.model_versions).
    off = runner.invoke(app, ["train", "-c", str(path), "-t", "articleType", "--force", "--data.corrections", "false"])
    assert off.exit_code == 0 and "corrected" not in said(off)
    assert dict(zip(_model(path).classes_, _model(path).class_counts_)) == table[train_ids].value_counts().to_dict()


def test_evaluate_scores_against_the_decided_labels_and_counts_them(own_copy: Path):
    path = own_copy
    cfg = load_config(path)
    predicted = predict(cfg, ["articleType"], "test")
    truth = load_split(cfg, "test")["articleType"].to_numpy()
    plain = runner.invoke(app, ["evaluate", "-c", str(path), "-t", "articleType"])
    assert plain.exit_code == 0, plain.output
    metrics = path.parent / "work" / "reports" / "articleType" / "metrics.json"
    before = json.loads(metrics.read_text())
    # A reviewer says three held-out products the model gets right are Watches: they now count as errors.
    right = predicted[(predicted["articleType"].to_numpy() == truth) & (truth != "Watches")].head(3)
    for pid, given in zip(right["id"], right["articleType"]):
        append_decision(labels_path(cfg, "articleType"), Decision(pid, "articleType", given, "", "Watches"))
    result = runner.invoke(app, ["evaluate", "-c", str(path), "-t", "articleType"])
    assert result.exit_code == 0, result.output
    assert "3 labels corrected by articleType.csv" in said(result)
    after = json.loads(metrics.read_text())
    assert after["corrections"]["corrected"] == 3 and before["corrections"] is None
    assert round((before["fused"]["accuracy"] - after["fused"]["accuracy"]) * after["fused"]["rows"]) == 3
