"""The per-modality heads and the colour statistics, through their public interfaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mmgbm.colour import DIM, colour_statistics, colour_store, read_colour_features
from mmgbm.config import load_config
from mmgbm.heads import KnnHead, MentionHead, out_of_fold
from tests.modelling_project import make_project


def test_mention_head_scores_named_classes_longest_and_earliest_first():
    names = ["Levi's", "United Colors of Benetton", "Colors", "Necklaces"]
    head = MentionHead(names).fit(np.array(["", "", "", ""], dtype=object), np.array([0, 1, 2, 3]))
    out = head.transform(np.array([
        "United Colors of Benetton Men Shirt",  # the four-word brand beats the one-word class inside it
        "levi's slim jeans",                    # case and punctuation do not matter
        "Gold Plated Necklace",                 # singular in the title, plural in the class name
        "plain socks",                          # nothing named: every class unscored
    ], dtype=object))
    assert np.nanargmax(out[0]) == 1 and out[0, 1] > out[0, 2]
    assert np.nanargmax(out[1]) == 0
    assert np.nanargmax(out[2]) == 3
    assert np.isnan(out[3]).all()


def test_mention_head_out_of_fold_never_knows_a_class_only_its_own_fold_has():
    names = ["Alpha", "Beta"]
    texts = np.array(["alpha one", "alpha two", "beta three", "alpha four"], dtype=object)
    y = np.array([0, 0, 1, 0])
    folds = np.array([0, 1, 0, 1])
    oof = out_of_fold(MentionHead(names), texts, y, folds, np.ones(4, dtype=bool))
    # Only row 2 is labelled 'Beta', so the copy scoring it (fitted on the other fold) cannot know that name.
    assert np.isnan(oof[2, 1])
    assert oof[0, 0] > 0


def test_knn_head_regression_and_unscored_classes():
    X = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    cls = KnnHead("multiclass", n_classes=3, n_neighbors=1).fit(X, np.array([0, 0, 1]))
    scores = cls.transform(np.array([[1, 0.05]], dtype=np.float32))
    assert scores[0, 0] > 0.9 and np.isnan(scores[0, 1:]).all()
    reg = KnnHead("regression", n_neighbors=2).fit(X, np.array([10.0, 20.0, 100.0]))
    mean, nearest, similarity = reg.transform(np.array([[1, 0]], dtype=np.float32))[0]
    assert 10 < mean < 20 and nearest == 10.0 and similarity > 0.99


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
