"""Does `mmgbm drift` flag what it should? Train fashion's masterCategory with a holdout, then predict batches of
held-out products and compare each with the model's out-of-fold answers, as a nightly run would:

    fresh     --draws random batches of --size held-out products: none should be flagged
    shifted   a batch of the same size where one master category is removed (--removed) and another's share is
              doubled (--doubled), the rest in proportion: it should be flagged

Prints one line per batch (verdict, total variation against its bound, the low-confidence share then and now), then
drift's own report of the shifted batch. Works in runs/bench_drift (its own features and models). Image features
are off unless --images (they need the fashion photos embedded first, `mmgbm extract-images`): the comparison reads
only the answered labels and their probabilities.

    .venv/bin/python scripts/bench_drift.py [--config configs/fashion.yaml] [--target masterCategory] [--size 300]
        [--draws 5] [--removed Footwear] [--doubled Accessories] [--images]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmgbm.catalogue import load_split  # noqa: E402
from mmgbm.commands.predict import predict  # noqa: E402
from mmgbm.commands.train import train  # noqa: E402
from mmgbm.config import Config, load_config  # noqa: E402
from mmgbm.drift import DriftReport, drift  # noqa: E402
from mmgbm.stores import extract_text  # noqa: E402
from mmgbm.workdir import model_dir  # noqa: E402


def shifted_batch(held_out: pd.DataFrame, column: str, size: int, removed: str, doubled: str, rng) -> pd.DataFrame:
    """`size` held-out products whose label shares are the held-out ones with `removed` gone and `doubled`'s share
    twice as large, renormalised."""
    shares = held_out[column].value_counts(normalize=True)
    shares[removed] = 0.0
    shares[doubled] *= 2
    counts = (shares / shares.sum() * size).round().astype(int)
    parts = [
        held_out[held_out[column] == label].sample(n, replace=n > (held_out[column] == label).sum(), random_state=rng)
        for label, n in counts.items()
        if n > 0
    ]
    return pd.concat(parts).sample(frac=1, random_state=rng)


def judged(cfg: Config, target: str, batch: pd.DataFrame, path: Path) -> DriftReport:
    batch.drop(columns=[cfg.targets[target].column]).to_csv(path, index=False)
    predict(cfg, [target], input_path=path)
    return drift(cfg, target)


def summary(name: str, report: DriftReport) -> str:
    then, now = report.reference.low_share(report.low_confidence), report.batch.low_share(report.low_confidence)
    verdict = "FLAGGED" if report.flagged else "passed"
    return (
        f"{name}: {report.batch.total} products {verdict}; total variation {report.labels.total_variation:.3f} "
        f"({report.labels.bound()}); low confidence {100 * then:.1f}% then, {100 * now:.1f}% now "
        f"({report.low.bound()})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion.yaml")
    parser.add_argument("--target", default="masterCategory")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--removed", default="Footwear")
    parser.add_argument("--doubled", default="Accessories")
    parser.add_argument("--images", action="store_true")
    args = parser.parse_args()

    workdir = REPO / "runs" / "bench_drift"
    cfg = load_config(args.config, {"workdir": str(workdir), "features.image.enabled": args.images})
    start = time.perf_counter()
    if not (model_dir(cfg, args.target) / "manifest.json").is_file():
        extract_text(cfg)
        train(cfg, [args.target], force=True)
        print(f"trained {args.target} in {time.perf_counter() - start:.0f}s")
    held_out = load_split(cfg, "test")
    column = cfg.targets[args.target].column
    rng = np.random.default_rng(0)
    inputs = workdir / "batches"
    inputs.mkdir(parents=True, exist_ok=True)
    fresh = []
    for draw in range(args.draws):
        batch = held_out.sample(args.size, random_state=rng)
        fresh.append(judged(cfg, args.target, batch, inputs / f"fresh_{draw}.csv"))
        print(summary(f"fresh batch {draw + 1}", fresh[-1]), flush=True)
    batch = shifted_batch(held_out, column, args.size, args.removed, args.doubled, rng)
    shifted = judged(cfg, args.target, batch, inputs / "shifted.csv")
    print(summary(f"shifted batch (no {args.removed}, {args.doubled} doubled)", shifted))
    print(f"fresh batches flagged: {sum(r.flagged for r in fresh)} of {len(fresh)}; shifted flagged: {shifted.flagged}")
    print(shifted.describe())


if __name__ == "__main__":
    main()
