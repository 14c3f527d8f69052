"""Every path under the workdir, in one place: this module computes paths and nothing else.

    <workdir>/
      features/                    the feature store, unless the config's `store` puts it elsewhere:
        image/<backbone>/          embedding shards, failures.csv
        image/colour/              colour statistics of the same photos
        text/<field>/              TF-IDF shards and the fitted vectorizer.json (plain data, no pickle)
      models/<target>/             one trained model per target
      reports/<target>/            evaluation metrics and plots
      reports/brands/              `mmgbm brands`: brands.csv and brands.html
      reports/bad_rows/<split>.csv the broken records `data.bad_rows: skip` left out of a split's table
      labels/<target>.csv          reviewers' decisions on training labels (mmgbm.corrections)
      submission.csv               the demo's predictions

The feature store may lie on object storage (`store: s3://bucket/path`, mmgbm.features.folder): it is what a
cluster's workers write, and the bulk of the data. Models, reports and predictions stay in the workdir of the
machine that runs the command. The stores in these folders are built from the config by mmgbm.stores; the files
inside a folder are named by the module that writes them.
"""

from __future__ import annotations

from pathlib import Path

from mmgbm.config import Config
from mmgbm.features.folder import LocalFolder, ObjectFolder, folder

Folder = LocalFolder | ObjectFolder


def features_dir(cfg: Config) -> Folder:
    return folder(cfg.store if cfg.store is not None else Path(cfg.workdir) / "features", cfg.store_options)


def image_dir(cfg: Config) -> Folder:
    """Every image feature (embeddings of each backbone, colour statistics): what sibling workdirs may share."""
    return features_dir(cfg) / "image"


def embedding_dir(cfg: Config) -> Folder:
    """The embeddings of the config's backbone, and the list of photos the last extraction could not use."""
    return image_dir(cfg) / cfg.features.image.backbone


def colour_dir(cfg: Config) -> Folder:
    return image_dir(cfg) / "colour"


def text_dir(cfg: Config) -> Folder:
    return features_dir(cfg) / "text"


def text_field_dir(cfg: Config, field: str) -> Folder:
    return text_dir(cfg) / field


def model_dir(cfg: Config, target: str) -> Path:
    return Path(cfg.workdir) / "models" / target


def report_dir(cfg: Config, target: str) -> Path:
    return Path(cfg.workdir) / "reports" / target


def bad_rows_path(cfg: Config, split: str) -> Path:
    return Path(cfg.workdir) / "reports" / "bad_rows" / f"{split}.csv"


def labels_path(cfg: Config, target: str) -> Path:
    return Path(cfg.workdir) / "labels" / f"{target}.csv"


def brands_dir(cfg: Config) -> Path:
    return Path(cfg.workdir) / "reports" / "brands"


def submission_path(cfg: Config) -> Path:
    return Path(cfg.workdir) / "submission.csv"
