"""audit: on the demo sample with injected label flips, the flipped products rank first; the CSV and the
self-contained HTML report are written; a model without stored out-of-fold probabilities is cross-validated."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmgbm.catalogue import load_split
from mmgbm.cli import app
from mmgbm.commands.artifact import load_artifact
from mmgbm.commands.audit import COLUMNS, audit, out_of_fold
from mmgbm.commands.train import train
from mmgbm.config import load_config
from mmgbm.errors import MmgbmError
from mmgbm.stores import load_products
from mmgbm.workdir import model_dir
from tests.modelling_project import DEMO_TABLE, demo_frame, make_project

runner = CliRunner()


def flip_labels(frame: pd.DataFrame, column: str, fraction: float, seed: int) -> tuple[pd.DataFrame, set[str]]:
    """A copy with `fraction` of the labels moved to another class seen in the table, and the flipped ids."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(frame), int(fraction * len(frame)), replace=False)
    classes = frame[column].unique()
    flipped = frame.copy()
    for row in rows:
        flipped.loc[row, column] = rng.choice([c for c in classes if c != frame.loc[row, column]])
    return flipped, set(frame["id"].iloc[rows])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, set[str]]:
    frame, flipped = flip_labels(demo_frame(), "articleType", 0.05, seed=0)
    path = make_project(tmp_path_factory.mktemp("audit"), frame)
    train(load_config(path), ["articleType", "price"])
    train_ids = set(load_split(load_config(path), "train")["id"])
    return path, flipped & train_ids


def test_flipped_labels_rank_first_and_reports_are_written(project):
    path, flipped = project
    result = runner.invoke(app, ["audit", "-c", str(path), "-t", "articleType"])
    assert result.exit_code == 0, result.output
    folder = path.parent / "work" / "reports" / "articleType"
    suspects = pd.read_csv(folder / "audit.csv", dtype={"id": str})
    assert list(suspects.columns) == COLUMNS
    assert (suspects["given_label"] != suspects["suggested_label"]).all()
    assert suspects["confidence_wrong"].is_monotonic_decreasing
    assert suspects["modality"].str.len().gt(0).all()
    top = suspects.head(len(flipped))
    assert top["id"].isin(flipped).mean() >= 0.6
    page = (folder / "audit.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 20  # thumbnails are inside the page: it opens offline
    assert page.index(top["id"].iloc[0]) < page.index(top["id"].iloc[5])


def test_without_stored_out_of_fold_probabilities_the_model_is_cross_validated(project):
    path, _ = project
    cfg = load_config(path)
    model = load_artifact(model_dir(cfg, "articleType"), "articleType").model
    frame = load_split(cfg, "train")
    X, y = load_products(cfg, frame)[0], frame["articleType"].to_numpy()
    stored, stored_by_modality, _ = out_of_fold(model, X, y)
    bare = copy.copy(model)
    del bare.oof_candidates_, bare.oof_probabilities_, bare.oof_by_modality_  # as a model fitted before they were
    bare.set_params(n_folds=2)  # two refits of two folds each: the same path in half the time
    probs, by_modality, source = out_of_fold(bare, X, y)
    assert "cross-validated" in source and probs.shape == stored.shape
    assert set(by_modality) == set(stored_by_modality)
    # Other folds, same kind of judgement: the two mostly agree on the best label.
    assert (probs.argmax(axis=1) == stored.argmax(axis=1)).mean() > 0.8


def test_regression_targets_are_refused(project):
    path, _ = project
    with pytest.raises(MmgbmError, match="regression"):
        audit(load_config(path), "price")


def test_the_report_never_opens_special_files_or_photos_outside_the_images_folder(project, tmp_path, monkeypatch):
    """The thumbnails pass the extractor's checks: a FIFO (which would block for ever) and a link out of
    `images_root` are shown as "no photo", never opened; a plain photo inside it is embedded."""
    path, _ = project
    cfg = load_config(path)
    suspects = audit(cfg, "articleType").suspects
    photos = load_split(cfg, "train").set_index("id").loc[suspects["id"].head(3), "image"].tolist()
    fifo, link, plain = (tmp_path / p for p in photos)
    for p in (fifo, link, plain):
        p.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    link.symlink_to(DEMO_TABLE.parent / photos[1])
    shutil.copy(DEMO_TABLE.parent / photos[2], plain)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    result = audit(load_config(path, {"data.images_root": str(tmp_path)}), "articleType", 3)
    assert opened == [str(plain)]
    assert result.html_path.read_text().count("data:image/jpeg;base64,") == 1


def test_thumbnails_decode_as_extraction_does(tmp_path: Path):
    """A 16-bit scan and a transparent PNG: the thumbnail shows what the model saw (grey scaled down, transparency
    on white), not what a plain RGB conversion gives (16-bit clipped to white, transparency to black)."""
    import io

    from PIL import Image

    from mmgbm.features.image_decoding import thumbnail_jpeg

    Image.fromarray(np.full((40, 40), 128 * 257, np.uint16)).save(tmp_path / "scan.png")
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    grey = np.asarray(Image.open(io.BytesIO(thumbnail_jpeg(tmp_path / "scan.png", (16, 16)))).convert("L"))
    white = np.asarray(Image.open(io.BytesIO(thumbnail_jpeg(tmp_path / "clear.png", (16, 16)))).convert("L"))
    assert grey.shape == (16, 16) and abs(float(grey.mean()) - 128) < 3
    assert white.min() > 250
