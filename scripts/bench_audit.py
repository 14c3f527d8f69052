"""How well `mmgbm audit` finds wrong labels: flip 5% of the training labels of fashion articleType and baseColour,
train on the flipped table, audit, and print the precision and recall of the flipped products among the top 5%.

Two noise models (--noise), both read from the out-of-fold probabilities of a model trained on the clean labels:
  confusable (the default, issue 32's measure): people mislabel the products they could mistake, as what they
      mistake them for. A product is picked with probability in proportion to 1 - the clean model's probability of
      its true label, and moved to another label in proportion to that model's probability of it (a plain T-shirt to
      Tops or Shirts, never to Watches): instance-dependent noise. Its flips cost held-out accuracy (1.6 points on
      articleType), and the model trained on them agrees with about a third of them, so no ranking of its
      disagreements finds those.
  uniform: products picked uniformly, moved to any other label uniformly (the classic benchmark of label-error
      finders). The model shrugs them off: averaged over seeds they cost no held-out accuracy beyond retraining
      noise, so the review loop has nothing to recover and prints "n/a".
The audit also flags labels nobody flipped: the catalogue's own errors. Of those in the top 5% it counts the ones
whose title names the suggested label and not the given one (the seller's own words contradict the label), and
prints a second precision that counts them as found errors; 20 of them, with their titles, are printed for a person
to judge against the photos.

Then the review loop, per target of --review (articleType by default): `mmgbm review` serves the audit, a simulated
reviewer answers the top 5% of its suspects with the true labels through the page's own endpoint (keep, take the
suggestion or another label), the model is trained again (train reads the answers: data.corrections) and scored on
the held-out products beside the flipped and the clean model. The flips cost few held-out products, so one training
per arm is mostly retraining noise: each of the three arms (clean labels, flipped, after the round) is trained
--train-seeds times (model.seed = the config's, then +1, +2, ...; default 3, 1 = a single model per arm) and scored
per held-out product as the share of its models that get it right; an arm's accuracy is the mean of its models'.
The flips, the audit and the reviewer run once, from the models of the config's own seed, as with one model.
40% of the products are held out (--holdout) so that the flips' cost stands out of the noise of retraining: the
cost counts only beyond two standard deviations of that noise, within them the share is "n/a". The noise's sd is
the larger of two estimates: a sign test over the held-out products (under "the flips cost nothing" each
product's clean-minus-flipped score is as likely to be negated: the root of the sum of their squares; with one
model per arm, the root of the number of products the two models disagree on), and, from two seeds on, the
seeds' own spread (the models' accuracies about their arm's mean, pooled over the three arms, as the sd of a
difference of two arms' means). The sign test takes the products as independent; a seed moves related products
(one confusable pair of classes) together, and its spread measured so is wider, though an estimate from a few
seeds is rough: hence the larger. It ends with `review loop: recovered P% of the accuracy the flips cost`, with a
90% interval from resampling the held-out products (with their averaged scores).
A screenshot of the page goes to reports/<target>/review.png where headless Chromium is installed (`make browser`).

    .venv/bin/python scripts/bench_audit.py [--config configs/fashion.yaml] [--fraction 0.05] [--seed 0]
        [--noise confusable|uniform] [--holdout 0.4] [--targets articleType --targets baseColour] [--review articleType]
        [--train-seeds 3]

Works in runs/bench_audit (its own text features and models), reading the config's stored image features.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.service and tests.browser: the review service and Chromium, as tests run them

from mmgbm.catalogue import in_holdout, load_split, read_table  # noqa: E402
from mmgbm.commands.artifact import load_artifact  # noqa: E402
from mmgbm.commands.audit import AuditResult, audit  # noqa: E402
from mmgbm.commands.predict import checked_artifact  # noqa: E402
from mmgbm.commands.train import train  # noqa: E402
from mmgbm.config import Config, load_config  # noqa: E402
from mmgbm.estimator import MMGBMClassifier  # noqa: E402
from mmgbm.estimator.heads import mention_words  # noqa: E402
from mmgbm.stores import extract_text, load_products  # noqa: E402
from mmgbm.workdir import image_dir, labels_path, model_dir  # noqa: E402
from tests.browser import chromium, missing_browser  # noqa: E402
from tests.service import service_process  # noqa: E402

TARGETS = ("articleType", "baseColour")
NOISE = ("confusable", "uniform")


def bench_config(
    base: Path, workdir: Path, table: Path, holdout: float, seed: int | None = None, corrections: bool = True
) -> Config:
    """The config reading `table` as its catalogue, with everything it writes under `workdir` (model.seed `seed`
    where given); the image features are the base config's, linked in (flipping a label does not change a photo)."""
    source = image_dir(load_config(base)).root
    overrides = {"data.holdout.fraction": holdout, "data.corrections": corrections}
    if seed is not None:
        overrides["model.seed"] = seed
    cfg = load_config(base, {"workdir": str(workdir), "data.splits.train": str(table), **overrides})
    link = image_dir(cfg).root
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source.resolve(), target_is_directory=True)
    return cfg


def flip(
    frame: pd.DataFrame,
    column: str,
    train_rows: np.ndarray,
    model: MMGBMClassifier,
    noise: str,
    fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Flip `fraction` of the training rows' labels in place, as the noise model says (NOISE); `model` is trained
    on the clean labels and its out-of-fold probabilities (fit order: the training rows with a label, as here) say
    which products and labels are confusable. Returns the flipped row numbers."""
    classes, oof = model.classes_, model.oof_proba_
    assert len(oof) == len(train_rows)
    true = np.searchsorted(classes, frame[column].to_numpy()[train_rows].astype(str))
    others = np.ones_like(oof)
    others[np.arange(len(true)), true] = 0
    if noise == "confusable":
        # The products a model trained on clean labels is unsure of are picked more often, and each moves to a
        # label in proportion to that model's belief in it: the ambiguous products get the plausible wrong labels.
        picked = np.clip(1 - oof[np.arange(len(true)), true], 1e-6, None)
        chosen = rng.choice(len(true), int(round(fraction * len(true))), replace=False, p=picked / picked.sum())
        weights = oof * others
    else:
        chosen = rng.choice(len(true), int(round(fraction * len(true))), replace=False)
        weights = others
    for i in chosen:
        w = weights[i] if weights[i].sum() > 0 else others[i]  # no other class has any probability: any other
        frame.at[train_rows[i], column] = classes[rng.choice(len(classes), p=w / w.sum())]
    return train_rows[chosen]


def names(title: str, label: str) -> bool:
    """Whether the title holds the label's words as a run (case, plurals aside)."""
    text, words = " ".join(mention_words(title)), " ".join(mention_words(label))
    return bool(words) and f" {words} " in f" {text} "


def held_out_hits(cfg: Config, target: str, truth: pd.Series) -> np.ndarray:
    """Per held-out product with a label, in the split's order: whether the model predicts its clean label."""
    frame = load_split(cfg, cfg.data.holdout.name, with_targets=False)
    frame = frame[frame[cfg.data.id_column].map(truth).notna().to_numpy()].reset_index(drop=True)
    products, fingerprints = load_products(cfg, frame)
    predicted = checked_artifact(cfg, target, fingerprints).model.predict(products)
    return predicted == frame[cfg.data.id_column].map(truth).astype(str).to_numpy()


def arm_hits(configs: Callable[[int], Config], target: str, truth: pd.Series, seeds: list[int], arm: str) -> np.ndarray:
    """Train `target` once per seed (`configs(seed)`: the arm's config with that model.seed) and score each model on
    the held-out products: (seeds, products), whether the model predicts the product's clean label. The first seed
    trains last, so its model is the one left in the workdir for what reads it next (the flips, the audit, the
    review)."""
    hits = {}
    for seed in reversed(seeds):
        cfg = configs(seed)
        train(cfg, [target], force=True)
        hits[seed] = held_out_hits(cfg, target, truth)
    print(f"{target}, {arm}: held-out accuracy by model.seed: " + ", ".join(f"{s} {hits[s].mean():.2%}" for s in seeds))
    return np.array([hits[s] for s in seeds])


def retraining_noise(clean: np.ndarray, flipped: np.ndarray, *arms: np.ndarray) -> tuple[float, str]:
    """Two sd of the difference of the clean and the flipped arm's held-out products right under retraining alone,
    and how it was estimated: the larger of a sign test over the products and the seeds' spread (module docstring).
    Each arm is (seeds, products) of hits."""
    d = clean.mean(axis=0) - flipped.mean(axis=0)
    sign = np.sqrt(np.square(d).sum())
    how = f"2 sd of a sign test over the {int((d != 0).sum()):,} products the two arms score differently"
    seeds = len(clean)
    if seeds < 2:
        return 2 * sign, how
    right = np.array([arm.sum(axis=1) for arm in (clean, flipped, *arms)], dtype=float)
    spread = np.sqrt(2 * right.var(axis=1, ddof=1).mean() / seeds)
    how += f" ({2 * sign:.0f}) or of the {seeds} seeds' spread ({2 * spread:.0f}), the larger"
    return 2 * max(sign, spread), how


def recovered_share(clean: np.ndarray, flipped: np.ndarray, reviewed: np.ndarray, seed: int) -> tuple[str, str, str]:
    """(what the three arms score on the held-out products, the share of the flips' cost the round recovered, what it
    rests on); each arm is (seeds, products) of hits, and a product's score is the share of the arm's models that
    get it right. A cost within the noise of retraining (retraining_noise) is no cost to recover. The share's 90%
    interval resamples the held-out products."""
    noise, how = retraining_noise(clean, flipped, reviewed)
    clean, flipped, reviewed = (arm.mean(axis=0) for arm in (clean, flipped, reviewed))
    n, right = len(clean), [float(m.sum()) for m in (clean, flipped, reviewed)]
    cost, gain = right[0] - right[1], right[2] - right[1]
    scores = (
        f"held-out accuracy on {n:,} products: clean labels {right[0] / n:.2%}, flipped {right[1] / n:.2%} "
        f"(the flips cost {cost:,.1f} products; retraining noise +-{noise:.0f}: {how}), after one review round "
        f"{right[2] / n:.2%} ({gain:+,.1f} products)"
    )
    if cost <= noise:
        return scores, "n/a", f": the flips cost {cost:,.1f} of {n:,} held-out products, within retraining noise"
    draws = np.random.default_rng(seed).integers(0, n, (2000, n))
    costs = clean[draws].sum(axis=1) - flipped[draws].sum(axis=1)
    gains = reviewed[draws].sum(axis=1) - flipped[draws].sum(axis=1)
    low, high = np.percentile(gains[costs > 0] / costs[costs > 0], [5, 95])
    return (
        scores,
        f"{gain / cost:.0%}",
        f" ({gain:,.1f} of the {cost:,.1f} products; 90% interval {low:.0%} to {high:.0%})",
    )


def review_loop(
    args: argparse.Namespace, cfg: Config, table: Path, result: AuditResult, truth: pd.Series, flipped: set[str]
) -> None:
    """A simulated reviewer answers the top `fraction` of the audit's suspects from the true labels, through the
    review service as the page does; prints what it answered and what it got right."""
    depth = int(np.ceil(args.fraction * len(result.ranked)))
    shown = result.suspects.head(depth)
    overrides = ["--workdir", str(cfg.workdir), "--data.splits.train", str(table)]
    overrides += ["--data.holdout.fraction", str(cfg.data.holdout.fraction)]
    with (
        service_process(args.config, [result.target], overrides, command="review", cwd=REPO) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        page = f"{url}/review/{result.target}"
        screenshot = result.html_path.parent / "review.png"
        if missing_browser() is None:
            with chromium() as browser:
                browser.get(page)
                deadline = time.monotonic() + 30
                while not browser.execute_script("return document.body.dataset.ready") and time.monotonic() < deadline:
                    time.sleep(0.1)
                browser.save_screenshot(str(screenshot))
            print(f"screenshot of {page}: {screenshot}")
        else:
            print(f"no screenshot: {missing_browser()}")
        kinds = {"kept": 0, "took the suggestion": 0, "another label": 0, "the right label is not offered": 0}
        offered = set(client.get(f"/review/{result.target}/queue", params={"limit": 1}).json()["classes"])
        answered = []
        for row in shown.itertuples():
            decided = truth[row.id]
            if decided not in offered:  # every product of the class was flipped, none in the held-out part
                kinds["the right label is not offered"] += 1
                continue
            answer = client.post(
                f"/review/{result.target}/decisions", json={"id": row.id, "decided": decided, "by": "bench_audit.py"}
            )
            answer.raise_for_status()
            kind = (
                "kept"
                if decided == row.given_label
                else "took the suggestion"
                if decided == row.suggested_label
                else "another label"
            )
            kinds[kind] += 1
            answered.append(row.id)
    fixed = len(flipped.intersection(answered))
    print(
        f"reviewer answered the top {depth:,} suspects: "
        + ", ".join(f"{k} {n:,}" for k, n in kinds.items())
        + f"; {fixed:,} of the {len(flipped):,} flipped labels restored -> {labels_path(cfg, result.target)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion.yaml")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench_audit")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--noise", choices=NOISE, default="confusable", help="how labels are flipped (default confusable)"
    )
    parser.add_argument("--holdout", type=float, default=0.4, help="share of the products held out (default 0.4)")
    parser.add_argument("--targets", action="append", choices=TARGETS, help="targets to flip and audit (default: both)")
    parser.add_argument("--review", action="append", help="targets to run the review loop on (default: articleType)")
    parser.add_argument("--train-seeds", type=int, default=3, help="models per arm of the review loop (default 3)")
    args = parser.parse_args()
    if args.train_seeds < 1:
        parser.error("--train-seeds must be at least 1")
    targets = args.targets or list(TARGETS)
    reviewed = [t for t in args.review or ["articleType"] if t in targets]
    args.workdir.mkdir(parents=True, exist_ok=True)
    base = load_config(args.config, {"data.holdout.fraction": args.holdout})
    clean_table = Path(base.data.splits["train"])
    seeds = [base.model.seed + k for k in range(args.train_seeds)]
    # The clean model never reads answers; the flipped one reads only this run's (a last run's are removed).
    clean_at = partial(bench_config, args.config, args.workdir, clean_table, args.holdout, corrections=False)
    clean = clean_at()
    for target in targets:
        labels_path(clean, target).unlink(missing_ok=True)
    extract_text(clean)
    frame = read_table(clean_table, base.data.id_column)
    holdout = base.data.holdout
    in_train = ~in_holdout(frame[base.data.id_column], holdout.fraction, holdout.seed).to_numpy()
    clean_labels = frame.set_index(base.data.id_column)
    rng = np.random.default_rng(args.seed)

    flipped = frame.copy()
    flipped_ids, clean_hits = {}, {}
    for target in targets:
        started = time.perf_counter()
        column = base.targets[target].column
        if target in reviewed:
            clean_hits[target] = arm_hits(clean_at, target, clean_labels[column], seeds, "clean labels")
        else:
            train(clean, [target], force=True)
        model = load_artifact(model_dir(clean, target), target).model
        train_rows = np.flatnonzero(in_train & frame[column].notna().to_numpy())
        rows = flip(flipped, column, train_rows, model, args.noise, args.fraction, rng)
        flipped_ids[target] = set(frame[base.data.id_column].iloc[rows])
        print(
            f"{target}: clean model(s) trained in {time.perf_counter() - started:.0f}s; flipped {len(rows):,} of "
            f"{len(train_rows):,} training labels ({args.noise} noise, draw {args.seed})",
            flush=True,
        )
    table = args.workdir / "products_flipped.csv"
    flipped.to_csv(table, index=False)

    noisy_at = partial(bench_config, args.config, args.workdir, table, args.holdout)
    noisy = noisy_at()
    recovered, flipped_hits = {}, {}
    for target in targets:
        started = time.perf_counter()
        truth = clean_labels[base.targets[target].column]
        if target in reviewed:
            flipped_hits[target] = arm_hits(noisy_at, target, truth, seeds, "flipped labels")
        else:
            train(noisy, [target], force=True)
        result = audit(noisy, target)
        ranked = result.ranked
        depth = int(np.ceil(args.fraction * len(ranked)))
        top = ranked.head(depth)
        hits = int(top["id"].isin(flipped_ids[target]).sum())
        print(
            f"\n{target}: {len(ranked):,} training products, {len(flipped_ids[target]):,} flipped; top {depth:,} "
            f"({args.fraction:.0%}) of the audit: precision {hits / depth:.3f}, recall "
            f"{hits / len(flipped_ids[target]):.3f} ({time.perf_counter() - started:.0f}s to train + audit; "
            f"{result.source})"
        )
        original = top[~top["id"].isin(flipped_ids[target])]
        contradicted = [
            names(t, s) and not names(t, g)
            for t, s, g in zip(original["title"], original["suggested_label"], original["given_label"])
        ]
        print(
            f"{len(original)} ORIGINAL labels flagged in the top {depth:,}; the title names the suggested label and "
            f"not the given one for {sum(contradicted)}: counting those as found errors, precision "
            f"{(hits + sum(contradicted)) / depth:.3f}. The first {min(20, len(original))}:"
        )
        unflipped = original.head(20)
        for row, title_agrees in zip(unflipped.itertuples(), contradicted):
            assert clean_labels.at[row.id, base.targets[target].column] == row.given_label
            print(
                f"  {row.id:>6}  given {row.given_label!r:22} suggested {row.suggested_label!r:22} "
                f"{row.confidence_wrong:.2f} [{row.modality}]{' title agrees' if title_agrees else ''}  {row.title}"
            )
        print(f"report: {result.html_path}")
        if target in reviewed:
            review_loop(args, noisy, table, result, truth, flipped_ids[target])
            after = arm_hits(noisy_at, target, truth, seeds, "after one review round")
            scores, *recovered[target] = recovered_share(clean_hits[target], flipped_hits[target], after, args.seed)
            print(f"{target} {scores}")
    for target, (share, detail) in recovered.items():
        name = f"{target} " if len(recovered) > 1 else ""
        print(f"\n{name}review loop: recovered {share} of the accuracy the flips cost{detail}")


if __name__ == "__main__":
    main()
