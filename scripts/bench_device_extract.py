"""Image-embedding throughput of the product's encoder network on whatever accelerator Keras 3 finds.

extract-images runs EfficientNet through TensorFlow, whose GPU build is not installed everywhere a GPU is; this
script runs the same network (keras.applications, the same .h5 weights, global average pooling, 0..255 input) on
any Keras 3 backend (`KERAS_BACKEND=jax|tensorflow|torch`), decoding the photos with the product's own
`decode_image` in a pool of processes, and prints:
  (a) decode        photos/s of the product's decode (square RGB + colour statistics), per pool size;
  (b) forward only  images/s of the compiled forward pass on decoded images, per batch size and precision, and on
                    batches already on the accelerator (the network's own bound);
  (c) end to end    images/s decoding in the pool while the accelerator embeds the previous batch;
and writes the float32 embeddings of the first `--compare` photos (with their file names) to `--out`, so that
`--check FILE` on a machine with the product's own TensorFlow encoder reports their cosine to extract-images'.

    KERAS_BACKEND=jax python scripts/bench_device_extract.py --photos DIR --weights B0.h5 [--limit N] [--out F.npz]
    python scripts/bench_device_extract.py --photos DIR --weights B0.h5 --check F.npz
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from mmgbm.features.image_decoding import decode_image

SIZE = 224  # EfficientNet-B0's input, as extract-images uses it
# Forking a process that has started JAX's or TensorFlow's threads can deadlock the child: the pools spawn.
SPAWN = multiprocessing.get_context("spawn")


def _pixels(path: str) -> np.ndarray:
    return decode_image(path, SIZE).pixels


def decode_all(paths: list[str], workers: int, chunk: int = 64) -> np.ndarray:
    with ProcessPoolExecutor(workers, mp_context=SPAWN) as pool:
        return np.stack(list(pool.map(_pixels, paths, chunksize=chunk)))


def build_model(weights: str, precision: str):
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    model = keras.applications.EfficientNetB0(
        include_top=False, weights=weights, pooling="avg", input_shape=(SIZE, SIZE, 3)
    )
    keras.mixed_precision.set_global_policy("float32")
    return model


def embed(model, images: np.ndarray, batch: int) -> np.ndarray:
    out = [
        np.asarray(model.predict_on_batch(images[i : i + batch].astype(np.float32)), dtype=np.float32)
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out)


def forward_rate(model, images: np.ndarray, batch: int, rounds: int = 3, resident: bool = False) -> float:
    """Best of `rounds` passes over `images` (whole batches only, so one compiled shape), after a warm-up. With
    `resident`, the batches are float32 tensors on the accelerator already: the network's own bound, without the
    host's conversion and the copy to the device that a pass from decoded images pays."""
    import keras

    usable = images[: len(images) // batch * batch]
    batches = [usable[i : i + batch].astype(np.float32) for i in range(0, len(usable), batch)]
    if resident:
        batches = [keras.ops.convert_to_tensor(b) for b in batches]
    model.predict_on_batch(batches[0])  # compile this shape outside the timing
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for b in batches:
            np.asarray(model.predict_on_batch(b))
        best = min(best, time.perf_counter() - started)
    return len(usable) / best


def end_to_end(model, paths: list[str], batch: int, workers: int) -> float:
    """Photos/s from files to embeddings: the pool decodes batch i+1.. while the accelerator embeds batch i."""
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=SPAWN) as pool:
        pending = [pool.map(_pixels, paths[i : i + batch], chunksize=8) for i in range(0, len(paths), batch)]
        for decoded in pending:
            images = np.stack(list(decoded))
            if len(images) < batch:  # pad the last batch to the compiled shape
                images = np.concatenate([images, np.zeros((batch - len(images), *images.shape[1:]), np.uint8)])
            np.asarray(model.predict_on_batch(images.astype(np.float32)))
    return len(paths) / (time.perf_counter() - started)


def check(paths: list[str], saved: Path, weights: str) -> None:
    """Cosine between the saved embeddings and the product's own TensorFlow ImageEncoder on the same photos."""
    from mmgbm.features.image_encoder import ImageEncoder

    data = np.load(saved)
    by_name = {Path(p).name: p for p in paths}
    images = np.stack([_pixels(by_name[name]) for name in data["names"]])
    ours = ImageEncoder(weights=weights, runtime="tensorflow", precision="float32").transform(images)
    theirs = data["embeddings"]
    cosine = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    print(
        f"{len(images)} photos: cosine to extract-images' TensorFlow features min {cosine.min():.6f} "
        f"mean {cosine.mean():.6f}; max |difference| {np.abs(ours - theirs).max():.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="a folder of .jpg photos")
    parser.add_argument("--weights", required=True, help="EfficientNet-B0 no-top .h5 weights")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--workers", default="", help="decode pool sizes (default: 1 and every core)")
    parser.add_argument("--compare", type=int, default=256, help="photos whose embeddings are written to --out")
    parser.add_argument("--out", type=Path, default=Path("device_embeddings.npz"))
    parser.add_argument("--check", type=Path, help="compare a saved --out file with the TensorFlow encoder here")
    args = parser.parse_args()
    paths = sorted(str(p) for p in args.photos.glob("*.jpg"))[: args.limit or None]
    if args.check:
        check(paths, args.check, args.weights)
        return

    import keras

    cores = os.cpu_count() or 1
    print(f"backend {keras.backend.backend()}, keras {keras.__version__}, {cores} cores, {len(paths)} photos")
    pools = [int(w) for w in args.workers.split(",")] if args.workers else sorted({1, cores})
    for workers in pools:
        started = time.perf_counter()
        images = decode_all(paths, workers)
        print(f"(a) decode, {workers:>2} processes: {len(paths) / (time.perf_counter() - started):8.0f} photos/s")
    batches = [int(b) for b in args.batches.split(",")]
    best = (0.0, batches[0], "float32")
    for precision in args.precisions.split(","):
        model = build_model(args.weights, precision)
        if precision == "float32":
            n = min(args.compare, len(paths))
            np.savez(args.out, names=[Path(p).name for p in paths[:n]], embeddings=embed(model, images[:n], 32))
        for batch in batches:
            rate = forward_rate(model, images, batch)
            best = max(best, (rate, batch, precision))
            resident = forward_rate(model, images, batch, resident=True)
            print(
                f"(b) forward only, {precision:<8} batch {batch:>4}: {rate:8.0f} images/s from decoded images, "
                f"{resident:8.0f} from batches already on the device"
            )
    rate, batch, precision = best
    model = build_model(args.weights, precision)
    embed(model, images[:batch], batch)
    print(
        f"(c) end to end, {precision} batch {batch}, {cores} decode processes: "
        f"{end_to_end(model, paths, batch, cores):8.0f} photos/s"
    )


if __name__ == "__main__":
    main()
