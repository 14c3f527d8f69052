"""Image-extraction throughput per runtime and precision, against the bounds the machine sets, in one run.

For each runtime and precision (TensorFlow and OpenVINO, float32 and bfloat16), on the same N catalogue photos:
  forward only  the encoder's pass over photos already decoded in memory, as extraction feeds it;
  decode only   extraction's decoder (its thread pool: decode, resize, colour statistics) with no encoder;
  end to end    extract_images() on a fresh store, photos/s over its embedding loop (decode + forward + shard writes;
                the model build left out), so bound by 1 / (1/forward + 1/decode) when both share the cores.
Settings run in interleaved rounds and the best round of each is compared, because this machine's cores are shared
with other work. Each setting's stored embeddings are compared by cosine with TensorFlow float32's, photo by photo.
The last line sums up the default settings (`auto` on this machine):
    extraction: Nx TensorFlow float32, M of the combined bound, cosine min C
Decoding in a process pool instead of threads is timed beside the product's decoder, for comparison.
With --request-sizes, OpenVINO's forward pass is timed per photos-per-request instead; with --explore, each
TensorFlow CPU setting (threads, oneDNN off, XLA, bfloat16) forward-only in its own process.

    python scripts/bench_extract.py [--config configs/fashion.yaml] [--images 512] [--rounds 3]
                                    [--settings tensorflow:float32 openvino:bfloat16 ...] [--backbone b0]
                                    [--request-sizes 1 2 4 8 16 32] [--explore]
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mmgbm.catalogue import load_all_products
from mmgbm.config import Config, load_config
from mmgbm.features import image_encoder, images
from mmgbm.features.image_decoding import decode_image
from mmgbm.features.image_encoder import ImageEncoder
from mmgbm.features.image_runtime import NAMES, choose
from mmgbm.features.photos import Photos
from mmgbm.stores import extract_images, image_store

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["tensorflow:float32", "tensorflow:bfloat16", "openvino:float32", "openvino:bfloat16"]
REFERENCE = ("tensorflow", "float32")
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
    paths = Photos.of(cfg.data).paths(products[cfg.data.image_column])
    keep = [i for i, p in enumerate(paths) if p and os.path.isfile(p)][:n]
    return products.iloc[keep].reset_index(drop=True), [paths[i] for i in keep], cfg


def weights_for(backbone: str, cfg: Config) -> str:
    # Only B0 ImageNet weights exist offline; B3 is timed with random weights (same arithmetic, same speed).
    return cfg.features.image.weights if backbone == "b0" else "none"


def forward_rate(encoder: ImageEncoder, decoded: np.ndarray) -> float:
    start = time.perf_counter()
    encoder.transform(decoded)
    return len(decoded) / (time.perf_counter() - start)


def decode_rate(paths: list[str], size: int, batch_size: int) -> float:
    start = time.perf_counter()
    for _ in images._decoded_batches(paths, [None] * len(paths), size, batch_size, None, None):
        pass
    return len(paths) / (time.perf_counter() - start)


def _decode_part(paths: list[str], size: int) -> np.ndarray:
    return np.stack([decode_image(p, size).pixels for p in paths])


def process_decode_rate(pool: ProcessPoolExecutor, paths: list[str], size: int, batch_size: int) -> float:
    """Decoding in a pool of processes, batches shipped back whole: the alternative to the product's threads."""
    parts = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    start = time.perf_counter()
    for _ in pool.map(_decode_part, parts, [size] * len(parts)):
        pass
    return len(paths) / (time.perf_counter() - start)


class _Built:
    """What extraction builds its encoder with, handing out one built beforehand: a build takes seconds and is not
    part of the loop timed, so the rounds need not pay for it again."""

    def __init__(self, encoder: ImageEncoder):
        self.encoder = encoder

    def fit(self) -> ImageEncoder:
        return self.encoder


def extraction(products: pd.DataFrame, cfg: Config, encoder: ImageEncoder, workdir: Path) -> tuple[float, Config]:
    """photos/s of extract_images on a fresh store with the encoder's settings, and that store's config."""
    workdir.mkdir(exist_ok=True)
    table = workdir / "products.csv"
    products.to_csv(table, index=False)
    raw = {
        "workdir": str(workdir / "work"),
        "data": {
            "id_column": cfg.data.id_column,
            "splits": {"train": str(table)},
            "image_column": cfg.data.image_column,
            "images_root": str(Photos.of(cfg.data).root),
        },
        "features": {
            "image": {
                "backbone": encoder.backbone,
                "weights": str(encoder.weights),
                "batch_size": encoder.batch_size,
                "precision": encoder.precision,
                "runtime": encoder.runtime,
            }
        },
    }
    config = workdir / "bench.yaml"
    config.write_text(yaml.safe_dump(raw))
    settled = load_config(config)
    images._new_encoder = lambda image_cfg: _Built(encoder)
    summary = extract_images(settled, overwrite=True)
    assert summary.extracted == len(products), summary.describe()
    return summary.images_per_second, settled


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def bench(args: argparse.Namespace) -> None:
    products, paths, cfg = sample_products(args.config, args.images)
    default = choose("auto", "auto")
    settings = [tuple(s.split(":")) for s in args.settings]
    if (default.runtime, default.precision) not in settings:
        settings.append((default.runtime, default.precision))
    if REFERENCE not in settings:
        settings.insert(0, REFERENCE)
    encoders = {
        s: ImageEncoder(
            args.backbone, weights_for(args.backbone, cfg), batch_size=args.batch_size, runtime=s[0], precision=s[1]
        ).fit()
        for s in settings
    }
    size = encoders[REFERENCE].size
    decoded = np.stack([decode_image(p, size).pixels for p in paths])
    rates = {s: {"forward": [], "decode": [], "full": []} for s in settings}
    processes = []
    stored = {}
    ids = products[cfg.data.id_column].astype(str).tolist()
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(os.cpu_count()) as pool:
        process_decode_rate(pool, paths[:8], size, args.batch_size)  # the processes start before timing
        for _ in range(args.rounds):  # interleaved, so load from other users of the machine hits every setting alike
            for s in settings:
                rates[s]["forward"].append(forward_rate(encoders[s], decoded))
                rates[s]["decode"].append(decode_rate(paths, size, args.batch_size))
                full, store_cfg = extraction(products, cfg, encoders[s], Path(tmp) / "_".join(s))
                rates[s]["full"].append(full)
                stored[s] = image_store(store_cfg).read_dense(ids)[0]
            processes.append(process_decode_rate(pool, paths, size, args.batch_size))
    best = {s: {route: max(values) for route, values in routes.items()} for s, routes in rates.items()}
    bound = {s: 1 / (1 / b["forward"] + 1 / b["decode"]) for s, b in best.items()}
    cosine = {s: min_cosine(stored[s], stored[REFERENCE]) for s in settings}
    print(
        f"\n{args.backbone.upper()} ({size} px, batch {args.batch_size}, {len(paths)} photos x {args.rounds} rounds, "
        f"{os.cpu_count()} cores, {image_encoder.PHOTOS_PER_REQUEST} photos per OpenVINO request); photos/s, best "
        "round [every round]"
    )
    for s in settings:
        b, every = best[s], {route: ", ".join(f"{r:.0f}" for r in values) for route, values in rates[s].items()}
        print(f"  {NAMES[s[0]]} {s[1]}{'  (auto here)' if s == default[:2] else ''}")
        print(
            f"    forward only {b['forward']:7.1f} [{every['forward']}]   decode only {b['decode']:7.1f} "
            f"[{every['decode']}]   end to end {b['full']:7.1f} [{every['full']}]"
        )
        print(
            f"    = {b['full'] / bound[s]:.2f} of the combined bound ({bound[s]:.1f}), "
            f"{b['full'] / best[REFERENCE]['full']:.2f}x TensorFlow float32 end to end; cosine to TensorFlow "
            f"float32 min {cosine[s]:.5f}"
        )
    print(
        f"  decode only in {os.cpu_count()} processes (not the product's; for comparison): {max(processes):.1f} "
        f"[{', '.join(f'{r:.0f}' for r in processes)}]"
    )
    d = (default.runtime, default.precision)
    print(f"\ndefault settings: {default.describe()}")
    print(
        f"extraction: {best[d]['full'] / best[REFERENCE]['full']:.2f}x TensorFlow float32, "
        f"{best[d]['full'] / bound[d]:.2f} of the combined bound, cosine min {cosine[d]:.4f}"
    )


def request_sizes(args: argparse.Namespace) -> None:
    """OpenVINO's forward pass per photos-per-request, in each precision, interleaved."""
    _, paths, cfg = sample_products(args.config, args.images)
    encoders = {
        p: ImageEncoder(
            args.backbone, weights_for(args.backbone, cfg), batch_size=args.batch_size, runtime="openvino", precision=p
        ).fit()
        for p in ("float32", "bfloat16")
    }
    decoded = np.stack([decode_image(p, encoders["float32"].size).pixels for p in paths])
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for precision, encoder in encoders.items():
            for n in args.request_sizes:
                image_encoder.PHOTOS_PER_REQUEST = n
                rates.setdefault((precision, n), []).append(forward_rate(encoder, decoded))
    print(
        f"\nOpenVINO forward only, {len(paths)} photos x {args.rounds} rounds, "
        f"{encoders['float32'].forward_.requests} requests in flight; photos/s, best round [every round]"
    )
    for (precision, n), values in rates.items():
        every = ", ".join(f"{r:.0f}" for r in values)
        print(f"  {precision:8s} {n:3d} photos per request {max(values):7.1f} [{every}]")


def probe(args: argparse.Namespace) -> None:
    """One forward-only timing under one CPU setting, printed as a JSON line for the parent process."""
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(args.threads[1])
    _, paths, cfg = sample_products(args.config, args.images)
    batch = args.probe_batch or args.batch_size
    reference = ImageEncoder(
        args.probe, weights_for(args.probe, cfg), batch_size=batch, runtime="tensorflow", precision="float32"
    )
    decoded = np.stack([decode_image(p, reference.size).pixels for p in paths])
    result = {}
    if args.bf16:
        fp32 = reference.fit().transform(decoded)
        # TensorFlow's oneDNN rewrite is a process-wide switch (so the library offers the Keras policy instead).
        if args.bf16 == "onednn":
            tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
        encoder = ImageEncoder(
            args.probe,
            weights_for(args.probe, cfg),
            batch_size=batch,
            runtime="tensorflow",
            precision="bfloat16" if args.bf16 == "keras" else "float32",
        )
    else:
        encoder = reference
    encoder.fit()
    if args.graph != "frozen":  # the Keras model called in a tf.function, weights as variables (XLA-compiled or not)
        model = encoder.model_
        encoder.forward_ = tf.function(
            lambda x: tf.cast(model(tf.cast(x, tf.float32), training=False), tf.float32),
            jit_compile=args.graph == "xla",
            reduce_retracing=True,
        )
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
        cmd = [
            sys.executable,
            __file__,
            "--config",
            str(args.config),
            "--images",
            str(n),
            "--batch-size",
            str(args.batch_size),
            "--probe",
            backbone,
            *options,
        ]
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
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=SETTINGS,
        choices=SETTINGS,
        metavar="RUNTIME:PRECISION",
        help="TensorFlow float32 (the reference) and `auto`'s pick are always timed",
    )
    parser.add_argument("--backbone", default="b0", choices=["b0", "b3"])
    parser.add_argument("--request-sizes", type=int, nargs="+", help="time OpenVINO per photos-per-request instead")
    parser.add_argument("--explore", action="store_true", help="time TensorFlow CPU settings instead, one process each")
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
    if args.explore:
        explore(args, args.backbone)
    elif args.request_sizes:
        request_sizes(args)
    else:
        bench(args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak RSS of this process {peak:.2f} GiB; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
