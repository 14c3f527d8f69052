"""Training time, prediction speed and peak memory of the estimators as the catalogue grows (issue 11).

Grows a catalogue from the shared Flipkart one (../shared/data/flipkart) to each of --sizes products. Every new
product (new id) copies one real product's metadata tuple (brand, three category levels, ratings: the real joint
distribution) and class, its third category level (the ~750-class target); its title is a real title of that class,
edited as sellers write (words dropped, swapped, borrowed or spliced from another real title of the class, a
typo); its price is the real one times exp(N(0, 0.1)). Flipkart has no photos, so each class gets a fixed draw of 8
real fashion photos (the B0 embeddings and colour statistics stored under runs/fashion/features/image, read with the
store's own read path) and each product one of its class's draws plus Gaussian noise of 4 per-dimension standard
deviations: an image block of weak, realistic signal (~0.5 image-only kNN accuracy at 15k products).
The generator is deterministic per --seed.

Each size runs in a child process of its own, so its figures and peak memory are its own: hold out 20% of the
products (by id hash, seeded), fit the TF-IDF vectorizer on the rest, train the ~750-class classifier and the
log1p-price regressor with the library's default parameters, and predict the held-out products. Per size and target
it prints train seconds, predicted products/s, peak RSS while that target trained and predicted (the catalogue's
features stay resident and count), and accuracy / MAE of log1p price. A size whose child runs past --time-limit is
killed and reported as not reached; larger sizes are then skipped.

The goals of issue 11 and the final line `scale: exponent E, 1M-row train T s, peak P GiB` are about the classifier
(the goal's ~750-class target): E is the least-squares slope of log(classifier train seconds) against log(products)
over the sizes where it finished; T and P are its train seconds and peak RSS at 1,000,000 products (n/a, with the
largest size reached, when that size did not finish). Accuracy at larger sizes is not comparable with real data:
each real title is then reused many times.

    .venv/bin/python scripts/bench_scale.py [--sizes 15000,60000,250000,1000000] [--time-limit 3600] [--seed 0]
                                            [--no-images] [--classifier-only] [--reference-accuracy A]

Linux only (peak RSS from /proc). The full run takes hours on two cores; --sizes 3000,6000 checks the script.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mmgbm.catalogue import in_holdout, read_table
from mmgbm.config import load_config
from mmgbm.estimator import MMGBMClassifier, MMGBMRegressor, ProductMatrix
from mmgbm.features.text_vectorizer import TextVectorizer
from mmgbm.stores import colour_store, image_store
from mmgbm.workdir import image_dir

REPO = Path(__file__).resolve().parents[1]
FLIPKART = REPO.parent / "shared" / "data" / "flipkart" / "products.csv"
FASHION_CONFIG = REPO / "configs" / "fashion.yaml"
CLASS, PRICE, TITLE = "cat_l3", "discounted_price", "product_name"
RATINGS = ("product_rating", "overall_rating")
META = ("brand", "cat_l1", "cat_l2", CLASS, *RATINGS)
HOLDOUT = 0.2
CLASSIFIER, REGRESSOR = "cat_l3", "price"  # the targets as configs/flipkart.yaml names them
LARGEST, REFERENCE_SIZE = 1_000_000, 15_000
GIB = 2**30

# Title edits, each applied with this probability; rates loose enough that titles of a class stay recognisable.
SPLICE, DROP, BORROW, SWAP, TYPO = 0.2, 0.4, 0.4, 0.3, 0.2
PRICE_NOISE = 0.1  # sd of log price: the same product listed by another seller
PHOTOS_PER_CLASS = 8
IMAGE_NOISE = 4.0  # per-dimension sds; tuned so image-only kNN gets ~0.5 accuracy at 15k (text ~0.9)
NOISE_CHUNK = 50_000  # rows of noise drawn at once: float32 noise, kept as float16 as ProductMatrix holds it

# Goals of issue 11, on the classifier.
EXPONENT_GOAL, TRAIN_GOAL_S, PEAK_GOAL_GIB, ACCURACY_MARGIN = 1.15, 1800, 12.0, 0.003
# The classifier's accuracy at 15,000 products, --seed 0, with the estimator of commit 137c46b (before the scaling
# work): 3,008 held-out products, so one standard error is ~0.4 points.
TODAY_15K_ACCURACY = 0.9412


# ---- growing the catalogue --------------------------------------------------------------------------------------
def real_products() -> pd.DataFrame:
    """Flipkart products with a class and a positive price: every grown product is labelled for both targets."""
    frame = read_table(FLIPKART, "uniq_id")
    frame[PRICE] = pd.to_numeric(frame[PRICE], errors="coerce")
    keep = frame[CLASS].fillna("").str.strip().ne("") & (frame[PRICE] > 0) & frame[TITLE].notna()
    return frame[keep].reset_index(drop=True)


def real_photos() -> dict[str, np.ndarray]:
    """Block name -> (photos, dim) rows of the fashion photos both image stores hold, in one order."""
    cfg = load_config(FASHION_CONFIG)
    ids = sorted(image_store(cfg).present_ids() & colour_store(cfg).present_ids())
    return {"image": image_store(cfg).read_dense(ids)[0], "image.colour": colour_store(cfg).read_dense(ids)[0]}


def grow(real: pd.DataFrame, n: int, seed: int, n_photos: int) -> pd.DataFrame:
    """n new products: id, the metadata of a real product (its class included), a title made from its class's
    real titles, a perturbed price and (with photos) which real photo its image is drawn around."""
    rng = np.random.default_rng(seed)
    codes, _ = pd.factorize(real[CLASS])
    template = rng.integers(0, len(real), n)
    # Donor: another real product of the same class, found through the products sorted by class.
    by_class, counts = np.argsort(codes, kind="stable"), np.bincount(codes)
    first = np.cumsum(counts) - counts
    cls = codes[template]
    donor = by_class[first[cls] + (rng.random(n) * counts[cls]).astype(np.int64)]
    titles = real[TITLE].astype(str).to_numpy()
    edit = random.Random(seed)
    frame = real.loc[template, list(META)].reset_index(drop=True)
    frame.insert(0, "id", [f"grown-{seed}-{i:07d}" for i in range(n)])
    frame[TITLE] = [perturb(titles[t], titles[d], edit) for t, d in zip(template, donor)]
    frame[PRICE] = np.maximum(1.0, np.round(real[PRICE].to_numpy()[template] * np.exp(rng.normal(0, PRICE_NOISE, n))))
    if n_photos:
        photos = rng.integers(0, n_photos, (counts.size, PHOTOS_PER_CLASS))  # each class's fixed draw
        frame["photo"] = photos[cls, rng.integers(0, PHOTOS_PER_CLASS, n)]
    return frame


def perturb(title: str, donor: str, rnd: random.Random) -> str:
    words, other = title.split(), donor.split()
    if len(words) > 1 and len(other) > 1 and rnd.random() < SPLICE:  # head of one title, tail of the other
        words = words[: rnd.randrange(1, len(words))] + other[rnd.randrange(1, len(other)) :]
    if len(words) > 2 and rnd.random() < DROP:
        del words[rnd.randrange(len(words))]
    if other and rnd.random() < BORROW:
        words.insert(rnd.randint(0, len(words)), rnd.choice(other))
    if len(words) > 1 and rnd.random() < SWAP:
        i = rnd.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    if words and rnd.random() < TYPO:
        i = rnd.randrange(len(words))
        words[i] = typo(words[i], rnd)
    return " ".join(words)


def typo(word: str, rnd: random.Random) -> str:
    """Two letters swapped, one dropped or one doubled."""
    if len(word) < 3:
        return word
    i = rnd.randrange(len(word) - 1)
    return rnd.choice(
        [word[:i] + word[i + 1] + word[i] + word[i + 2 :], word[:i] + word[i + 1 :], word[:i] + word[i] + word[i:]]
    )


def noisy_rows(real: np.ndarray, picks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """real[picks] plus Gaussian noise of IMAGE_NOISE per-dimension standard deviations, as float16 (a ProductMatrix
    would convert float32 rows: 1M x 1280 of them are 4.8 GiB at once)."""
    scale = (IMAGE_NOISE * real.std(axis=0)).astype(np.float32)
    out = np.empty((len(picks), real.shape[1]), dtype=np.float16)
    for start in range(0, len(picks), NOISE_CHUNK):
        rows = picks[start : start + NOISE_CHUNK]
        noise = rng.standard_normal((len(rows), real.shape[1]), dtype=np.float32)
        out[start : start + len(rows)] = real[rows] + noise * scale
    return out


def product_matrix(frame: pd.DataFrame, tfidf, photos: dict[str, np.ndarray], rng: np.random.Generator):
    return ProductMatrix(
        frame["id"].to_numpy(),
        {"text": tfidf},
        {"text": frame[TITLE].to_numpy(dtype=object)},
        {name: noisy_rows(real, frame["photo"].to_numpy(), rng) for name, real in photos.items()},
        frame[list(META)].reset_index(drop=True),
    )


# ---- one size, in a child process -------------------------------------------------------------------------------
def reset_peak() -> None:
    # Linux: "5" resets the process's peak resident set (VmHWM), so each target's peak is its own.
    Path("/proc/self/clear_refs").write_text("5")


def memory_gib(field: str = "VmHWM") -> float:
    """Peak resident memory (VmHWM), or with "VmRSS" the present one."""
    kib = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)
    return int(kib) * 1024 / GIB


def report(record: dict) -> None:
    print(json.dumps(record), flush=True)


def run_size(n: int, seed: int, images: bool, classifier_only: bool = False) -> None:
    """Grow, split, vectorise, then train and predict each target (the classifier only, with `classifier_only`);
    one JSON line on stdout per finished stage."""
    started = time.perf_counter()
    real = real_products()
    photos = real_photos() if images else {}
    catalogue = grow(real, n, seed, len(photos["image"]) if images else 0)
    test = in_holdout(catalogue["id"], HOLDOUT, seed).to_numpy()
    train_rows, test_rows = catalogue[~test], catalogue[test]
    vectorizer = TextVectorizer()
    rng = np.random.default_rng([seed, n])
    X_train = product_matrix(train_rows, vectorizer.fit_transform(train_rows[TITLE]), photos, rng)
    X_test = product_matrix(test_rows, vectorizer.transform(test_rows[TITLE]), photos, rng)
    del real, photos, catalogue
    report(
        {
            "stage": "catalogue",
            "seconds": time.perf_counter() - started,
            "train": len(X_train),
            "test": len(X_test),
            "classes": int(train_rows[CLASS].nunique()),
            "peak_gib": memory_gib(),
            "resident_gib": memory_gib("VmRSS"),
        }
    )
    print(f"[{n:,}] catalogue and TF-IDF ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    # As configs/flipkart.yaml: the category target does not read the other levels of its own path.
    targets = [
        (CLASSIFIER, CLASS, MMGBMClassifier(categorical_columns=("brand",), numeric_columns=RATINGS)),
        (
            REGRESSOR,
            PRICE,
            MMGBMRegressor(
                categorical_columns=("brand", "cat_l1", "cat_l2", CLASS), numeric_columns=RATINGS, log_target=True
            ),
        ),
    ]
    for target, column, model in targets[:1] if classifier_only else targets:
        gc.collect()
        reset_peak()
        began = time.perf_counter()
        model.fit(X_train, train_rows[column].to_numpy())
        trained = time.perf_counter()
        predicted = model.predict(X_test)
        predict_s = time.perf_counter() - trained
        truth = test_rows[column].to_numpy()
        score = (
            float(np.mean(predicted == truth))
            if target == CLASSIFIER
            else float(np.mean(np.abs(np.log1p(predicted) - np.log1p(truth))))
        )
        report(
            {
                "target": target,
                "train_s": trained - began,
                "predict_per_s": len(X_test) / predict_s,
                "peak_gib": memory_gib(),
                "score": score,
            }
        )
        print(f"[{n:,}] {target} trained in {trained - began:.0f} s", file=sys.stderr)
        del model, predicted


def measure(n: int, args: argparse.Namespace) -> tuple[list[dict], str | None]:
    """One size in a child process: its reports, and why it stopped short (None when it finished)."""
    command = [sys.executable, __file__, "--child-size", str(n), "--seed", str(args.seed)]
    # Its own process group, so a time-out also ends any worker processes the estimator started.
    command += ["--no-images"] * args.no_images + ["--classifier-only"] * args.classifier_only
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    problem = None
    try:
        out, _ = child.communicate(timeout=args.time_limit)
    except BaseException as exc:  # the time limit, or this bench interrupted: never leave the child running
        os.killpg(child.pid, signal.SIGKILL)
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        out, _ = child.communicate()
        problem = f"not reached in {args.time_limit:g} s"
    if problem is None and child.returncode:
        problem = (
            "killed (out of memory?)"
            if child.returncode == -signal.SIGKILL
            else f"failed (exit status {child.returncode})"
        )
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")], problem


# ---- the parent: every size, the figures and the goals -----------------------------------------------------------
def ensure_photos(no_images: bool) -> None:
    cfg = load_config(FASHION_CONFIG)
    if no_images or image_store(cfg).shards():
        return
    print(
        f"no stored fashion image embeddings in {image_dir(cfg)}: extracting them "
        f"(mmgbm extract-images --config configs/fashion.yaml; --no-images leaves the image block out)"
    )
    from mmgbm.stores import extract_images

    extract_images(cfg, progress=True)


def print_size(n: int, records: list[dict], problem: str | None) -> None:
    stages = {r.get("target", r.get("stage")): r for r in records}
    if "catalogue" in stages:
        c = stages["catalogue"]
        print(
            f"\n{n:,} products: {c['train']:,} train / {c['test']:,} held out, {c['classes']} classes; catalogue "
            f"and TF-IDF {c['seconds']:.1f} s, peak {c['peak_gib']:.2f} GiB, resident after "
            f"{c['resident_gib']:.2f} GiB"
        )
    for target, metric in ((CLASSIFIER, "accuracy"), (REGRESSOR, "MAE log1p")):
        r = stages.get(target)
        if r is None:
            print(f"  {target:<7} {problem or 'not run (--classifier-only)'}")
            continue
        print(
            f"  {target:<7} train {r['train_s']:>8.1f} s  predict {r['predict_per_s']:>9,.0f} products/s  "
            f"peak {r['peak_gib']:>6.2f} GiB  {metric} {r['score']:.4f}"
        )


def verdict(value: float | None, goal: float, higher: bool, unit: str, missing: str) -> str:
    if value is None:
        return f"not measured ({missing})"
    ok = value >= goal if higher else value <= goal
    return f"{value:.4g}{unit} {'PASS' if ok else 'FAIL'}"


def slope(finished: dict[int, dict]) -> float | None:
    """Least-squares slope of log(classifier train seconds) against log(products)."""
    if len(finished) < 2:
        return None
    sizes = sorted(finished)
    return float(np.polyfit(np.log(sizes), np.log([finished[n]["train_s"] for n in sizes]), 1)[0])


def print_goals(finished: dict[int, dict], exponent: float | None, reference_accuracy: float) -> None:
    largest, at_15k = finished.get(LARGEST, {}), finished.get(REFERENCE_SIZE, {})
    unreached = f"{LARGEST:,} not reached"
    print("\ngoals (issue 11, the ~750-class classifier):")
    print(
        f"  exponent of train time in n <= {EXPONENT_GOAL}: "
        f"{verdict(exponent, EXPONENT_GOAL, False, '', 'fewer than two sizes finished')}"
    )
    print(
        f"  {LARGEST:,}-product train <= {TRAIN_GOAL_S} s: "
        f"{verdict(largest.get('train_s'), TRAIN_GOAL_S, False, ' s', unreached)}"
    )
    print(
        f"  {LARGEST:,}-product peak <= {PEAK_GOAL_GIB:g} GiB: "
        f"{verdict(largest.get('peak_gib'), PEAK_GOAL_GIB, False, ' GiB', unreached)}"
    )
    print(
        f"  {REFERENCE_SIZE:,}-product accuracy >= today's {reference_accuracy:.4f} - 0.3 points: "
        f"{verdict(at_15k.get('score'), reference_accuracy - ACCURACY_MARGIN, True, '', 'size not run')}"
    )


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] < 100:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: give product counts of at least 100, comma-separated")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=[15_000, 60_000, 250_000, 1_000_000],
        help="catalogue sizes in products, comma-separated",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=3600,
        help="seconds per size (catalogue, both targets) before its child is killed",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the grown catalogue and the held-out split")
    parser.add_argument("--no-images", action="store_true", help="leave the image blocks out")
    parser.add_argument(
        "--classifier-only",
        action="store_true",
        help="train the ~750-class classifier only (the goals' target), not the price regressor",
    )
    parser.add_argument(
        "--reference-accuracy",
        type=float,
        default=TODAY_15K_ACCURACY,
        help="today's classifier accuracy at 15,000 products (default: measured at --seed 0)",
    )
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_size:
        run_size(args.child_size, args.seed, not args.no_images, args.classifier_only)
        return

    ensure_photos(args.no_images)
    finished: dict[int, dict] = {}  # size -> the classifier's record
    reached, stopped = None, None
    for n in args.sizes:
        if stopped:
            print(f"\n{n:,} products: skipped ({stopped})")
            continue
        started = time.perf_counter()
        records, problem = measure(n, args)
        print_size(n, records, problem)
        print(f"  whole size {time.perf_counter() - started:.0f} s")
        classifier = next((r for r in records if r.get("target") == CLASSIFIER), None)
        if classifier:
            finished[n] = classifier
        if problem:
            stopped = f"{n:,} products {problem}"
        else:
            reached = n

    exponent = slope(finished)
    print_goals(finished, exponent, args.reference_accuracy)
    e = "n/a" if exponent is None else f"{exponent:.2f}"
    largest = finished.get(LARGEST)
    if largest:
        print(f"scale: exponent {e}, 1M-row train {largest['train_s']:.0f} s, peak {largest['peak_gib']:.1f} GiB")
    else:
        print(
            f"scale: exponent {e}, 1M-row train n/a, peak n/a (largest size reached: "
            f"{f'{reached:,}' if reached else 'none'})"
        )


if __name__ == "__main__":
    main()
