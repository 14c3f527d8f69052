"""Dask as the engine (mmgbm.cluster): the commands on a real LocalCluster on 127.0.0.1 store and predict what a
run without one does, and bad cluster settings stop with one line.

Predictions must be equal: the same ids and labels (a second label may name another class of equal probability)
and probabilities within 1e-4. The workers train and score on copies and parts of the rows, and float32 products
over other memory layouts and row counts can differ in the last bits. The heads' scores are settled on a grid
before they are stacked, but a score within a bit of a grid point can still land on the other side: with 1-3 float32
steps of noise on every out-of-fold score of this project, probabilities moved by at most 3.3e-5 over ten draws and
no label moved (before the grid, noise of 1e-12 flipped the stack-or-head choice and 61% of the second labels).
Stored TF-IDF rows must be identical; TensorFlow embeddings made in the workers' processes within 1e-5.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mmgbm import cluster as cluster_module
from mmgbm.catalogue import load_split
from mmgbm.cli import app
from mmgbm.config import load_config
from mmgbm.errors import MmgbmError
from mmgbm.features.image_encoder import BUNDLED_B0_WEIGHTS
from mmgbm.stores import colour_store, extract_images, image_store, load_products, text_field
from tests.conftest import REPO
from tests.modelling_project import demo_frame, make_project

runner = CliRunner()
DEMO = REPO / "mmgbm" / "data" / "demo"
TOLERANCE = 1e-4  # see the module docstring


def start_cluster(processes: bool):
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=processes,
        host="127.0.0.1",
        protocol="tcp://",
        dashboard_address="127.0.0.1:0",
    )


@pytest.fixture(scope="module")
def cluster():
    """Two workers as threads of this process, which start in a second and need no imports of their own; talking
    TCP, everything sent to them is pickled as it is to other machines."""
    with start_cluster(processes=False) as running:
        yield running


def text_store_of(cfg):
    return text_field(cfg, "text").fitted().store


def ran_there(running, task: str) -> bool:
    """Whether the cluster ran tasks of this function (its prefix, the name without leading underscores)."""
    return task in running.scheduler.task_prefixes


def mmgbm(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


@pytest.mark.slow  # a Dask cluster in this process and a whole train / evaluate / predict on it
def test_text_train_evaluate_predict_on_the_cluster_equal_a_local_run(cluster, tmp_path: Path, object_store: str):
    """The cluster's project keeps its feature store on object storage, as a cluster without a shared file system
    would: its workers write the text shards there, train and predict read them from there."""
    # Half the demo products and two folds: seconds, not ten.
    local = make_project(tmp_path / "local", demo_frame().head(270), n_folds=2, stack_folds=2)
    shutil.copytree(local.parent, tmp_path / "cluster")
    remote = tmp_path / "cluster" / local.name
    features = load_config(remote).workdir / "features"
    fs, prefix = fsspec.core.url_to_fs(object_store)
    fs.put(str(features / "image"), f"{prefix}/image", recursive=True)
    shutil.rmtree(features)  # text: extracted again, on the cluster
    remote.write_text(f"store: {object_store}\n{remote.read_text()}")
    uploaded = load_config(remote)
    assert image_store(uploaded).present_ids() == colour_store(uploaded).present_ids() != set()
    on_cluster = ("--cluster", cluster.scheduler_address)

    mmgbm("extract-text", "-c", str(remote), *on_cluster)
    assert ran_there(cluster, "store_vectors") and text_store_of(load_config(remote)).shards()
    frame = pd.read_csv(local.parent / "products.csv", dtype={"id": str})
    stored = [load_products(load_config(path), frame)[0].text["text"] for path in (local, remote)]
    assert (stored[0] != stored[1]).nnz == 0

    for config, where in ((local, ()), (remote, on_cluster)):
        mmgbm("train", "-c", str(config), "-t", "articleType", *where)
        mmgbm(
            "predict",
            "-c",
            str(config),
            "-t",
            "articleType",
            "--top-k",
            "2",
            "--probabilities",
            "--out",
            str(config.parent / "submission.csv"),
            *where,
        )
    mmgbm("evaluate", "-c", str(remote), "-t", "articleType", *on_cluster)
    assert ran_there(cluster, "target_columns") and ran_there(cluster, "predictions")
    assert any(task.startswith("batch_of_") for task in cluster.scheduler.task_prefixes)  # joblib's: the folds

    here, there = (pd.read_csv(path.parent / "submission.csv", dtype={"id": str}) for path in (local, remote))
    assert there["id"].tolist() == here["id"].tolist()
    labels = ["articleType", "articleType_top1"]
    pd.testing.assert_frame_equal(there[labels], here[labels])
    # A second label may differ only between classes the local run found equally probable (within the rounding).
    second = [here.at[i, f"articleType_p_{label}"] for i, label in enumerate(there["articleType_top2"])]
    np.testing.assert_allclose(second, here["articleType_p2"], rtol=0, atol=TOLERANCE)
    numbers = [c for c in here.columns if c not in labels + ["id", "articleType_top2"]]  # top-k, every class's p
    assert len(numbers) > 10
    np.testing.assert_allclose(there[numbers].to_numpy(), here[numbers].to_numpy(), rtol=0, atol=TOLERANCE)
    report = json.loads((load_config(remote).workdir / "reports" / "articleType" / "metrics.json").read_text())
    truth = load_split(load_config(local), "test").set_index("id").loc[here["id"], "articleType"].to_numpy()
    assert report["fused"]["accuracy"] == pytest.approx((here["articleType"].to_numpy() == truth).mean())
    assert not features.exists()  # the cluster's workdir holds models and reports, no features


def image_catalogue(folder: Path, write_config) -> Path:
    """Eight demo products with their photos, one whose photo is missing and one without a path."""
    frame = pd.read_csv(DEMO / "products.csv", dtype={"id": str})[["id", "image"]].head(8)
    extra = pd.DataFrame({"id": ["lost", "blank"], "image": ["images/lost.jpg", ""]})
    pd.concat([frame, extra]).to_csv(folder / "products.csv", index=False)
    return write_config(
        {
            "workdir": "work",
            "data": {"splits": {"train": "products.csv"}, "image_column": "image", "images_root": str(DEMO)},
            # Real weights: random ones would differ between the workers' processes and this one.
            "features": {
                "image": {"weights": str(BUNDLED_B0_WEIGHTS), "image_size": 48, "batch_size": 2, "shard_size": 3},
                "text": {"enabled": False},
            },
        }
    )


@pytest.mark.slow  # TensorFlow in each worker process
def test_extract_images_on_worker_processes_equals_a_local_run(tmp_path: Path, write_config):
    """The workers store the embeddings and colour statistics of a local run, each building its encoder once; one
    failures.csv lists every failure, and a re-run has nothing left to do."""
    from distributed import Client

    config = image_catalogue(tmp_path, write_config)
    with start_cluster(processes=True) as processes, Client(processes) as client:
        address = processes.scheduler_address
        assert "8 embedded" in mmgbm("extract-images", "-c", str(config), "--cluster", address)
        # Three parts of three products hold photos: fewer builds than parts means the workers reused theirs.
        built = client.run(lambda dask_worker: len(getattr(dask_worker, "mmgbm_image_encoders", {})))
        assert max(built.values()) == 1 and sum(built.values()) <= 2
        assert "0 embedded, 8 already stored" in mmgbm("extract-images", "-c", str(config), "--cluster", address)
    cfg, here = load_config(config), load_config(config, {"workdir": str(tmp_path / "local")})
    extract_images(here)
    ids = pd.read_csv(tmp_path / "products.csv", dtype={"id": str})
    there_blocks, here_blocks = (load_products(c, ids)[0].dense for c in (cfg, here))
    for block in ("image", "image.colour"):
        np.testing.assert_allclose(there_blocks[block], here_blocks[block], rtol=1e-5, atol=1e-5)
    failures = pd.read_csv(cfg.workdir / "features" / "image" / "b0" / "failures.csv", keep_default_na=False)
    assert dict(zip(failures["id"], failures["reason"])) == {"lost": "file not found", "blank": "no image path"}


@pytest.mark.slow  # starts two worker processes of its own
def test_local_starts_a_cluster_for_the_command_and_stops_it(tiny_config: Path):
    from distributed import default_client

    assert "1 shard(s)" in mmgbm("extract-text", "-c", str(tiny_config), "--cluster", "local")
    with pytest.raises(ValueError, match="No clients found"):
        default_client()


def test_bad_cluster_settings_are_one_line_errors(tiny_config: Path, monkeypatch):
    from distributed import LocalCluster

    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT_S", 0.5)
    idle = LocalCluster(
        n_workers=0, processes=False, host="127.0.0.1", protocol="tcp://", dashboard_address="127.0.0.1:0"
    )
    cases = [
        ("8786", "setting 'cluster'.*tcp://10.0.0.5:8786"),
        ("tcp://127.0.0.1:9", "cannot reach the Dask scheduler at tcp://127.0.0.1:9 .*dask scheduler"),
        (idle.scheduler_address, "has no workers; start some with `dask worker tcp://127.0.0.1:"),
    ]
    with idle:
        for address, expected in cases:
            result = runner.invoke(app, ["train", "-c", str(tiny_config), "--cluster", address])
            assert isinstance(result.exception, MmgbmError), result.output
            message = str(result.exception)
            assert "\n" not in message and re.search(expected, message), message
