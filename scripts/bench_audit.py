"""How well `mmgbm audit` finds wrong labels: flip 5% of the training labels of fashion articleType and baseColour,
train on the flipped table, audit, and print the precision and recall of the flipped products among the top 5%.

Flips are realistic: most go to a class the model confuses the true one with (drawn from the off-diagonal of the
out-of-fold confusion matrix of a model trained on the clean labels), the rest to any other class. The audit also
flags labels nobody flipped: the catalogue's own errors. Of those in the top 5% it counts the ones whose title names
the suggested label and not the given one (the seller's own words contradict the label), and prints a second
precision that counts them as found errors; 20 of them, with their titles, are printed for a person to judge
against the photos.

    .venv/bin/python scripts/bench_audit.py [--config configs/fashion.yaml] [--fraction 0.05] [--seed 0]

Works in runs/bench_audit (its own text features and models), reading the config's stored image features.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mmgbm.catalogue import in_holdout, read_table
from mmgbm.commands.artifact import load_artifact
from mmgbm.commands.audit import audit
from mmgbm.commands.train import train
from mmgbm.config import Config, load_config
from mmgbm.estimator.heads import mention_words
from mmgbm.features.text import extract_text
from mmgbm.workdir import image_dir, model_dir

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("articleType", "baseColour")
CONFUSED_SHARE = 0.75  # of the flips, those that go to a class the model confuses the true one with


def bench_config(base: Path, workdir: Path, table: Path) -> Config:
    """The config reading `table` as its catalogue, with everything it writes under `workdir`; the image features
    are the base config's, linked in (flipping a label does not change a photo)."""
    source = image_dir(load_config(base)).root
    cfg = load_config(base, {"workdir": str(workdir), "data.splits.train": str(table)})
    link = image_dir(cfg).root
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source.resolve(), target_is_directory=True)
    return cfg


def flip(frame: pd.DataFrame, column: str, train_rows: np.ndarray, classes: np.ndarray, confused: np.ndarray,
         fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Flip `fraction` of the training rows' labels in place; returns the flipped row numbers."""
    rows = rng.choice(train_rows, int(round(fraction * len(train_rows))), replace=False)
    index = {c: i for i, c in enumerate(classes)}
    for row in rows:
        true = index[frame.at[row, column]]
        weights = confused[true]
        if rng.random() < CONFUSED_SHARE and weights.sum() > 0:
            new = rng.choice(len(classes), p=weights / weights.sum())
        else:
            new = rng.choice([i for i in range(len(classes)) if i != true])
        frame.at[row, column] = classes[new]
    return rows


def names(title: str, label: str) -> bool:
    """Whether the title holds the label's words as a run (case, plurals aside)."""
    text, words = " ".join(mention_words(title)), " ".join(mention_words(label))
    return bool(words) and f" {words} " in f" {text} "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion.yaml")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench_audit")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    base = load_config(args.config)
    clean_table = Path(base.data.splits["train"])
    clean = bench_config(args.config, args.workdir, clean_table)
    extract_text(clean)
    frame = read_table(clean_table, base.data.id_column)
    holdout = base.data.holdout
    in_train = ~in_holdout(frame[base.data.id_column], holdout.fraction, holdout.seed).to_numpy()
    rng = np.random.default_rng(args.seed)

    flipped = frame.copy()
    flipped_ids = {}
    for target in TARGETS:
        started = time.perf_counter()
        train(clean, [target])
        model = load_artifact(model_dir(clean, target), target).model
        column = base.targets[target].column
        train_rows = np.flatnonzero(in_train & frame[column].notna().to_numpy())
        truth = np.searchsorted(model.classes_, frame[column].to_numpy()[train_rows].astype(str))
        predicted = model.oof_proba_.argmax(axis=1)  # fit order: the training rows with a label, as here
        assert len(predicted) == len(train_rows)
        confused = np.zeros((len(model.classes_),) * 2)
        np.add.at(confused, (truth, predicted), 1)
        np.fill_diagonal(confused, 0)
        rows = flip(flipped, column, train_rows, model.classes_, confused, args.fraction, rng)
        flipped_ids[target] = set(frame[base.data.id_column].iloc[rows])
        print(f"{target}: clean model trained in {time.perf_counter() - started:.0f}s; flipped {len(rows):,} of "
              f"{len(train_rows):,} training labels", flush=True)
    table = args.workdir / "products_flipped.csv"
    flipped.to_csv(table, index=False)

    noisy = bench_config(args.config, args.workdir, table)
    clean_labels = frame.set_index(base.data.id_column)
    for target in TARGETS:
        started = time.perf_counter()
        train(noisy, [target])
        result = audit(noisy, target)
        ranked = result.ranked
        depth = int(np.ceil(args.fraction * len(ranked)))
        top = ranked.head(depth)
        hits = int(top["id"].isin(flipped_ids[target]).sum())
        print(f"\n{target}: {len(ranked):,} training products, {len(flipped_ids[target]):,} flipped; top {depth:,} "
              f"({args.fraction:.0%}) of the audit: precision {hits / depth:.3f}, recall "
              f"{hits / len(flipped_ids[target]):.3f} ({time.perf_counter() - started:.0f}s to train + audit; "
              f"{result.source})")
        original = top[~top["id"].isin(flipped_ids[target])]
        contradicted = [names(t, s) and not names(t, g)
                        for t, s, g in zip(original["title"], original["suggested_label"], original["given_label"])]
        print(f"{len(original)} ORIGINAL labels flagged in the top {depth:,}; the title names the suggested label and "
              f"not the given one for {sum(contradicted)}: counting those as found errors, precision "
              f"{(hits + sum(contradicted)) / depth:.3f}. The first {min(20, len(original))}:")
        unflipped = original.head(20)
        for row, title_agrees in zip(unflipped.itertuples(), contradicted):
            assert clean_labels.at[row.id, base.targets[target].column] == row.given_label
            print(f"  {row.id:>6}  given {row.given_label!r:22} suggested {row.suggested_label!r:22} "
                  f"{row.confidence_wrong:.2f} [{row.modality}]{' title agrees' if title_agrees else ''}  {row.title}")
        print(f"report: {result.html_path}")


if __name__ == "__main__":
    main()
