"""A frozen EfficientNet as a sklearn-style transformer: decoded RGB images in, fixed-length embeddings out.

Only building the network imports TensorFlow (or OpenVINO), so naming the weights and fingerprinting them is cheap.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgbm.config import BACKBONE_DIMS, BACKBONE_SIZES
from mmgbm.errors import MmgbmError

if TYPE_CHECKING:
    import tensorflow as tf

BUNDLED_B0_WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "weights" / "efficientnetb0_notop.h5"
PRECISION_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
RUNTIMES = ("tensorflow", "openvino")
OPENVINO_PRECISION = {"float32": "f32", "bfloat16": "bf16"}
_HASH_CHUNK = 1 << 20


class ImageEncoder:
    """A frozen EfficientNet (ImageNet weights, no top, global average pooling) as a sklearn-style transformer.

    `weights` is a Keras .h5 weights file, "imagenet" (Keras downloads it; needs internet) or "none" (random, for
    tests and timing). `precision` "bfloat16" computes in Keras mixed precision (weights stay float32).
    `runtime` "openvino" runs the same Keras network, converted in memory, on OpenVINO's CPU runtime.
    `transform` takes decoded RGB uint8 images, (n, h, w, 3); the model is built on first use.
    """

    def __init__(self, backbone: str = "b0", weights: str | os.PathLike[str] = BUNDLED_B0_WEIGHTS,
                 image_size: int | None = None, batch_size: int = 32, precision: str = "float32",
                 runtime: str = "tensorflow"):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.batch_size = batch_size
        self.precision = precision
        self.runtime = runtime

    @property
    def size(self) -> int:
        return self.image_size or BACKBONE_SIZES[self.backbone]

    @property
    def dim(self) -> int:
        return BACKBONE_DIMS[self.backbone]

    def fit(self, images: Any = None, y: Any = None) -> "ImageEncoder":
        """Build the network (frozen: there is nothing to learn); returns self."""
        if self.backbone not in BACKBONE_DIMS:
            raise MmgbmError(f"unknown backbone {self.backbone!r}; use one of {', '.join(BACKBONE_DIMS)}")
        if self.precision not in PRECISION_POLICIES:
            raise MmgbmError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISION_POLICIES)}")
        if self.runtime not in RUNTIMES:
            raise MmgbmError(f"unknown runtime {self.runtime!r}; use one of {', '.join(RUNTIMES)}")
        weights = weights_argument(self.weights)
        import keras
        import tensorflow as tf

        builder = {"b0": keras.applications.EfficientNetB0, "b3": keras.applications.EfficientNetB3}[self.backbone]
        # Layers take their dtype policy from the global one when built; it is put back straight after.
        # OpenVINO takes the float32 network and lowers the precision itself.
        policy = "float32" if self.runtime == "openvino" else PRECISION_POLICIES[self.precision]
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            self.model_ = builder(include_top=False, weights=weights, pooling="avg",
                                  input_shape=(self.size, self.size, 3))
        except (ValueError, OSError) as exc:  # wrong layer shapes, not an HDF5 file, failed download
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MmgbmError(
                f"cannot load {self.backbone} weights from {self.weights} ({first[:200]}); pass an EfficientNet-"
                f"{self.backbone.upper()} no-top .h5 file, 'imagenet' (needs internet) or 'none'"
            ) from None
        finally:
            keras.mixed_precision.set_global_policy(previous)
        if self.runtime == "openvino":
            self.forward_ = _openvino_forward(self.model_, OPENVINO_PRECISION[self.precision])
        else:
            self.forward_ = _frozen_forward(self.model_, self.size)
        self.forward_(tf.zeros((1, self.size, self.size, 3), tf.uint8))  # set up now, not in the first timed batch
        return self

    def embed_batch(self, images: "np.ndarray | tf.Tensor") -> np.ndarray:
        """One forward pass over a batch of (n, size, size, 3) uint8 images: (n, dim) float32."""
        if not hasattr(self, "forward_"):
            self.fit()
        return np.asarray(self.forward_(images), dtype=np.float32)

    def transform(self, images: np.ndarray) -> np.ndarray:
        """(n, dim) float32 embeddings of (n, h, w, 3) uint8 RGB images, in batches of `batch_size`."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (n, height, width, 3) RGB images, got shape {images.shape}")
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        if images.shape[1:3] != (self.size, self.size):
            import tensorflow as tf

            resized = tf.image.resize(images, (self.size, self.size), antialias=True)
            images = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()
        batches = [self.embed_batch(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return np.concatenate(batches)


def _frozen_forward(model: Any, size: int) -> Callable[[Any], Any]:
    """The model's inference graph with its weights as constants, taking uint8 batches of any length.

    Freezing lets TensorFlow's graph optimiser fold every BatchNormalization into constants and fuse it with the
    convolutions around it: 1.3-1.5x the images/s of calling the Keras model, with the same features (to 1e-5).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def forward(images: tf.Tensor) -> tf.Tensor:
        pooled = model(tf.cast(images, tf.float32), training=False)  # the model rescales 0..255 itself
        return tf.cast(pooled, tf.float32)  # float32 features even under a mixed-precision policy

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    return lambda images: frozen(tf.convert_to_tensor(images, tf.uint8))[0]


def _openvino_forward(model: Any, precision: str) -> Callable[[Any], np.ndarray]:
    """The Keras network converted in memory and compiled by OpenVINO for this CPU, taking uint8 batches.

    OpenVINO's CPU kernels ran EfficientNet-B0 at 1.3-1.9x the images/s of TensorFlow's frozen graph here, with
    the same features in float32 (cosine 1.00000) and within 1e-2 cosine in bfloat16. A latency hint runs one
    batch on all cores, which is what a streaming extraction needs.
    """
    try:
        import openvino as ov
    except ImportError:
        raise MmgbmError("features.image.runtime: openvino needs the openvino package; "
                         "pip install 'mmgbm[openvino]' or use runtime: tensorflow") from None
    with warnings.catch_warnings():  # Keras complains that the tracer's input is a tuple, harmlessly
        warnings.simplefilter("ignore", UserWarning)
        converted = ov.convert_model(model)
    compiled = ov.Core().compile_model(
        converted, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    )
    return lambda images: compiled(np.asarray(images, dtype=np.float32))[0]  # the model rescales 0..255 itself


def weights_argument(weights: str | os.PathLike[str]) -> str | None:
    """What keras.applications takes as `weights`, after checking a weights file is there."""
    if str(weights) == "none":
        return None
    if str(weights) == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise MmgbmError(
            f"image weights file {path} not found; set features.image.weights to an existing .h5 file, "
            "'imagenet' (Keras download, needs internet) or 'none'"
        )
    return str(path)


def weights_fingerprint(weights: str | os.PathLike[str]) -> str:
    """Stable name of the weights: a content hash for a file, so a moved copy keeps its features valid."""
    kind = weights_argument(weights)
    if kind is None:
        return "none"
    if kind == "imagenet":
        return "imagenet"
    digest = hashlib.sha256()
    with open(kind, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:16]
