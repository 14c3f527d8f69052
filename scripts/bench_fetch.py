"""Photos by URL against the same photos as local files: does fetching keep up with embedding?

Serves N real catalogue photos from local threaded HTTP servers on 127.0.0.1 (each in its own process, so the
server's Python does not share this process's interpreter lock), with 0, 100 and 300 ms of latency added to every
answer, and runs the library's extract_images() on the same N products three ways: image values as paths under a
folder (local files), as URLs on a server (data.remote_images), and as URLs of which a share hang for ever or are
bad (404, 500, a trickling body, an HTML page). Every run starts from an empty store and uses the real encoder;
photos/s is over extraction's embedding loop (model build excluded), the routes run in interleaved rounds and the
best round of each is compared (this machine's 2 cores are shared with other work). Ends with

    fetch: 100 ms Ax, 300 ms Bx of local files; 1% hung +C%

A and B the remote photos/s over the local ones, C the extra time of the run with hung URLs over the clean run at
the same latency. Peak memory is this process's maximum resident set.

    .venv/bin/python scripts/bench_fetch.py [--config configs/fashion.yaml] [--photos 512] [--hung 0.01]
                                            [--rounds 2] [--fetch per_host=64 ...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.photo_server: the photo host the tests use

from mmgbm.catalogue import load_all_products  # noqa: E402
from mmgbm.config import Config, load_config  # noqa: E402
from mmgbm.features.photos import Photos  # noqa: E402
from mmgbm.stores import extract_images  # noqa: E402
from tests.photo_server import photo_server  # noqa: E402


def serve(folder: str, latency: float, ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    with photo_server(Path(folder), latency) as server:
        ports.put((latency, server.server_address[1]))
        stop.wait(3600)


def spread(values: list[str], base: str, bad: list[str]) -> list[str]:
    """The photos' URLs with `bad` ones put in evenly among them: they sit among good photos, not at the end."""
    urls = [f"{base}/photos/{v}" for v in values]
    step = len(urls) // len(bad)
    for k, path in enumerate(bad):
        urls[k * step + step // 2] = f"{base}/{path}"
    return urls


def sample(config: Path, n: int) -> tuple[Config, list[str], list[str]]:
    """The config, and ids and image values (relative to images_root) of the first n products with a photo."""
    cfg = load_config(config)
    products = load_all_products(cfg)
    photos = Photos.of(cfg.data)
    paths = photos.paths(products[cfg.data.image_column])
    keep = [i for i, p in enumerate(paths) if p and Path(p).is_file()][:n]
    values = products[cfg.data.image_column].astype(str)
    return cfg, [products[cfg.data.id_column][i] for i in keep], [values[i] for i in keep]


def run(cfg: Config, ids: list[str], values: list[str], folder: Path, remote: bool) -> tuple[float, float, dict]:
    """(photos/s over the embedding loop, its seconds, failures by reason) of one extraction from an empty store."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "image": values}).to_csv(folder / "products.csv", index=False)
    image = cfg.features.image
    raw = {
        "workdir": str(folder / "work"),
        "data": {
            "splits": {"train": str(folder / "products.csv")},
            "image_column": "image",
            "images_root": str(Photos.of(cfg.data).root),
            "remote_images": remote,
            "remote_image_hosts": ["127.0.0.1"],
            "fetch": cfg.data.fetch.model_dump(),
        },
        "features": {
            "image": {"backbone": image.backbone, "weights": image.weights, "batch_size": image.batch_size},
            "text": {"enabled": False},
        },
    }
    (folder / "bench.yaml").write_text(yaml.safe_dump(raw))
    summary = extract_images(load_config(folder / "bench.yaml"), overwrite=True)
    return summary.images_per_second, summary.embedding_seconds, summary.failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion.yaml")
    parser.add_argument("--photos", type=int, default=512)
    parser.add_argument("--hung", type=float, default=0.01, help="share of URLs that hang (and as many bad ones)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--fetch",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a data.fetch setting for the URL runs, e.g. per_host=64",
    )
    args = parser.parse_args()
    cfg, ids, values = sample(args.config, args.photos)
    for key, _, value in (item.partition("=") for item in args.fetch):
        setattr(cfg.data.fetch, key, yaml.safe_load(value))
    root = str(Photos.of(cfg.data).root)
    stop, ports = multiprocessing.Event(), multiprocessing.Queue()
    latencies = (0.0, 0.1, 0.3)
    servers = [multiprocessing.Process(target=serve, args=(root, lat, ports, stop), daemon=True) for lat in latencies]
    for process in servers:
        process.start()
    base = {latency: f"http://127.0.0.1:{port}" for latency, port in (ports.get(timeout=60) for _ in servers)}
    print(
        f"{len(ids)} photos of {args.config.name} x {args.rounds} rounds, fetch settings: {cfg.data.fetch.model_dump()}"
    )
    n_bad = max(1, round(args.hung * len(ids)))
    hung_name, bad_name = f"URLs, 100 ms, {n_bad} hung", f"URLs, 100 ms, {n_bad} bad"
    routes = {
        "local files": (values, False),
        **{f"URLs, {lat * 1000:.0f} ms": ([f"{base[lat]}/photos/{v}" for v in values], True) for lat in latencies},
        hung_name: (spread(values, base[0.1], [f"hang/{k}.jpg" for k in range(n_bad)]), True),
        bad_name: (
            spread(
                values,
                base[0.1],
                [
                    ("status/404/x.jpg", "status/500/x.jpg", f"slow/{values[0]}", "html/x.jpg")[k % 4]
                    for k in range(n_bad)
                ],
            ),
            True,
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in routes}
    seconds: dict[str, list[float]] = {name: [] for name in routes}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
            for r in range(args.rounds):  # interleaved: load from elsewhere on the machine hits every route alike
                for i, (name, (images, remote)) in enumerate(routes.items()):
                    rate, took, failures = run(cfg, ids, images, Path(tmp) / f"{r}-{i}", remote)
                    rates[name].append(rate)
                    seconds[name].append(took)
                    print(
                        f"  round {r + 1}  {name:28s} {rate:6.1f} photos/s  {took:5.1f} s"
                        + (f"  failures {failures}" if failures else "")
                    )
    finally:
        stop.set()
        for process in servers:
            process.join(timeout=30)
    best = {name: max(values) for name, values in rates.items()}
    fastest = {name: min(values) for name, values in seconds.items()}
    clean, hung, bad = fastest["URLs, 100 ms"], fastest[hung_name], fastest[bad_name]
    local = best["local files"]
    fetch = cfg.data.fetch
    print("best round of each:")
    for name in routes:
        print(f"  {name:28s} {best[name]:6.1f} photos/s  {best[name] / local:.2f}x of local files")
    print(
        f"  the run with hung URLs took {hung - clean:.1f} s more than the clean one; the goal's bound: read timeout "
        f"{fetch.read_timeout:.0f} s (a host that does not answer is not tried again) + 10% of the clean run = "
        f"{fetch.read_timeout + 0.1 * clean:.1f} s"
    )
    print(
        f"  the run with bad URLs took {bad - clean:.1f} s more; a trickling body is cut at the whole-try timeout "
        f"({fetch.total_timeout:.0f} s), 5xx answers after {fetch.tries} tries"
    )
    print(f"  peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(
        f"fetch: 100 ms {best['URLs, 100 ms'] / local:.2f}x, 300 ms {best['URLs, 300 ms'] / local:.2f}x of local "
        f"files; {args.hung:.0%} hung +{hung / clean - 1:.0%}"
    )


if __name__ == "__main__":
    main()
