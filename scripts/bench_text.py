"""Text feature throughput: TextVectorizer fit and transform (docs/s) and `extract_text` end to end, with peak memory.

Runs on the Flipkart product names (../shared/data/flipkart/products.csv beside this repo) and on a larger
catalogue made by repeating them (200,000 rows by default), with the vocabulary settings of configs/flipkart.yaml.

    python scripts/bench_text.py [--data PATH] [--rows 200000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from mmgbm.catalogue import read_table
from mmgbm.config import load_config
from mmgbm.features.text import new_vectorizer
from mmgbm.stores import extract_text

REPO = Path(__file__).resolve().parents[1]
FLIPKART_CONFIG = REPO / "configs" / "flipkart.yaml"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(label: str, n: int, work) -> object:
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    print(f"{label:<44} {n:>9,} docs {seconds:7.2f} s {n / seconds:>10,.0f} docs/s   peak RSS {peak_rss_mb():,.0f} MB")
    return result


def bench_vectorizer(names: list[str], label: str) -> None:
    vectorizer = new_vectorizer(load_config(FLIPKART_CONFIG).features.text)
    timed(f"{label}: fit", len(names), lambda: vectorizer.fit(names))
    matrix = timed(f"{label}: transform", len(names), lambda: vectorizer.transform(names))
    print(f"{'':<44} {vectorizer.n_columns_:,} columns, {matrix.nnz / len(names):.1f} non-zeros per doc")


def bench_extract(frame: pd.DataFrame, id_column: str) -> None:
    """The whole command on a temporary catalogue: read, fit on train (80%), transform all, write shards."""
    with tempfile.TemporaryDirectory() as tmp:
        frame.to_parquet(Path(tmp) / "products.parquet")
        raw = yaml.safe_load(FLIPKART_CONFIG.read_text())
        raw["workdir"] = "work"
        raw["data"]["splits"] = {"train": "products.parquet"}
        # The table holds only ids and names: text extraction needs no metadata or target columns.
        raw["data"]["categorical_columns"] = raw["data"]["numeric_columns"] = []
        raw["targets"] = {}
        config = Path(tmp) / "mmgbm.yaml"
        config.write_text(yaml.safe_dump(raw))
        cfg = load_config(config)
        summary = timed("extract_text end to end", len(frame), lambda: extract_text(cfg))
        print(summary.describe())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "flipkart" / "products.csv")
    parser.add_argument("--rows", type=int, default=200_000, help="size of the repeated catalogue")
    args = parser.parse_args()

    id_column = load_config(FLIPKART_CONFIG).data.id_column
    frame = read_table(args.data, id_column)[[id_column, "product_name"]]
    names = frame["product_name"].tolist()
    bench_vectorizer(names, f"flipkart names ({len(names):,})")

    copies = -(-args.rows // len(frame))
    big = pd.concat(
        [frame.assign(**{id_column: frame[id_column] + f"-{k}"}) for k in range(copies)], ignore_index=True
    ).iloc[: args.rows]
    bench_vectorizer(big["product_name"].tolist(), f"repeated ({len(big):,})")
    bench_extract(big, id_column)


if __name__ == "__main__":
    main()
