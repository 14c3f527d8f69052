"""The colour statistics of product photos, through their public interfaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mmgbm.colour import DIM, colour_statistics, colour_store, read_colour_features
from mmgbm.config import load_config
from tests.modelling_project import make_project


def test_colour_statistics_see_the_product_not_the_background(tmp_path: Path):
    red = np.full((80, 60, 3), 255, dtype=np.uint8)
    red[20:60, 15:45] = [200, 10, 10]
    Image.fromarray(red).save(tmp_path / "red.jpg")
    stats = colour_statistics(str(tmp_path / "red.jpg"))
    assert stats.shape == (DIM,)
    mean_rgb = stats[-7:-4]
    assert mean_rgb[0] > 0.6 and mean_rgb[1] < 0.2  # the red shirt, not the white studio
    assert np.isnan(colour_statistics(str(tmp_path / "missing.jpg"))).all()


def test_colour_features_are_stored_once_and_read_by_id(tmp_path: Path):
    cfg = load_config(make_project(tmp_path))
    frame = pd.read_csv(tmp_path / "products.csv", dtype={"id": str}).head(12)
    frame.loc[3, "image"] = "images/no-such-file.jpg"
    first = read_colour_features(cfg, frame)
    shards = colour_store(cfg).shards()
    again = read_colour_features(cfg, frame.iloc[::-1])
    assert colour_store(cfg).shards() == shards  # nothing recomputed
    np.testing.assert_array_equal(again[::-1], first)
    assert np.isnan(first[3]).all() and not np.isnan(first[0]).any()
