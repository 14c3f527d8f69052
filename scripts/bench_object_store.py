"""The feature store on a local S3 server (moto, through s3fs) against the same store in a folder.

Writes `--shards` shards of 64 products x 1,280 floats (B0 embeddings' shape) to each, then times what every run
does: `prepare_writing` (damage check + sources), `present_ids`, `read_dense` of every product. The S3 store is
read twice: one shard at a time with whole-shard damage checks (as a folder is read) and with the object-storage
defaults (16 reads in flight, footers only). moto's server runs in this process (or at `--endpoint`, e.g. one
started with `moto_server -p 5123`) and is CPU-bound on two cores, so this counts requests more than it measures a
real bucket, whose latency is what reads in flight hide.

    python scripts/bench_object_store.py [--shards 300] [--endpoint http://127.0.0.1:5123]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import numpy as np

from mmgbm.features.folder import ObjectFolder, folder
from mmgbm.features.store import FeatureStore, dense_table

FINGERPRINT = {"kind": "bench"}


def timed(store: FeatureStore) -> list[float]:
    seconds = []
    for step in (store.prepare_writing, store.present_ids, lambda: store.read_dense(sorted(store.present_ids()))):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=300)
    parser.add_argument("--endpoint", help="an S3 server already running (default: moto in this process)")
    args = parser.parse_args()
    server = None
    if args.endpoint is None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        args.endpoint = f"http://{host}:{port}"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    options = {"endpoint_url": args.endpoint}
    import s3fs

    s3fs.S3FileSystem(**options).mkdir("bench")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        where = {"folder": folder(tmp), "s3": folder("s3://bench/b0", options)}
        for location in where.values():
            store = FeatureStore(location, FINGERPRINT)
            for i in range(args.shards):
                store.write_shard(dense_table([f"p{i}-{j}" for j in range(64)], rng.normal(size=(64, 1280))))
        rows = {"folder": timed(FeatureStore(folder(tmp), FINGERPRINT))}
        defaults = ObjectFolder.read_threads, ObjectFolder.verify_whole_files
        ObjectFolder.read_threads, ObjectFolder.verify_whole_files = 1, True
        rows["s3, one at a time, whole"] = timed(FeatureStore(folder("s3://bench/b0", options), FINGERPRINT))
        ObjectFolder.read_threads, ObjectFolder.verify_whole_files = defaults
        rows["s3, defaults"] = timed(FeatureStore(folder("s3://bench/b0", options), FINGERPRINT))
    if server is not None:
        server.stop()
    print(f"\n{args.shards} shards of 64 x 1,280 float32")
    print(f"{'store':<26} {'prepare_writing':>16} {'present_ids':>12} {'read_dense':>11}")
    for name, (prepare, present, dense) in rows.items():
        print(f"{name:<26} {prepare:>15.2f}s {present:>11.2f}s {dense:>10.2f}s")


if __name__ == "__main__":
    main()
