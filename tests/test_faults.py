"""Faults a realistic user meets: damaged or foreign files, a full disk, an unwritable or odd workdir, concurrent
runs, stale features. Each ends in one line naming the file or setting and what to do (exit 1), or in the right
answer; work finished before a fault is kept.

Commands run in-process through `mmgbm.cli.main` (what the `mmgbm` script runs), so a case costs no interpreter
start; the tests that need two real processes start them.
"""

from __future__ import annotations

import errno
import fractions
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import skops.io as sio
import yaml

from mmgbm.cli import main
from mmgbm.commands.artifact import load_artifact
from mmgbm.config import load_config
from mmgbm.errors import MmgbmError
from mmgbm.features.store import FeatureStore
from mmgbm.stores import extract_text, load_products, text_field
from mmgbm.workdir import model_dir
from tests.modelling_project import make_project

TARGET = "is_men"


def run(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """`mmgbm ARGS` in this process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["mmgbm", *args])
    with pytest.raises(SystemExit) as done:
        main()
    return done.value.code or 0, capsys.readouterr().err


def fails_in_one_line(capsys, monkeypatch, *args: str, expected: str) -> str:
    code, err = run(capsys, monkeypatch, *args)
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    return err


def text_store_of(config: Path) -> FeatureStore:
    cfg = load_config(config)
    return text_field(cfg, "text").fitted().store


@pytest.fixture
def text_project(tiny_config: Path) -> Path:
    """The tiny text-only catalogue, extracted in shards of one product."""
    raw = yaml.safe_load(tiny_config.read_text())
    raw["features"]["text"] = {"shard_size": 1, "min_df": 1}
    tiny_config.write_text(yaml.safe_dump(raw))
    extract_text(load_config(tiny_config))
    return tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A demo project with one trained target (the binary one: the quickest to train)."""
    config = make_project(tmp_path_factory.mktemp("faults"))
    from mmgbm.commands.train import train

    train(load_config(config), [TARGET])
    return config


# ---- damaged feature shards --------------------------------------------------------------------------------------


def damage_data_page(shard: Path) -> None:
    """Overwrite bytes just after the leading magic: the data pages break, the footer stays intact."""
    data = bytearray(shard.read_bytes())
    data[4:40] = b"\xff" * 36
    shard.write_bytes(bytes(data))


def test_a_damaged_shard_is_named_when_read_and_set_aside_by_the_next_extraction(text_project, capsys, monkeypatch):
    store = text_store_of(text_project)
    damaged = store.shards()[1]
    damage_data_page(damaged)
    err = fails_in_one_line(
        capsys, monkeypatch, "train", "--config", str(text_project), expected=f"{damaged}: unreadable feature shard"
    )
    assert "delete it and re-run the extract command" in err

    summary = extract_text(load_config(text_project))
    assert summary.fields[0].new == 1 and summary.fields[0].set_aside == 1
    assert damaged.with_name(damaged.name + ".damaged").exists() and damaged not in store.shards()
    assert store.present_ids() == {"a1", "a2", "a3", "a4"}


# ---- model folders -----------------------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@contextmanager
def restored_afterwards(folder: Path, scratch: Path):
    """The module's trained model folder, to damage in one test and have back whole for the next."""
    shutil.copytree(folder, scratch / "backup")
    try:
        yield folder
    finally:
        shutil.rmtree(folder)
        shutil.copytree(scratch / "backup", folder)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f: truncate(f / "lightgbm.txt"), "lightgbm.txt: missing or changed since training"),
        (lambda f: (f / "config.json").write_text("{}"), "config.json: missing or changed since training"),
        (lambda f: (f / "fingerprints.json").write_text("{}"), "fingerprints.json: missing or changed since training"),
        (lambda f: truncate(f / "estimator.skops"), "estimator.skops: missing or changed since training"),
    ],
)
def test_damaged_model_files_are_refused_before_loading(trained, tmp_path, capsys, monkeypatch, damage, expected):
    with restored_afterwards(model_dir(load_config(trained), TARGET), tmp_path) as folder:
        damage(folder)
        fails_in_one_line(
            capsys,
            monkeypatch,
            "predict",
            "--config",
            str(trained),
            "--target",
            TARGET,
            "--out",
            str(tmp_path / "out.csv"),
            expected=expected,
        )


def test_a_model_folder_copied_under_another_target_is_refused(trained, tmp_path, capsys, monkeypatch):
    cfg = load_config(trained)
    shutil.copytree(model_dir(cfg, TARGET), model_dir(cfg, "price"))
    try:
        fails_in_one_line(
            capsys,
            monkeypatch,
            "predict",
            "--config",
            str(trained),
            "--target",
            "price",
            "--out",
            str(tmp_path / "out.csv"),
            expected="holds a model of target 'is_men', not 'price'",
        )
    finally:
        shutil.rmtree(model_dir(cfg, "price"))


def forge(folder: Path, name: str, write) -> None:
    """Rewrite a model file and its checksum in the manifest, as someone meaning harm would."""
    from mmgbm.commands.artifact import _sha256

    write(folder / name)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = _sha256(folder / name)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "name, write, expected",
    [
        (
            "estimator.skops",
            lambda p: sio.dump({"payload": fractions.Fraction(1, 3)}, p),
            r"names types mmgbm does not load \(fractions.Fraction\)",
        ),
        # A function inside a trusted library that runs the code it is given: a name, not a module, is trusted.
        (
            "estimator.skops",
            lambda p: sio.dump({"payload": np.testing._private.utils.runstring}, p),
            r"names types mmgbm does not load \(numpy.testing._private.utils.runstring\)",
        ),
        ("estimator.skops", lambda p: p.write_bytes(pickle.dumps({"a": 1})), "unreadable model"),
        (
            "labels.json",
            lambda p: p.write_text('{"classes": ["no", "maybe"]}'),
            "does not match its manifest and labels",
        ),
        # Half a LightGBM model: LightGBM itself would abort the process on some of these.
        ("lightgbm.txt", lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]), "truncated model"),
    ],
)
def test_forged_model_files_are_never_loaded(trained, tmp_path, name, write, expected):
    folder = tmp_path / TARGET
    shutil.copytree(model_dir(load_config(trained), TARGET), folder)
    forge(folder, name, write)
    with pytest.raises(MmgbmError, match=expected):
        load_artifact(folder, TARGET)


def test_a_forged_empty_fingerprint_record_does_not_switch_the_check_off(trained, tmp_path, capsys, monkeypatch):
    with restored_afterwards(model_dir(load_config(trained), TARGET), tmp_path) as folder:
        forge(folder, "fingerprints.json", lambda p: p.write_text("{}"))
        fails_in_one_line(
            capsys,
            monkeypatch,
            "predict",
            "--config",
            str(trained),
            "--target",
            TARGET,
            "--out",
            str(tmp_path / "out.csv"),
            expected="records no image or text features although the model reads them",
        )


def test_killed_trainings_leave_nothing_for_long_and_never_lose_the_only_model(trained, tmp_path, capsys, monkeypatch):
    folder = model_dir(load_config(trained), TARGET)
    old, young = time.time() - 7200, [folder.parent / f".{folder.name}.young.tmp"]
    leftovers = [folder.parent / f".{folder.name}.{kind}" for kind in ("half.tmp", "aside.old")]
    for path in leftovers + young:
        path.mkdir()
    for path in leftovers:
        os.utime(path, (old, old))
    code, err = run(capsys, monkeypatch, "train", "--config", str(trained), "--target", TARGET)
    assert code == 0, err
    assert [p.exists() for p in leftovers + young] == [False, False, True]  # a young one may be a live trainer's
    folder = model_dir(load_config(trained), TARGET)  # the version that train made current
    with restored_afterwards(folder, tmp_path):
        os.replace(folder, folder.parent / f".{folder.name}.killed.old")  # killed between its two renames
        err = fails_in_one_line(
            capsys,
            monkeypatch,
            "predict",
            "--config",
            str(trained),
            "--target",
            TARGET,
            "--out",
            str(tmp_path / "out.csv"),
            expected="training was interrupted",
        )
        assert f".{folder.name}.killed.old" in err
        folder.mkdir()
    shutil.rmtree(folder.parent / f".{folder.name}.killed.old")


def test_artifacts_hold_no_pickle(trained):
    folder = model_dir(load_config(trained), TARGET)
    assert not list(folder.glob("*.joblib")) and not list(folder.glob("*.pkl"))
    assert load_artifact(folder, TARGET).model.stacker_.booster_ is not None


# ---- the workdir and the output ----------------------------------------------------------------------------------


def test_predict_writes_nothing_to_the_workdir_but_its_answers_counts(trained, tmp_path, capsys, monkeypatch):
    cfg = load_config(trained)
    counts = cfg.workdir / "reports" / TARGET / "drift"

    def files() -> list:  # the files, and when each was written (the folders above the counts gain an entry)
        return sorted(
            (p, p.stat().st_mtime_ns) for p in cfg.workdir.rglob("*") if p.is_file() and counts not in p.parents
        )

    before = files()
    code, err = run(
        capsys, monkeypatch, "predict", "--config", str(trained), "--target", TARGET, "--out", str(tmp_path / "out.csv")
    )
    assert code == 0, err
    assert files() == before and (counts / "predict.json").is_file()  # what `mmgbm drift` compares
    assert len(pd.read_csv(tmp_path / "out.csv")) > 0


def test_predict_from_a_workdir_it_cannot_write_to_still_predicts(trained, tmp_path, capsys, monkeypatch):
    """A shared model store predict may only read: the answers' counts are not recorded, with a note."""
    shutil.copytree(trained.parent, tmp_path / "project")
    config = tmp_path / "project" / trained.name
    reports = load_config(config).workdir / "reports"
    shutil.rmtree(reports, ignore_errors=True)
    reports.write_text("a file where the reports folder goes: nothing can be written under it")
    code, err = run(
        capsys, monkeypatch, "predict", "--config", str(config), "--target", TARGET, "--out", str(tmp_path / "out.csv")
    )
    assert code == 0, err
    assert f"{TARGET}: answers not recorded for `mmgbm drift`" in " ".join(err.split())
    assert len(pd.read_csv(tmp_path / "out.csv")) > 0


def test_predict_out_pointing_at_a_folder(trained, tmp_path, capsys, monkeypatch):
    fails_in_one_line(
        capsys,
        monkeypatch,
        "predict",
        "--config",
        str(trained),
        "--target",
        TARGET,
        "--out",
        str(tmp_path),
        expected=f"--out {tmp_path} is a folder",
    )


def test_workdir_pointing_at_a_file(tiny_config: Path, capsys, monkeypatch):
    (tiny_config.parent / "work").write_text("not a folder")
    fails_in_one_line(
        capsys,
        monkeypatch,
        "extract-text",
        "--config",
        str(tiny_config),
        expected="is a file, not a folder; point `workdir` at a folder",
    )


@pytest.mark.parametrize(
    "error, expected",
    [
        (errno.EROFS, "not writable (Read-only file system); make the workdir writable"),
        (errno.EACCES, "not writable (Permission denied)"),
        (errno.ENOSPC, "no space left on the device; free some space and re-run"),
    ],
)
def test_write_failures_keep_finished_shards_and_are_one_line(tiny_config, capsys, monkeypatch, error, expected):
    written = []
    real_write = pq.write_table

    def write_then_fail(table, where, **kwargs):
        if written:  # the second shard meets the fault
            raise OSError(error, os.strerror(error), str(where))
        written.append(where)
        real_write(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_then_fail)
    fails_in_one_line(
        capsys,
        monkeypatch,
        "extract-text",
        "--config",
        str(tiny_config),
        "--features.text.shard_size",
        "2",
        expected=expected,
    )
    monkeypatch.undo()
    store = text_store_of(tiny_config)
    assert len(store.shards()) == 1 and len(store.present_ids()) == 2  # the finished shard is kept
    assert not [p for p in store.root.iterdir() if p.name.endswith(".tmp")]
    assert extract_text(load_config(tiny_config)).fields[0].new == 2  # a re-run does only the rest


def test_errors_the_library_does_not_expect_are_still_one_line(tiny_config, capsys, monkeypatch):
    def unwritable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/models")

    monkeypatch.setattr("mmgbm.stores.extract_text", unwritable)
    fails_in_one_line(
        capsys,
        monkeypatch,
        "extract-text",
        "--config",
        str(tiny_config),
        expected="/somewhere/models: not writable (Permission denied)",
    )


def test_an_unexpected_error_is_one_line_unless_debugging(tiny_config, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody anticipated")

    monkeypatch.setattr("mmgbm.stores.extract_text", broken)
    fails_in_one_line(
        capsys,
        monkeypatch,
        "extract-text",
        "--config",
        str(tiny_config),
        expected="unexpected RuntimeError: something nobody anticipated (set MMGBM_DEBUG=1",
    )
    monkeypatch.setenv("MMGBM_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["mmgbm", "extract-text", "--config", str(tiny_config)])
    with pytest.raises(RuntimeError, match="nobody anticipated"):
        main()


# ---- concurrent writers and what killed ones leave -------------------------------------------------------------


WRITER = """
import sys
import numpy as np
from pathlib import Path
from mmgbm.features.store import FeatureStore, dense_table
store, writer = FeatureStore(Path(sys.argv[1]), {"kind": "test"}), int(sys.argv[2])
for i in range(15):
    store.write_shard(dense_table([f"w{writer}-{i}", "shared"], np.full((2, 2), writer, np.float32)))
"""


def test_two_processes_writing_one_store_lose_nothing_and_store_each_id_once(tmp_path: Path):
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w)]) for w in (1, 2)]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    store = FeatureStore(tmp_path, {"kind": "test"})
    assert len(store.shards()) == 30
    ids = [f"w{w}-{i}" for w in (1, 2) for i in range(15)] + ["shared"]
    matrix, present = store.read_dense(ids)
    assert present.all() and store.present_ids() == set(ids)
    newest = pq.read_table(store.shards()[-1]).column("embedding").to_pylist()[1][0]
    assert matrix[-1, 0] == newest  # an id stored twice is read once, from the newest shard


@pytest.mark.slow  # two processes racing: the slow lane keeps the fast suite under a minute
def test_two_extract_text_runs_on_a_fresh_workdir_both_succeed(tiny_config: Path):
    command = [sys.executable, "-m", "mmgbm", "extract-text", "--config", str(tiny_config)]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in runs:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    store = text_store_of(tiny_config)
    assert store.present_ids() == {"a1", "a2", "a3", "a4"}
    _, present = store.read_sparse(["a1", "a2", "a3", "a4"], 1)
    assert present.all()


def test_only_old_orphan_temporary_files_are_removed(text_project: Path):
    store = text_store_of(text_project)
    old, fresh = store.root / ".part-1-aa.parquet.99-aa.tmp", store.root / ".part-2-bb.parquet.98-bb.tmp"
    for tmp in (old, fresh):
        tmp.write_bytes(b"half a shard")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    extract_text(load_config(text_project))
    assert not old.exists() and fresh.exists()  # a fresh one may belong to a writer still running


# ---- stale features ----------------------------------------------------------------------------------------------


def test_changed_text_is_revectorised_at_predict_time_and_re_extracted(text_project: Path):
    cfg = load_config(text_project)
    frame = pd.read_csv(cfg.data.splits["train"], dtype=str)
    frame.loc[0, "title"] = "green jeans"
    expected = text_field(cfg, "text").load_vectorizer().transform(["green jeans"]).toarray()
    products, _ = load_products(cfg, frame)
    np.testing.assert_allclose(products.text["text"][0].toarray(), expected)

    frame.to_csv(cfg.data.splits["train"], index=False)
    assert extract_text(cfg).fields[0].new == 1  # only the changed product
    stored, present = text_store_of(text_project).read_sparse(["a1"], expected.shape[1])
    assert present.all()
    np.testing.assert_allclose(stored.toarray(), expected)


# ---- validate ----------------------------------------------------------------------------------------------------


def test_validate_names_every_problem_a_table_has(write_config, tmp_path: Path, capsys, monkeypatch):
    pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(12)],
            "kind": ["shoe"] * 12,
            "price": [None] * 10 + [3.0, 4.0],
            "season": [None] * 12,
            "title": ["a shoe"] * 12,
        }
    ).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(columns=["id", "title", "season"]).to_csv(tmp_path / "empty.csv", index=False)
    data = {"splits": {"train": "train.csv"}, "text_columns": ["title"], "categorical_columns": ["season"]}
    targets = {"kind": {"column": "kind"}, "price": {"column": "price", "task": "regression"}}
    config = write_config({"workdir": "work", "data": data, "targets": targets})
    code, err = run(capsys, monkeypatch, "validate", "--config", str(config))
    assert code == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    assert "target 'kind' has a single class ('shoe')" in lines[0]
    assert "target 'price' has only 2 usable rows in 'price'" in lines[1] and "at least 10" in lines[1]
    assert "column 'season' has no values at all" in lines[2]
    assert "3 problem(s) above" in lines[3]

    header_only = write_config({"workdir": "work", "data": {**data, "splits": {"train": "empty.csv"}}})
    fails_in_one_line(
        capsys,
        monkeypatch,
        "validate",
        "--config",
        str(header_only),
        expected="empty.csv: no products (the table has no rows)",
    )
