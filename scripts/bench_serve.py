"""Latency and throughput of `mmgbm serve` on this machine, against the image encoder's own forward-only speed.

Starts the service on 127.0.0.1 (a free port) with the config's trained models, then sends a bounded number of
requests, every photo posted as base64 bytes as a listing form would:
  1. single products with a photo, one request at a time: p50 / p99 latency;
  2. batches of 32 products: products/s, next to the encoder's forward-only bound measured in this process on the
     same 32-image batches (decoded once beforehand: the bound leaves out decoding and everything else), each
     forward pass right after the served batch of the same photos;
  3. 4 concurrent clients sending single products for --duration seconds: requests, errors, p50 / p99.

    .venv/bin/python scripts/bench_serve.py [--config configs/fashion.yaml] [--workdir DIR] [-t articleType ...]

The targets must be trained first (`mmgbm train -c configs/fashion.yaml -t articleType -t baseColour`); any
models do, as long as they were trained on the config's features (bench_audit.py leaves some in runs/bench_audit).
"""

from __future__ import annotations

import argparse
import base64
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.service: the service in a child process, as the tests run it

from mmgbm.catalogue import load_split  # noqa: E402
from mmgbm.config import load_config  # noqa: E402
from mmgbm.features.image_decoding import decode_image  # noqa: E402
from mmgbm.features.image_encoder import ImageEncoder  # noqa: E402
from mmgbm.features.photos import Photos  # noqa: E402
from mmgbm.stores import image_encoder_choice  # noqa: E402
from tests.service import service_process  # noqa: E402

BATCH = 32


def timed_post(client: httpx.Client, products: list[dict]) -> float:
    started = time.perf_counter()
    response = client.post("/predict", json=products)
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text}")
    return time.perf_counter() - started


def describe(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms over {len(ms)} requests"


def load_products(cfg, n: int) -> tuple[list[dict], list[str]]:
    """n holdout products with a photo, as the service takes them (photo as base64), and their photo paths."""
    frame = load_split(cfg, cfg.data.holdout.name if cfg.data.holdout else "train", with_targets=False)
    frame = frame[frame[cfg.data.image_column].notna()].head(n)
    paths = Photos.of(cfg.data).paths(frame[cfg.data.image_column])
    columns = [cfg.data.id_column, *cfg.data.text_columns, *cfg.data.categorical_columns, *cfg.data.numeric_columns]
    products = []
    for row, path in zip(frame[columns].to_dict("records"), paths):
        product = {
            k: (str(v) if k != cfg.data.id_column and k not in cfg.data.numeric_columns else v)
            for k, v in row.items()
            if v == v
        }  # v == v: not NaN
        product["image_base64"] = base64.b64encode(Path(path).read_bytes()).decode()
        products.append(product)
    return products, paths


def forward_only(cfg, paths: list[str]) -> Callable[[int], float]:
    """Seconds of the encoder's forward pass alone on batch i's photos, decoded beforehand (warmed up)."""
    image, made = cfg.features.image, image_encoder_choice(cfg)  # the service's encoder, as it builds it
    encoder = ImageEncoder(
        image.backbone, image.weights, image.image_size, BATCH, made.precision, made.runtime, performance_hint="latency"
    ).fit()
    batches = [
        np.stack([decode_image(p, encoder.size).pixels for p in paths[i : i + BATCH]])
        for i in range(0, len(paths) - BATCH + 1, BATCH)
    ]
    encoder.embed_batch(batches[0])

    def seconds(i: int) -> float:
        started = time.perf_counter()
        encoder.embed_batch(batches[i])
        return time.perf_counter() - started

    return seconds


def concurrent_load(client: httpx.Client, products: list[dict], clients: int, duration: float) -> None:
    latencies, errors = [], []
    stop = time.monotonic() + duration

    def work(offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            try:
                latencies.append(timed_post(client, [products[i % len(products)]]))
            except Exception as exc:  # every failure counts, whatever its kind
                errors.append(exc)
            i += clients

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(
        f"{clients} concurrent clients for {duration:.0f}s: {len(latencies)} answered, {len(errors)} errors; "
        f"{describe(latencies)}" + (f"; first error: {errors[0]}" if errors else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion.yaml")
    parser.add_argument("--workdir", type=Path, help="workdir holding the trained models (default: the config's)")
    parser.add_argument("-t", "--target", action="append", help="targets to serve (default: articleType, baseColour)")
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    targets = args.target or ["articleType", "baseColour"]
    cfg = load_config(args.config, {"workdir": str(args.workdir.resolve())} if args.workdir else None)
    products, paths = load_products(cfg, max(args.singles, args.batches * BATCH))

    started = time.perf_counter()
    with (
        service_process(args.config, targets, ["--workdir", str(cfg.workdir)], cwd=REPO) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        print(f"service up in {time.perf_counter() - started:.1f}s serving {', '.join(targets)}")
        for product in products[:5]:  # warm-up: first calls set up TensorFlow's and LightGBM's caches
            timed_post(client, [product])
        singles = [timed_post(client, [p]) for p in products[: args.singles]]
        print(f"one product with a photo: {describe(singles)}")
        timed_post(client, products[:BATCH])  # warm-up: the first batch of a new size sets up TensorFlow's kernels
        # Each served batch is followed by the bare forward pass on the same photos, so both figures of the ratio
        # see the same phases of a machine whose speed swings by a third within an hour.
        bound = forward_only(cfg, paths[: args.batches * BATCH])
        batches, forwards = [], []
        for i in range(args.batches):
            batches.append(timed_post(client, products[i * BATCH : (i + 1) * BATCH]))
            forwards.append(bound(i))
        served, forward = BATCH * len(batches) / sum(batches), BATCH * len(forwards) / sum(forwards)
        print(
            f"batches of {BATCH}: {describe(batches)}; {served:.1f} products/s; encoder forward-only bound "
            f"{forward:.1f} images/s on the same photos, interleaved -> {served / forward:.0%} of the bound"
        )
        concurrent_load(client, products, clients=4, duration=args.duration)


if __name__ == "__main__":
    main()
