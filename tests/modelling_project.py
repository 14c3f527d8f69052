"""A small real project for the train / evaluate / predict tests: the bundled demo products with their real
TF-IDF features (extracted here, in a temporary workdir) and synthetic image embeddings that carry the colour,
written straight into the image store so no TensorFlow model has to run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mmgbm.config import Config, load_config
from mmgbm.features.image_decoding import decode_image
from mmgbm.features.store import dense_table
from mmgbm.stores import colour_store, extract_text, image_store
from tests.test_estimator import FAST

REPO = Path(__file__).resolve().parents[1]
DEMO_TABLE = REPO / "mmgbm" / "data" / "demo" / "products.csv"
NO_IMAGE = 40  # products left without an image embedding


def demo_frame() -> pd.DataFrame:
    frame = pd.read_csv(DEMO_TABLE, dtype={"id": str})
    # A price that depends on the article type (plus noise), with rows a log target cannot use.
    rng = np.random.default_rng(0)
    base = frame["articleType"].astype("category").cat.codes.to_numpy().astype(np.int64) * 40 + 100
    frame["price"] = (base * rng.lognormal(0, 0.1, len(frame))).round(2)
    frame.loc[[3, 5], "price"] = [0.0, -10.0]
    frame.loc[[7], "price"] = np.nan
    frame["is_men"] = np.where(frame["gender"] == "Men", "yes", "no")
    frame.loc[: NO_IMAGE - 1, "image"] = ""  # products without a photo (predict would embed a photo it finds)
    return frame


def make_project(folder: Path, frame: pd.DataFrame | None = None, **model: object) -> Path:
    """Write table + config into `folder`, extract text, store image embeddings; return the config path."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = demo_frame() if frame is None else frame
    frame.to_csv(folder / "products.csv", index=False)
    raw = {
        "workdir": "work",
        "data": {
            "splits": {"train": "products.csv"},
            "holdout": {"name": "test", "fraction": 0.2, "seed": 0},
            "text_columns": ["productDisplayName"],
            "image_column": "image",
            "images_root": str(DEMO_TABLE.parent),
            "categorical_columns": ["season", "usage"],
            "numeric_columns": ["year"],
        },
        "targets": {
            "articleType": {"column": "articleType"},
            "baseColour": {"column": "baseColour"},
            "price": {"column": "price", "task": "regression", "log_target": True},
            "is_men": {"column": "is_men", "task": "binary"},
        },
        "features": {"image": {"weights": "none"}, "text": {"min_df": 1}},
        "model": {**FAST, **model},
    }
    path = folder / "mmgbm.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(path)
    extract_text(cfg)
    write_images(cfg, frame.iloc[NO_IMAGE:])
    return path


def write_images(cfg: Config, frame: pd.DataFrame) -> None:
    """Embeddings that encode the colour (so the image head has signal of its own) plus noise, and the photos' real
    colour statistics."""
    rng = np.random.default_rng(1)
    codes = frame["baseColour"].astype("category").cat.codes.to_numpy()
    dim = cfg.features.image.dim
    matrix = rng.normal(0, 1, (len(frame), dim)).astype(np.float32)
    matrix[np.arange(len(frame)), codes] += 30.0
    image_store(cfg).write_shard(dense_table(frame["id"].tolist(), matrix))
    stats = np.stack([decode_image(DEMO_TABLE.parent / path, 32).colour for path in frame["image"]])
    colour_store(cfg).write_shard(dense_table(frame["id"].tolist(), stats))
