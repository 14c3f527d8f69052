"""Photos by URL against the same photos as local files: does fetching keep up with embedding?

Serves N real catalogue photos from local threaded HTTP servers on 127.0.0.1 (each in its own process, so the
server's Python does not share this process's interpreter lock), with 0, 100 and 300 ms of latency added to every
answer, and runs the library's extract_images() on the same N products three ways: image values as paths under a
folder (local files), as URLs on a server (data.remote_images), and as URLs of which a share hang for ever or are
bad (404, 500, a trickling body, an HTML page). Every run starts from an empty store and uses the real encoder;
photos/s is over extraction's embedding loop (model build excluded), local-file runs before and after the remote
ones, their mean the reference. Ends with

    fetch: 100 ms Ax, 300 ms Bx of local files; 1% hung +C%

A and B the remote photos/s over the local ones, C the extra time of the run with hung URLs over the clean run at
the same latency. Peak memory is this process's maximum resident set.

    .venv/bin/python scripts/bench_fetch.py [--config configs/fashion.yaml] [--photos 512] [--hung 0.01]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.photo_server: the photo host the tests use

from mmgbm.catalogue import load_all_products  # noqa: E402
from mmgbm.config import Config, load_config  # noqa: E402
from mmgbm.features.images import extract_images  # noqa: E402
from mmgbm.features.photos import Photos  # noqa: E402
from tests.photo_server import photo_server  # noqa: E402


def serve(folder: str, latency: float, ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    with photo_server(Path(folder), latency) as server:
        ports.put(server.server_address[1])
        stop.wait(3600)


def sample(config: Path, n: int) -> tuple[Config, list[str], list[str]]:
    """The config, and ids and image values (relative to images_root) of the first n products with a photo."""
    cfg = load_config(config)
    products = load_all_products(cfg)
    photos = Photos.of(cfg)
    paths = photos.paths(products[cfg.data.image_column])
    keep = [i for i, p in enumerate(paths) if p and Path(p).is_file()][:n]
    values = products[cfg.data.image_column].astype(str)
    return cfg, [products[cfg.data.id_column][i] for i in keep], [values[i] for i in keep]


def run(cfg: Config, ids: list[str], values: list[str], folder: Path, remote: bool) -> tuple[float, float, dict]:
    """(photos/s over the embedding loop, its seconds, failures by reason) of one extraction from an empty store."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "image": values}).to_csv(folder / "products.csv", index=False)
    image = cfg.features.image
    raw = {"workdir": str(folder / "work"),
           "data": {"splits": {"train": str(folder / "products.csv")}, "image_column": "image",
                    "images_root": str(Photos.of(cfg).root), "remote_images": remote,
                    "remote_image_hosts": ["127.0.0.1"]},
           "features": {"image": {"backbone": image.backbone, "weights": image.weights,
                                  "batch_size": image.batch_size}, "text": {"enabled": False}}}
    (folder / "bench.yaml").write_text(yaml.safe_dump(raw))
    summary = extract_images(load_config(folder / "bench.yaml"), overwrite=True)
    return summary.images_per_second, summary.embedding_seconds, summary.failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion.yaml")
    parser.add_argument("--photos", type=int, default=512)
    parser.add_argument("--hung", type=float, default=0.01, help="share of URLs that hang (and as many bad ones)")
    args = parser.parse_args()
    cfg, ids, values = sample(args.config, args.photos)
    root = str(Photos.of(cfg).root)
    stop, ports = multiprocessing.Event(), multiprocessing.Queue()
    latencies = (0.0, 0.1, 0.3)
    servers = [multiprocessing.Process(target=serve, args=(root, lat, ports, stop), daemon=True) for lat in latencies]
    base = {}
    for latency, process in zip(latencies, servers):
        process.start()
        base[latency] = f"http://127.0.0.1:{ports.get(timeout=60)}"
    print(f"{len(ids)} photos of {args.config.name}, fetch settings: {cfg.data.fetch.model_dump()}")
    rates, seconds = {}, {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
            local_rates = [run(cfg, ids, values, Path(tmp) / "local-0", remote=False)[0]]
            for latency in latencies:
                urls = [f"{base[latency]}/photos/{v}" for v in values]
                rates[latency], seconds[latency], _ = run(cfg, ids, urls, Path(tmp) / f"remote-{latency}", True)
                print(f"  URLs, {latency * 1000:3.0f} ms latency: {rates[latency]:6.1f} photos/s "
                      f"({seconds[latency]:.1f} s)")
            local_rates.append(run(cfg, ids, values, Path(tmp) / "local-1", remote=False)[0])
            local = sum(local_rates) / len(local_rates)
            print(f"  local files:                {local:6.1f} photos/s (runs: "
                  f"{', '.join(f'{r:.1f}' for r in local_rates)})")
            n_bad = max(1, round(args.hung * len(ids)))
            kinds = ["hang/x.jpg", "status/404/x.jpg", "status/500/x.jpg", "slow/x.jpg", "html/x.jpg"]
            step = len(ids) // n_bad
            urls = [f"{base[0.1]}/photos/{v}" for v in values]
            for k in range(n_bad):  # spread through the list: the hung ones sit among good photos, not at the end
                urls[k * step] = f"{base[0.1]}/hang/{k}.jpg"
                urls[k * step + step // 2] = f"{base[0.1]}/{kinds[1 + k % 4].replace('x.jpg', f'{k}.jpg')}"
            _, hung_seconds, failures = run(cfg, ids, urls, Path(tmp) / "hung", True)
            extra = hung_seconds / seconds[0.1] - 1
            print(f"  URLs, 100 ms, {n_bad} hung + {n_bad} bad: {hung_seconds:.1f} s, failures {failures}")
    finally:
        stop.set()
        for process in servers:
            process.join(timeout=30)
    fetch = cfg.data.fetch
    print(f"  bound on the hung run's extra time: read timeout {fetch.read_timeout:.0f} s (a hung host is not tried "
          f"again) + 10% = {fetch.read_timeout + 0.1 * seconds[0.1]:.1f} s; seen {hung_seconds - seconds[0.1]:.1f} s")
    print(f"  peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"fetch: 100 ms {rates[0.1] / local:.2f}x, 300 ms {rates[0.3] / local:.2f}x of local files; "
          f"{args.hung:.0%} hung +{extra:.0%}")


if __name__ == "__main__":
    main()
