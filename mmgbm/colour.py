"""Colour statistics of each product photo: an HSV histogram of the non-background pixels plus mean and spread
of RGB, 199 numbers per image, kept in their own feature store beside the embeddings.

ImageNet embeddings are trained to ignore colour (colour jitter is part of their augmentation), so they name a
product's colour poorly: on the fashion catalogue with colour words removed from the names, a linear model on
EfficientNet-B0 embeddings reaches 57% on baseColour, these statistics alone 57%, and both together 64%.
They cost a few milliseconds per image, so they are computed on first use for products missing from the store.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from mmgbm.config import Config
from mmgbm.features.images import image_paths, images_root
from mmgbm.features.store import FeatureStore, dense_table

SIZE = (30, 40)  # catalogue photos are 60x80; colour needs no detail
HSV_BINS = (12, 4, 4)
BACKGROUND = 0.92  # pixels with every channel above this are the white studio background
FINGERPRINT = {"kind": "colour", "size": list(SIZE), "hsv_bins": list(HSV_BINS), "background": BACKGROUND,
               "version": 1}
DIM = int(np.prod(HSV_BINS)) + 7


def colour_statistics(path: str) -> np.ndarray:
    """DIM floats for one image file; NaN when it is missing or unreadable (a missing modality, not a crash)."""
    try:
        with Image.open(path) as image:
            rgb_image = image.convert("RGB").resize(SIZE)
    except (OSError, ValueError):
        return np.full(DIM, np.nan, dtype=np.float32)
    rgb = np.asarray(rgb_image, dtype=np.float32) / 255
    hsv = np.asarray(rgb_image.convert("HSV"), dtype=np.float32) / 255
    foreground = rgb.min(axis=2) <= BACKGROUND
    if foreground.sum() < 10:  # a white product on white: use every pixel
        foreground = np.ones_like(foreground)
    hist = np.histogramdd(hsv[foreground], bins=HSV_BINS, range=((0, 1),) * 3)[0].ravel() / foreground.sum()
    pixels = rgb[foreground]
    return np.concatenate([hist, pixels.mean(axis=0), pixels.std(axis=0), [foreground.mean()]]).astype(np.float32)


def colour_store(cfg: Config) -> FeatureStore:
    return FeatureStore.at(cfg.workdir, "image", "colour", FINGERPRINT)


def read_colour_features(cfg: Config, frame: pd.DataFrame) -> np.ndarray:
    """(n, DIM) aligned to the rows of `frame`; products not yet in the store are computed and stored first."""
    store = colour_store(cfg)
    ids = frame[cfg.data.id_column].astype(str)
    todo = ~ids.isin(store.present_ids()).to_numpy()
    if todo.any():
        column = cfg.data.image_column
        # An --input table without the image column has no photos to read: every product lacks the modality.
        paths = (image_paths(frame.loc[todo, column], images_root(cfg)) if column in frame.columns
                 else [""] * int(todo.sum()))
        matrix = np.stack([colour_statistics(p) if p else np.full(DIM, np.nan, np.float32) for p in paths])
        store.write_shard(dense_table(ids[todo].tolist(), matrix))
    return store.read_dense(ids.tolist())[0]
