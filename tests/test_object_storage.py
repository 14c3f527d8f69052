"""The feature store on object storage: a local S3 server (moto) spoken to through s3fs, as a bucket on AWS would be.

The commands write and read every feature there (`store: s3://...`, `store_options.endpoint_url`), and train and
predict exactly what the same project predicts with its features in the workdir.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mmgbm.cli import app
from mmgbm.config import load_config
from mmgbm.errors import MmgbmError
from mmgbm.stores import colour_store, image_store
from tests.conftest import REPO
from tests.modelling_project import demo_frame, make_project

runner = CliRunner()
DEMO = REPO / "mmgbm" / "data" / "demo"


@pytest.fixture(scope="module")
def s3_server():
    """The endpoint of an S3 server on 127.0.0.1 with one bucket, for this module's tests."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:  # moto accepts any key; s3fs must find one
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            env.setenv(name, value)
        s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("catalogues")
        yield endpoint
    server.stop()


def mmgbm(*args: str) -> str:
    """The command's output, its lines joined (the console wraps long ones)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return " ".join(result.output.split())


@pytest.mark.slow  # the whole pipeline twice, once through a local S3 server
def test_extract_train_predict_with_the_store_in_an_s3_bucket_equal_a_local_run(s3_server: str, tmp_path: Path):
    import s3fs

    local = make_project(tmp_path / "local", demo_frame().head(200), n_folds=2, stack_folds=2)
    shutil.copytree(local.parent, tmp_path / "s3")
    remote = tmp_path / "s3" / local.name
    url = f"s3://catalogues/{uuid.uuid4().hex}/features"
    features = load_config(remote).workdir / "features"
    bucket = s3fs.S3FileSystem(endpoint_url=s3_server)
    bucket.put(str(features / "image"), f"{url}/image", recursive=True)  # the photos' features, as uploaded
    shutil.rmtree(features)
    remote.write_text(f"store: {url}\nstore_options: {{endpoint_url: '{s3_server}'}}\n{remote.read_text()}")

    assert f"text features in {url}/text" in mmgbm("extract-text", "-c", str(remote))
    assert "0 new products in 0 shard(s)" in mmgbm("extract-text", "-c", str(remote))  # read back from the bucket
    stored = {path.rsplit("/", 1)[1] for path in bucket.ls(f"{url}/text/text", detail=False)}
    assert "vectorizer.json" in stored and any(name.startswith("part-") for name in stored)
    uploaded = load_config(remote)
    assert image_store(uploaded).present_ids() == colour_store(uploaded).present_ids() != set()
    for config in (local, remote):
        mmgbm("train", "-c", str(config), "-t", "articleType")
        mmgbm(
            "predict",
            "-c",
            str(config),
            "-t",
            "articleType",
            "--probabilities",
            "--out",
            str(config.parent / "submission.csv"),
        )
    here, there = (pd.read_csv(path.parent / "submission.csv", dtype={"id": str}) for path in (local, remote))
    pd.testing.assert_frame_equal(there, here)
    assert not features.exists()  # the workdir holds the models; every feature is in the bucket


def test_a_bucket_that_does_not_exist_is_named_in_one_line(s3_server: str, tiny_config: Path):
    result = runner.invoke(
        app,
        [
            "extract-text",
            "-c",
            str(tiny_config),
            "--store",
            "s3://no-such-bucket/features",
            "--store_options",
            f"{{endpoint_url: '{s3_server}'}}",
        ],
    )
    assert isinstance(result.exception, MmgbmError), result.output
    message = str(result.exception)
    assert "\n" not in message and message.startswith(
        "s3://no-such-bucket/features/text/text/vectorizer.json: "
        "cannot be written (The specified bucket does not exist); "
        "create the bucket"
    ), message


def test_photos_and_features_in_a_bucket_need_no_file_system(s3_server: str, tmp_path: Path, write_config, monkeypatch):
    """A catalogue whose photos are objects (`data.images_root: s3://...`) and whose store is in the same bucket:
    what a cluster without a shared file system runs. The S3 endpoint comes from fsspec's own configuration, as
    `FSSPEC_S3_ENDPOINT_URL` or ~/.config/fsspec/s3.json give it."""
    import fsspec
    import s3fs

    from tests.test_images import FakeEncoder

    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_server})
    monkeypatch.setattr(FakeEncoder, "log", {"fits": 0, "embedded": 0}, raising=False)
    monkeypatch.setattr("mmgbm.features.images.ImageEncoder", FakeEncoder)
    bucket, root = s3fs.S3FileSystem(endpoint_url=s3_server), f"s3://catalogues/{uuid.uuid4().hex}"
    frame = pd.read_csv(DEMO / "products.csv", dtype={"id": str})[["id", "image"]].head(5)
    for name in frame["image"]:
        bucket.put_file(str(DEMO / name), f"{root}/photos/{name}")
    pd.concat([frame, pd.DataFrame({"id": ["lost"], "image": ["images/lost.jpg"]})]).to_csv(
        tmp_path / "products.csv", index=False
    )
    config = write_config(
        {
            "workdir": "work",
            "store": f"{root}/features",
            "data": {"splits": {"train": "products.csv"}, "image_column": "image", "images_root": f"{root}/photos"},
            "features": {"image": {"weights": "none", "image_size": 32, "shard_size": 2}, "text": {"enabled": False}},
        }
    )
    assert "5 embedded" in mmgbm("extract-images", "-c", str(config))
    assert "0 embedded, 5 already stored" in mmgbm("extract-images", "-c", str(config))
    failures = pd.read_csv(bucket.open(f"{root}/features/image/b0/failures.csv"), keep_default_na=False)
    assert dict(zip(failures["id"], failures["reason"])) == {"lost": "file not found"}
    assert len(image_store(load_config(config)).shards()) == 3 and not (tmp_path / "work").exists()
