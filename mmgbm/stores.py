"""A config's feature stores and the features layer's inputs, built in one place: the layer the commands call.

The features layer (mmgbm.features) takes stores and settings, never the config: here a config becomes them, in the
folders mmgbm.workdir names. A store's fingerprint says how its features were made, so it is built here from the
config's settings. `extract_text`, `extract_images` and `load_products` run the features layer on a config's stores.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import pandas as pd

from mmgbm.catalogue import load_all_products, load_split
from mmgbm.config import Config, ImageFeaturesConfig
from mmgbm.errors import MmgbmError
from mmgbm.estimator.products import ProductMatrix
from mmgbm.features import colour, design, images, text
from mmgbm.features.image_encoder import weights_fingerprint
from mmgbm.features.image_runtime import LEGACY, EncoderChoice, choose
from mmgbm.features.photos import Photos
from mmgbm.features.store import FeatureStore, Mixable
from mmgbm.features.store_lock import writing_lock
from mmgbm.workdir import colour_dir, embedding_dir, image_dir, text_dir, text_field_dir

if TYPE_CHECKING:
    from distributed import Client

IMAGE_FORMAT_VERSION = 1


def images_enabled(cfg: Config) -> bool:
    return bool(cfg.features.image.enabled and cfg.data.image_column)


def image_encoder_choice(cfg: Config) -> EncoderChoice:
    """The runtime and precision of the config's embeddings: `auto` settings follow the store's features where it
    holds any, unless features made another way may be mixed in anyway."""
    image = cfg.features.image
    stored = None
    if "auto" in (image.runtime, image.precision) and not image.accept_other_runtimes:
        stored = FeatureStore(embedding_dir(cfg), {}).made_as()
    return choose(image.runtime, image.precision, stored)


def image_store(cfg: Config, choice: EncoderChoice | None = None) -> FeatureStore:
    """The embeddings of the config's backbone, stamped with how they are made (the runtime and precision, `choice`
    or the config's, only where they are not TensorFlow float32, so stores made before those settings existed stay
    valid)."""
    image = cfg.features.image
    fingerprint = {
        "kind": "image",
        "backbone": image.backbone,
        "image_size": image.resolved_image_size,
        "weights": weights_fingerprint(image.weights),
        "dim": image.dim,
        "format_version": IMAGE_FORMAT_VERSION,
        **(choice or image_encoder_choice(cfg)).fingerprint(),
    }
    mixable = Mixable(
        tuple(LEGACY),
        image.accept_other_runtimes,
        "or set features.image.runtime and precision to auto to extend it as it was made, or "
        "features.image.accept_other_runtimes: true to mix them",
    )
    return FeatureStore(embedding_dir(cfg), fingerprint, implied=LEGACY, mixable=mixable)


def colour_store(cfg: Config) -> FeatureStore:
    """Colour statistics of the product photos (mmgbm.features.colour), written by the same run as the embeddings."""
    return FeatureStore(colour_dir(cfg), colour.FINGERPRINT)


def image_source(cfg: Config, choice: EncoderChoice | None = None) -> images.ImageSource:
    """The config's photos and image stores, with the runtime and precision settled (`choice`, or the config's)."""
    choice = choice or image_encoder_choice(cfg)
    return images.ImageSource(
        _settled(cfg.features.image, choice),
        choice,
        cfg.data.image_column,
        Photos.of(cfg.data),
        image_dir(cfg),
        image_store(cfg, choice),
        colour_store(cfg),
    )


def _settled(image: ImageFeaturesConfig, choice: EncoderChoice) -> ImageFeaturesConfig:
    """The image settings with the runtime and precision chosen for them, so every machine makes the features the
    store's fingerprint names (a cluster worker's own `auto` could pick otherwise)."""
    return image.model_copy(update={"runtime": choice.runtime, "precision": choice.precision})


def text_field(cfg: Config, name: str) -> text.TextField:
    fields = cfg.text_fields
    if name not in fields:
        raise MmgbmError(f"unknown text field {name!r}; the config has: {', '.join(fields) or 'none'}")
    return text.TextField(name, fields[name], text_field_dir(cfg, name), cfg.features.text)


def product_features(cfg: Config) -> design.ProductFeatures:
    """What the config's enabled modalities read a table's products with (text vectorizers loaded first)."""
    data = cfg.data
    fields = [text_field(cfg, name).fitted() for name in cfg.text_fields] if cfg.features.text.enabled else []
    named = data.categorical_columns + data.numeric_columns
    named += [t.label_in_text for t in cfg.targets.values() if t.label_in_text]
    image = image_source(cfg) if images_enabled(cfg) else None
    return design.ProductFeatures(data.id_column, fields, image, list(dict.fromkeys(named)))


def load_products(
    cfg: Config, frame: pd.DataFrame, embed_new_photos: Callable[[str], None] | None = None
) -> tuple[ProductMatrix, dict[str, dict]]:
    """Every modality the config enables for the products of `frame`, read from its stores (read-only; see
    mmgbm.features.design.load_products), and the stores' fingerprints."""
    return design.load_products(product_features(cfg), frame, embed_new_photos)


def extract_text(cfg: Config, *, overwrite: bool = False, client: Client | None = None) -> text.TextExtractionSummary:
    """Fit (train split only) or reuse each field's vectorizer, then store vectors for every product not yet stored,
    on the Dask cluster of `client` when given; products in none of the splits leave the store where
    `features.prune` says so."""
    root = text_dir(cfg).root
    if not cfg.features.text.enabled:
        return text.TextExtractionSummary([], root, enabled=False)
    if not cfg.text_fields:
        raise MmgbmError("no text columns configured; set data.text_columns or features.text.fields")
    products = load_all_products(cfg)
    train = functools.partial(load_split, cfg, "train", with_targets=False)
    fields = [
        text.extract_field(
            text_field(cfg, name),
            products,
            cfg.data.id_column,
            train,
            overwrite=overwrite,
            prune=cfg.features.prune,
            max_prune=cfg.features.max_prune,
            client=client,
        )
        for name in cfg.text_fields
    ]
    return text.TextExtractionSummary(fields, root)


def extract_images(
    cfg: Config, *, overwrite: bool = False, progress: bool = False, client: Client | None = None
) -> images.ImageExtractionSummary:
    """Embed the photo of every product of every split that the stores do not hold yet, with its colour statistics
    (mmgbm.features.images), on the Dask cluster of `client` when given; products in none of the splits leave the
    stores where `features.prune` says so. A second extraction on the same stores meanwhile is refused."""
    start = time.perf_counter()
    if not cfg.features.image.enabled:
        raise MmgbmError("image features are off in this config (features.image.enabled: false); nothing to extract")
    if not cfg.data.image_column:
        raise MmgbmError("the config has no data.image_column; set it to the column that holds image paths")
    with writing_lock(image_dir(cfg)):
        if overwrite:
            image_store(cfg).clear()
            colour_store(cfg).clear()
        choice = image_encoder_choice(cfg)  # after clearing: `auto` then picks for a new store
        source = image_source(cfg, choice)
        summary = images.extract_images(
            source,
            load_all_products(cfg),
            cfg.data.id_column,
            prune=cfg.features.prune,
            max_prune=cfg.features.max_prune,
            progress=progress,
            client=client,
        )
        return replace(summary, seconds=time.perf_counter() - start)  # the whole call, reading the catalogue too
