"""Every path under the workdir, in one place: this module computes paths and nothing else.

    <workdir>/
      features/                    the feature store, unless the config's `store` puts it elsewhere:
        image/<backbone>/          embedding shards, failures.csv
        image/colour/              colour statistics of the same photos
        text/<field>/              TF-IDF shards and the fitted vectorizer.json (plain data, no pickle)
      models/<target>/             the target's model versions (mmgbm.model_versions):
        <version>/                 one trained model (mmgbm.commands.artifact), named by when it was trained
        current                    the name of the version predict and serve load
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

import re
from pathlib import Path

from mmgbm.config import Config
from mmgbm.errors import MmgbmError
from mmgbm.features.folder import LocalFolder, ObjectFolder, folder

Folder = LocalFolder | ObjectFolder

CURRENT_POINTER = "current"
# The model mmgbm wrote straight into models/<target>/ before models were versioned: listed and loaded as a version.
LEGACY_VERSION = "legacy"
# 20261208T021530-1a2b3c4d (mmgbm.model_versions.new_version_name) or "legacy": never a path of its own.
VERSION_NAME = re.compile(r"\d{8}T\d{6}-[0-9a-f]{8}|" + LEGACY_VERSION)


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


def target_models_dir(cfg: Config, target: str) -> Path:
    """Every version of the target's model, and the pointer naming the current one."""
    return Path(cfg.workdir) / "models" / target


def model_dir(cfg: Config, target: str) -> Path:
    """The folder predict loads: the version the target's `current` pointer names. Without a pointer, the target's
    folder itself, where mmgbm wrote its one model before models were versioned (or where none is yet)."""
    root = target_models_dir(cfg, target)
    return version_dir(root, current_version(root))


def current_version(root: Path) -> str | None:
    """The version the pointer in `root` names; None where there is no pointer."""
    try:
        name = (root / CURRENT_POINTER).read_text().strip()
    except FileNotFoundError:
        return None
    if not VERSION_NAME.fullmatch(name):
        raise MmgbmError(
            f"{root / CURRENT_POINTER} names {name!r}, not a model version; set it with "
            f"`mmgbm models --target {root.name} --use VERSION` (`mmgbm models` lists them)"
        )
    return name


def version_dir(root: Path, version: str | None) -> Path:
    return root if version in (None, LEGACY_VERSION) else root / version


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
