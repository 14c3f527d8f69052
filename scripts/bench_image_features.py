"""What makes image features worth fusing (issue 9): image-only accuracy on the fashion catalogue of
  - kNN on the standardised B0 embeddings against kNN in the learned projection the classifier uses
    (`KnnHead(projection_alpha=...)`: a ridge classifier's class scores), on the stored embeddings of the configs'
    train / test split;
  - flip test-time augmentation: ridge on the embedding of the photo against ridge on the mean of the photo's and
    its mirror image's, on --flip-sample photos embedded here (twice the forward passes).

    .venv/bin/python scripts/bench_image_features.py [--config configs/fashion.yaml] [--flip-sample 3000]

Needs the config's image features (`mmgbm extract-images -c configs/fashion.yaml`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeClassifier
from sklearn.preprocessing import StandardScaler

from mmgbm.catalogue import load_split
from mmgbm.config import load_config
from mmgbm.estimator.heads import KnnHead
from mmgbm.stores import load_products
from mmgbm.features.image_decoding import decode_image
from mmgbm.features.image_encoder import ImageEncoder
from mmgbm.features.photos import Photos

REPO = Path(__file__).resolve().parents[1]
TARGETS = ["articleType", "subCategory", "baseColour"]


def projection(cfg, alpha: float) -> None:
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    A, B = (load_products(cfg, f)[0].dense["image"] for f in (train, test))
    keep_a, keep_b = ~np.isnan(A).any(axis=1), ~np.isnan(B).any(axis=1)
    scaler = StandardScaler().fit(A[keep_a])
    A, B = scaler.transform(A[keep_a]), scaler.transform(B[keep_b])
    for target in TARGETS:
        names = np.r_[
            train[target].fillna("?").astype(str).to_numpy()[keep_a],
            test[target].fillna("?").astype(str).to_numpy()[keep_b],
        ]
        codes = np.unique(names, return_inverse=True)[1]
        y_a, y_b = codes[: len(A)], codes[len(A) :]
        row = []
        for name, proj in (("plain kNN", None), ("projected kNN", alpha)):
            started = time.perf_counter()
            head = KnnHead("multiclass", int(codes.max()) + 1, 20, projection_alpha=proj).fit(A, y_a)
            accuracy = (np.nanargmax(np.nan_to_num(head.predict(B), nan=-1.0), axis=1) == y_b).mean()
            row.append(f"{name} {accuracy:.4f} ({time.perf_counter() - started:.1f} s)")
        print(f"{target:<12} image-only on {len(B):,} test products: " + "; ".join(row), flush=True)


def flip(cfg, sample: int) -> None:
    frame = load_split(cfg, "train").dropna(subset=[cfg.data.image_column]).sample(sample, random_state=0)
    paths = Photos.of(cfg.data).paths(frame[cfg.data.image_column])
    image = cfg.features.image
    encoder = ImageEncoder(image.backbone, image.weights, image.image_size, image.batch_size).fit()
    pixels = np.stack([decode_image(p, encoder.size).pixels for p in paths])
    plain = encoder.transform(pixels)
    both = (plain + encoder.transform(pixels[:, :, ::-1].copy())) / 2
    fit_rows = int(0.75 * sample)
    for target in TARGETS:
        y = frame[target].fillna("?").astype(str).to_numpy()
        row = []
        for name, E in (("photo", plain), ("photo + mirror mean", both)):
            scaler = StandardScaler().fit(E[:fit_rows])
            model = RidgeClassifier(alpha=10.0).fit(scaler.transform(E[:fit_rows]), y[:fit_rows])
            row.append(f"{name} {(model.predict(scaler.transform(E[fit_rows:])) == y[fit_rows:]).mean():.4f}")
        print(
            f"{target:<12} ridge on {sample - fit_rows:,} of {sample:,} sampled photos: " + "; ".join(row), flush=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion.yaml")
    parser.add_argument("--flip-sample", type=int, default=3000, help="photos embedded twice (0: skip)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    projection(cfg, cfg.model.image_alpha)
    if args.flip_sample:
        flip(cfg, args.flip_sample)


if __name__ == "__main__":
    main()
