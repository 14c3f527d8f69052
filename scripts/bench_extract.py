"""Image-embedding throughput: the model's compute bound, the real `extract-images` pipeline, and the naive route.

For each backbone, on the same N catalogue images:
  (a) forward only   ImageEncoder's batched graph-mode forward pass on images already decoded in memory;
  (b) extract-images the library's extract_images() on a catalogue of those N products (fresh store), images/s
                     over its embedding loop (decode + forward + shard writes; model build excluded);
  (c) naive          the reference notebooks' route: PIL open + resize per image, Keras model.predict per batch.
The routes run in interleaved rounds and the best round of each is compared, because this machine's 2 cores are
shared with other work.
With --explore instead, each CPU setting (threads, oneDNN off, XLA, bfloat16 mixed precision) is timed forward-only in
its own process (TensorFlow fixes these at start-up), with bfloat16's features compared to float32 by cosine.

    python scripts/bench_extract.py [--config configs/fashion.yaml] [--images 384] [--rounds 3] [--backbones b0 b3]
                                    [--explore]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from mmgbm.catalogue import load_all_products
from mmgbm.config import Config, load_config
from mmgbm.features.image_decoding import decode_image
from mmgbm.features.image_encoder import ImageEncoder
from mmgbm.features.images import extract_images
from mmgbm.features.photos import Photos

REPO = Path(__file__).resolve().parents[1]
EXPLORE = {  # name -> (environment, probe options)
    "default: frozen graph, oneDNN on, TF threads": ({}, []),
    "oneDNN off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, []),
    "intra-op 2, inter-op 1 threads": ({}, ["--threads", "2", "1"]),
    "intra-op 1, inter-op 2 threads": ({}, ["--threads", "1", "2"]),
    "Keras model in tf.function, not frozen": ({}, ["--graph", "keras"]),
    "same, XLA jit_compile": ({}, ["--graph", "xla"]),
    "batch 64": ({}, ["--probe-batch", "64"]),
    "precision: bfloat16 (Keras mixed_bfloat16)": ({}, ["--bf16", "keras"]),
    "oneDNN auto mixed precision bfloat16": ({}, ["--bf16", "onednn"]),
}


def sample_products(config: Path, n: int) -> tuple[pd.DataFrame, list[str], Config]:
    cfg = load_config(config)
    products = load_all_products(cfg)
    paths = Photos.of(cfg).paths(products[cfg.data.image_column])
    keep = [i for i, p in enumerate(paths) if p and os.path.isfile(p)][:n]
    return products.iloc[keep].reset_index(drop=True), [paths[i] for i in keep], cfg


def weights_for(backbone: str, cfg: Config) -> str:
    # Only B0 ImageNet weights exist offline; B3 is timed with random weights (same arithmetic, same speed).
    return cfg.features.image.weights if backbone == "b0" else "none"


def forward_rate(encoder: ImageEncoder, images: np.ndarray) -> float:
    start = time.perf_counter()
    encoder.transform(images)
    return len(images) / (time.perf_counter() - start)


def pipeline_rate(products: pd.DataFrame, cfg: Config, encoder: ImageEncoder, workdir: Path) -> float:
    table = workdir / "products.csv"
    products.to_csv(table, index=False)
    raw = {
        "workdir": str(workdir / "work"),
        "data": {"id_column": cfg.data.id_column, "splits": {"train": str(table)},
                 "image_column": cfg.data.image_column, "images_root": str(Photos.of(cfg).root)},
        "features": {"image": {"backbone": encoder.backbone, "weights": str(encoder.weights),
                               "batch_size": encoder.batch_size, "precision": encoder.precision,
                               "runtime": encoder.runtime}},
    }
    config = workdir / "bench.yaml"
    config.write_text(yaml.safe_dump(raw))
    summary = extract_images(load_config(config), overwrite=True)
    assert summary.extracted == len(products), summary.describe()
    return summary.images_per_second


def naive_model(backbone: str, size: int, weights: str) -> Any:
    import keras

    builder = {"b0": keras.applications.EfficientNetB0, "b3": keras.applications.EfficientNetB3}[backbone]
    model = builder(include_top=False, weights=None if weights == "none" else weights, pooling="avg",
                    input_shape=(size, size, 3))
    model.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)  # first-call set-up, as (a) and (b) have
    return model


def naive_rate(model: Any, paths: list[str], size: int, batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        batch = [np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in paths[i:i + batch_size]]
        model.predict(np.stack(batch).astype(np.float32), batch_size=batch_size, verbose=0)
    return len(paths) / (time.perf_counter() - start)


def bench_backbone(config: Path, backbone: str, n: int, batch_size: int, rounds: int, precision: str,
                   runtime: str) -> None:
    products, paths, cfg = sample_products(config, n)
    encoder = ImageEncoder(backbone, weights_for(backbone, cfg), batch_size=batch_size, precision=precision,
                           runtime=runtime)
    start = time.perf_counter()
    decoded = np.stack([decode_image(p, encoder.size).pixels for p in paths])
    decode = len(paths) / (time.perf_counter() - start)
    encoder.fit()
    naive = naive_model(backbone, encoder.size, weights_for(backbone, cfg))
    rates: dict[str, list[float]] = {"forward": [], "full": [], "naive": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):  # interleaved, so load from other users of the machine hits every route alike
            rates["forward"].append(forward_rate(encoder, decoded))
            rates["full"].append(pipeline_rate(products, cfg, encoder, Path(tmp)))
            rates["naive"].append(naive_rate(naive, paths, encoder.size, batch_size))
    best = {route: max(values) for route, values in rates.items()}
    print(f"\n{backbone.upper()} ({encoder.size} px, {encoder.dim}-d, batch {batch_size}, {len(paths)} images x "
          f"{rounds} rounds, weights {Path(str(encoder.weights)).name}, {precision}, {runtime}); best round, then "
          "every round")
    print(f"  decode+resize+colour, 1 thread    {decode:8.1f} images/s")
    for route, label in (("forward", "(a) forward only"), ("full", "(b) extract-images"),
                         ("naive", "(c) naive PIL + model.predict")):
        every = ", ".join(f"{r:.1f}" for r in rates[route])
        print(f"  {label:33s} {best[route]:8.1f} images/s   [{every}]")
    print(f"  full / forward-only = {best['full'] / best['forward']:.2f}   full / naive = "
          f"{best['full'] / best['naive']:.2f}")


def probe(args: argparse.Namespace) -> None:
    """One forward-only timing under one CPU setting, printed as a JSON line for the parent process."""
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(args.threads[1])
    _, paths, cfg = sample_products(args.config, args.images)
    batch = args.probe_batch or args.batch_size
    reference = ImageEncoder(args.probe, weights_for(args.probe, cfg), batch_size=batch)
    decoded = np.stack([decode_image(p, reference.size).pixels for p in paths])
    result = {}
    if args.bf16:
        fp32 = reference.fit().transform(decoded)
        # TensorFlow's oneDNN rewrite is a process-wide switch (so the library offers the Keras policy instead).
        if args.bf16 == "onednn":
            tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
        encoder = ImageEncoder(args.probe, weights_for(args.probe, cfg), batch_size=batch,
                               precision="bfloat16" if args.bf16 == "keras" else "float32")
    else:
        encoder = reference
    encoder.fit()
    if args.graph != "frozen":  # the Keras model called in a tf.function, weights as variables (XLA-compiled or not)
        model = encoder.model_
        encoder.forward_ = tf.function(lambda x: tf.cast(model(tf.cast(x, tf.float32), training=False), tf.float32),
                                       jit_compile=args.graph == "xla", reduce_retracing=True)
        encoder.transform(decoded[:batch])
    timings = []
    for _ in range(2):  # best of two: the machine is shared
        start = time.perf_counter()
        features = encoder.transform(decoded)
        timings.append(len(decoded) / (time.perf_counter() - start))
    result["rate"] = max(timings)
    if args.bf16:
        cos = (features * fp32).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(fp32, axis=1)
        result["min_cosine"] = float(cos.min())
    print(json.dumps(result))


def explore(args: argparse.Namespace, backbone: str) -> None:
    n = min(args.images, 128)
    print(f"\n{backbone.upper()} forward-only under CPU settings ({n} images, one process each)")
    for name, (env, options) in EXPLORE.items():
        cmd = [sys.executable, __file__, "--config", str(args.config), "--images", str(n), "--batch-size",
               str(args.batch_size), "--probe", backbone, *options]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=900)
        if out.returncode != 0:
            print(f"  {name:46s} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        extra = f"  (min cosine to float32 {result['min_cosine']:.5f})" if "min_cosine" in result else ""
        print(f"  {name:46s} {result['rate']:8.1f} images/s{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion.yaml")
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="for (a) and (b); the naive route (c) stays float32 as the notebooks run it")
    parser.add_argument("--runtime", choices=["tensorflow", "openvino"], default="tensorflow",
                        help="for (a) and (b); the naive route (c) is Keras model.predict")
    parser.add_argument("--backbones", nargs="+", default=["b0", "b3"], choices=["b0", "b3"])
    parser.add_argument("--explore", action="store_true", help="time CPU settings instead, one process each")
    parser.add_argument("--probe", choices=["b0", "b3"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--probe-batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--graph", choices=["frozen", "keras", "xla"], default="frozen", help=argparse.SUPPRESS)
    parser.add_argument("--bf16", choices=["keras", "onednn"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args)
        return
    print(f"{os.cpu_count()} CPU cores, load average before: {os.getloadavg()[0]:.2f}")
    for backbone in args.backbones:
        n = args.images if backbone == "b0" else max(args.images // 2, 1)  # B3 is ~3x the work per image
        if args.explore:
            explore(args, backbone)
        else:
            bench_backbone(args.config, backbone, n, args.batch_size, args.rounds, args.precision, args.runtime)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak RSS of this process {peak:.2f} GiB; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
