"""Every path under the workdir, and the feature stores that live there, in one place.

    <workdir>/
      features/                    the feature store, unless the config's `store` puts it elsewhere:
        image/<backbone>/          embedding shards, failures.csv
        image/colour/              colour statistics of the same photos
        text/<field>/              TF-IDF shards and the fitted vectorizer.json (plain data, no pickle)
      models/<target>/             one trained model per target
      reports/<target>/            evaluation metrics and plots
      reports/brands/              `mmgbm brands`: brands.csv and brands.html
      labels/<target>.csv          reviewers' decisions on training labels (mmgbm.corrections)
      submission.csv               the demo's predictions

The feature store may lie on object storage (`store: s3://bucket/path`, mmgbm.features.folder): it is what a
cluster's workers write, and the bulk of the data. Models, reports and predictions stay in the workdir of the
machine that runs the command. A store's fingerprint says how its features were made, so it is built here from
the config too.
"""

from __future__ import annotations

from pathlib import Path

from mmgbm.config import Config
from mmgbm.features import colour
from mmgbm.features.folder import LocalFolder, ObjectFolder, folder
from mmgbm.features.image_encoder import weights_fingerprint
from mmgbm.features.image_runtime import LEGACY, EncoderChoice, choose
from mmgbm.features.store import FeatureStore, Mixable
from mmgbm.features.text_vectorizer import TextVectorizer

IMAGE_FORMAT_VERSION = 1
VECTORIZER_FILE = "vectorizer.json"
FAILURES_FILE = "failures.csv"


Folder = LocalFolder | ObjectFolder


def features_dir(cfg: Config) -> Folder:
    return folder(cfg.store if cfg.store is not None else Path(cfg.workdir) / "features", cfg.store_options)


def image_dir(cfg: Config) -> Folder:
    """Every image feature (embeddings of each backbone, colour statistics): what sibling workdirs may share."""
    return features_dir(cfg) / "image"


def image_encoder_choice(cfg: Config) -> EncoderChoice:
    """The runtime and precision of the config's embeddings: `auto` settings follow the store's features where it
    holds any, unless features made another way may be mixed in anyway."""
    image = cfg.features.image
    stored = None
    if "auto" in (image.runtime, image.precision) and not image.accept_other_runtimes:
        stored = FeatureStore(_embedding_dir(cfg), {}).made_as()
    return choose(image.runtime, image.precision, stored)


def image_store(cfg: Config) -> FeatureStore:
    """The embeddings of the config's backbone, stamped with how they are made (the runtime and precision only
    where they are not TensorFlow float32, so stores made before those settings existed stay valid)."""
    image = cfg.features.image
    fingerprint = {
        "kind": "image",
        "backbone": image.backbone,
        "image_size": image.resolved_image_size,
        "weights": weights_fingerprint(image.weights),
        "dim": image.dim,
        "format_version": IMAGE_FORMAT_VERSION,
        **image_encoder_choice(cfg).fingerprint(),
    }
    mixable = Mixable(
        tuple(LEGACY),
        image.accept_other_runtimes,
        "or set features.image.runtime and precision to auto to extend it as it was made, or "
        "features.image.accept_other_runtimes: true to mix them",
    )
    return FeatureStore(_embedding_dir(cfg), fingerprint, implied=LEGACY, mixable=mixable)


def colour_store(cfg: Config) -> FeatureStore:
    """Colour statistics of the product photos (mmgbm.features.colour), written by the same run as the embeddings."""
    return FeatureStore(image_dir(cfg) / "colour", colour.FINGERPRINT)


def image_failures(cfg: Config) -> tuple[Folder, str]:
    """The products whose image could not be read by the last run, next to the embeddings."""
    return _embedding_dir(cfg), FAILURES_FILE


def text_dir(cfg: Config) -> Folder:
    return features_dir(cfg) / "text"


def text_field_dir(cfg: Config, field: str) -> Folder:
    return text_dir(cfg) / field


def text_store(cfg: Config, field: str, vectorizer: TextVectorizer) -> FeatureStore:
    """One text field's TF-IDF vectors; fingerprinted by the fitted vectorizer, whose indices they are."""
    fingerprint = {"kind": "tfidf", "columns": cfg.text_fields[field], "vectorizer": vectorizer.fingerprint_}
    return FeatureStore(text_field_dir(cfg, field), fingerprint)


def model_dir(cfg: Config, target: str) -> Path:
    return Path(cfg.workdir) / "models" / target


def report_dir(cfg: Config, target: str) -> Path:
    return Path(cfg.workdir) / "reports" / target


def labels_path(cfg: Config, target: str) -> Path:
    return Path(cfg.workdir) / "labels" / f"{target}.csv"


def brands_dir(cfg: Config) -> Path:
    return Path(cfg.workdir) / "reports" / "brands"


def submission_path(cfg: Config) -> Path:
    return Path(cfg.workdir) / "submission.csv"


def _embedding_dir(cfg: Config) -> Folder:
    return image_dir(cfg) / cfg.features.image.backbone
