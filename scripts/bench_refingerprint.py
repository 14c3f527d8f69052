"""A photo folder copied to a new root (every file with a new time) is not embedded again (issue 40, outcome 1).

Takes the first N products of a config that have a photo, copies their photos into a folder of its own and runs
extract-images on them (T1: the whole call, model build included); then copies that folder to a new root as a
restore or a sync would (same bytes, new modification times), points the config at it and runs extract-images
again (T2), then once more on the unchanged folder (T3: what every night without changes costs). Prints
    re-fingerprint: first run T1 s, after copying to a new root T2 s (T2/T1 = r), embedded again: k of n photos
    unchanged catalogue re-run: T3 s, photos hashed: h

    python scripts/bench_refingerprint.py [--config configs/fashion.yaml] [--images 3000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from bench_extract import sample_products

from mmgbm.config import load_config
from mmgbm.features import images
from mmgbm.features.image_decoding import content_hash
from mmgbm.stores import extract_images

REPO = Path(__file__).resolve().parents[1]


def copy_with_new_times(folder: Path, to: Path) -> None:
    """The same bytes under another root, every file with a new modification time (as a restore or an rsync
    without --times leaves them)."""
    shutil.copytree(folder, to, copy_function=shutil.copyfile)
    later = time.time() + 60
    for path in to.rglob("*"):
        os.utime(path, (later, later))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion.yaml")
    parser.add_argument("--images", type=int, default=3000, help="products with a photo to extract")
    parser.add_argument("--keep", type=Path, help="work in this folder and leave it (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mmgbm-refingerprint-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        products, paths, cfg = sample_products(args.config, args.images)
        first_root, new_root = where / "photos", where / "restored"
        column = cfg.data.image_column
        for value, path in zip(products[column], paths):
            (first_root / value).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, first_root / value)
        products.to_csv(where / "products.csv", index=False)
        raw = yaml.safe_load(args.config.read_text())
        raw["workdir"] = str(where / "work")
        raw["data"].update(splits={"train": str(where / "products.csv")}, images_root=str(first_root))
        raw["features"]["image"]["weights"] = str(cfg.features.image.weights)  # resolved beside the config
        config = where / "bench.yaml"
        config.write_text(yaml.safe_dump(raw))

        first = extract_images(load_config(config), progress=True)
        copy_with_new_times(first_root, new_root)
        moved_cfg = load_config(config, {"data.images_root": str(new_root)})
        moved = extract_images(moved_cfg)
        hashed = []
        images.content_hash = lambda path: hashed.append(path) or content_hash(path)
        unchanged = extract_images(moved_cfg)

    print(first.describe())
    print(moved.describe())
    print(
        f"re-fingerprint: first run {first.seconds:.1f} s, after copying to a new root {moved.seconds:.1f} s "
        f"(T2/T1 = {moved.seconds / first.seconds:.3f}), embedded again: {moved.extracted:,} of "
        f"{len(products):,} photos"
    )
    print(f"unchanged catalogue re-run: {unchanged.seconds:.1f} s, photos hashed: {len(hashed):,}")


if __name__ == "__main__":
    main()
