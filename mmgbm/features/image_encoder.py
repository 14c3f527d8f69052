"""A frozen EfficientNet as a sklearn-style transformer: decoded RGB images in, fixed-length embeddings out.

Only building the network imports TensorFlow (and OpenVINO), so naming the weights and fingerprinting them is cheap.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from mmgbm.backbones import BACKBONE_DIMS, BACKBONE_SIZES
from mmgbm.errors import MmgbmError
from mmgbm.features.image_runtime import PRECISIONS, RUNTIMES, choose

if TYPE_CHECKING:
    import tensorflow as tf

BUNDLED_B0_WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "weights" / "efficientnetb0_notop.h5"
PRECISION_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
OPENVINO_PRECISION = {"float32": "f32", "bfloat16": "bf16"}
# throughput: as many requests in flight as OpenVINO asks for, one per stream of cores (extraction, batch predict);
# latency: one request on every core (a service answering one product).
PERFORMANCE_HINTS = ("throughput", "latency")
# Small requests keep each OpenVINO stream's working set in its cores' caches: 2-4 photos a request gave the most
# photos/s (scripts/bench_extract.py --request-sizes).
PHOTOS_PER_REQUEST = 4
_HASH_CHUNK = 1 << 20
Tag = TypeVar("Tag")


class ImageEncoder:
    """A frozen EfficientNet (ImageNet weights, no top, global average pooling) as a sklearn-style transformer.

    `weights` is a Keras .h5 weights file, "imagenet" (Keras downloads it; needs internet) or "none" (random, for
    tests and timing). `runtime` "openvino" runs the same Keras network, converted in memory, on OpenVINO's CPU
    runtime; `precision` "bfloat16" computes in bfloat16 (weights stay float32); "auto" settings pick the fastest
    this machine offers (mmgbm.features.image_runtime), and `fit` records the pick in `runtime_` and `precision_`.
    `performance_hint` says what OpenVINO compiles for: many photos (throughput) or one at a time (latency).
    `transform` takes decoded RGB uint8 images, (n, h, w, 3); the model is built on first use.
    """

    def __init__(
        self,
        backbone: str = "b0",
        weights: str | os.PathLike[str] = BUNDLED_B0_WEIGHTS,
        image_size: int | None = None,
        batch_size: int = 32,
        precision: str = "auto",
        runtime: str = "auto",
        performance_hint: str = "throughput",
    ):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.batch_size = batch_size
        self.precision = precision
        self.runtime = runtime
        self.performance_hint = performance_hint

    @property
    def size(self) -> int:
        return self.image_size or BACKBONE_SIZES[self.backbone]

    @property
    def dim(self) -> int:
        return BACKBONE_DIMS[self.backbone]

    def fit(self, images: Any = None, y: Any = None) -> "ImageEncoder":
        """Build the network (frozen: there is nothing to learn); returns self."""
        for name, value, allowed in (
            ("backbone", self.backbone, tuple(BACKBONE_DIMS)),
            ("precision", self.precision, ("auto", *PRECISIONS)),
            ("runtime", self.runtime, ("auto", *RUNTIMES)),
            ("performance_hint", self.performance_hint, PERFORMANCE_HINTS),
        ):
            if value not in allowed:
                raise MmgbmError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
        self.runtime_, self.precision_, _ = choose(self.runtime, self.precision)
        weights = weights_argument(self.weights)
        import keras

        builder = {"b0": keras.applications.EfficientNetB0, "b3": keras.applications.EfficientNetB3}[self.backbone]
        # Layers take their dtype policy from the global one when built; it is put back straight after.
        # OpenVINO takes the float32 network and lowers the precision itself.
        policy = "float32" if self.runtime_ == "openvino" else PRECISION_POLICIES[self.precision_]
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            self.model_ = builder(
                include_top=False, weights=weights, pooling="avg", input_shape=(self.size, self.size, 3)
            )
        except (ValueError, OSError) as exc:  # wrong layer shapes, not an HDF5 file, failed download
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MmgbmError(
                f"cannot load {self.backbone} weights from {self.weights} ({first[:200]}); pass an EfficientNet-"
                f"{self.backbone.upper()} no-top .h5 file, 'imagenet' (needs internet) or 'none'"
            ) from None
        finally:
            keras.mixed_precision.set_global_policy(previous)
        if self.runtime_ == "openvino":
            self.forward_ = OpenVinoForward(self.model_, self.precision_, self.performance_hint, self.dim)
        else:
            self.forward_ = _frozen_forward(self.model_, self.size)
        self.forward_(np.zeros((1, self.size, self.size, 3), np.uint8))  # set up now, not in the first timed batch
        return self

    def embed_batch(self, images: "np.ndarray | tf.Tensor") -> np.ndarray:
        """One forward pass over a batch of (n, size, size, 3) uint8 images: (n, dim) float32."""
        if not hasattr(self, "forward_"):
            self.fit()
        return np.asarray(self.forward_(images), dtype=np.float32)

    def embed_batches(self, batches: Iterable[tuple[Tag, np.ndarray]]) -> Iterator[tuple[Tag, np.ndarray]]:
        """(tag, embeddings) of each (tag, uint8 images) in order, as `embed_batch` gives them. On OpenVINO the
        batches' photos go out as requests that run while the caller makes the next batch (decodes it), so take
        them from a generator; on TensorFlow one batch runs at a time."""
        if isinstance(getattr(self, "forward_", None), OpenVinoForward):
            return self.forward_.stream(batches)
        return (
            (tag, self.embed_batch(images) if len(images) else np.zeros((0, self.dim), np.float32))
            for tag, images in batches
        )

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
        batches = ((i, images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size))
        return np.concatenate([embeddings for _, embeddings in self.embed_batches(batches)])


def _frozen_forward(model: Any, size: int) -> Callable[[Any], Any]:
    """The model's inference graph with its weights as constants, taking uint8 batches of any length.

    Freezing lets TensorFlow's graph optimiser fold every BatchNormalization into constants and fuse it with the
    convolutions around it, for more images/s than calling the Keras model, with the same features (to 1e-5).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def forward(images: tf.Tensor) -> tf.Tensor:
        pooled = model(tf.cast(images, tf.float32), training=False)  # the model rescales 0..255 itself
        return tf.cast(pooled, tf.float32)  # float32 features even under a mixed-precision policy

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    return lambda images: frozen(tf.convert_to_tensor(images, tf.uint8))[0]


class OpenVinoForward:
    """The Keras network converted in memory and compiled by OpenVINO for this CPU, taking uint8 batches.

    Photos go out as small requests, as many in flight as OpenVINO asks for (OPTIMAL_NUMBER_OF_INFER_REQUESTS: one
    per stream under the throughput hint); each request's callback stores its rows, so Python only queues work.
    """

    def __init__(self, model: Any, precision: str, performance_hint: str, dim: int):
        try:
            import openvino as ov
        except ImportError:
            raise MmgbmError(
                "features.image.runtime openvino needs the openvino package: pip install openvino "
                "(or extract a new store with runtime: tensorflow)"
            ) from None
        with warnings.catch_warnings():  # Keras complains that the tracer's input is a tuple, harmlessly
            warnings.simplefilter("ignore", UserWarning)
            converted = ov.convert_model(model)
        # uint8 photos go in as they are and become float32 inside OpenVINO's threads (the model rescales 0..255).
        steps = ov.preprocess.PrePostProcessor(converted)
        steps.input().tensor().set_element_type(ov.Type.u8)
        compiled = ov.Core().compile_model(
            steps.build(),
            "CPU",
            {"PERFORMANCE_HINT": performance_hint.upper(), "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision]},
        )
        self.requests = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        self.dim = dim
        self._queue = ov.AsyncInferQueue(compiled, self.requests)
        self._queue.set_callback(self._finished)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        [(_, embeddings)] = self.stream([(None, images)])
        return embeddings

    def stream(self, batches: Iterable[tuple[Tag, np.ndarray]]) -> Iterator[tuple[Tag, np.ndarray]]:
        """(tag, embeddings) of each (tag, images), in order, each yielded once all its requests are done."""
        pending: deque[tuple[Tag, list[np.ndarray | None]]] = deque()
        try:
            for tag, images in batches:
                images = np.ascontiguousarray(images, dtype=np.uint8)
                rows: list[np.ndarray | None] = [None] * -(-len(images) // PHOTOS_PER_REQUEST)
                for k, start in enumerate(range(0, len(images), PHOTOS_PER_REQUEST)):
                    # Blocks, letting go of the GIL, while every request is busy.
                    self._queue.start_async({0: images[start : start + PHOTOS_PER_REQUEST]}, (rows, k))
                pending.append((tag, rows))
                while pending and all(r is not None for r in pending[0][1]):
                    yield self._joined(*pending.popleft())
            self._queue.wait_all()
            while pending:
                yield self._joined(*pending.popleft())
        finally:
            self._queue.wait_all()  # no callback may outlive the arrays it writes to

    def _finished(self, request: Any, where: tuple[list[np.ndarray | None], int]) -> None:
        rows, k = where
        rows[k] = request.get_output_tensor(0).data.copy()  # the request reuses its output for the next photos

    def _joined(self, tag: Tag, rows: list[np.ndarray | None]) -> tuple[Tag, np.ndarray]:
        return tag, np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)


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
