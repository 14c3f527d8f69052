"""The whole pipeline in one call, as `mmgbm demo` runs it: extract → train → evaluate → predict."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mmgbm.config import Config
from mmgbm.errors import MmgbmError
from mmgbm.estimator.out_of_fold import silent

if TYPE_CHECKING:
    from distributed import Client

EVAL_SPLIT = "test"


def run_pipeline(
    cfg: Config,
    say: Callable[[str], None] = print,
    client: Client | None = None,
    progress: Callable[[str, int, int], None] = silent,
) -> Path:
    """Extract every enabled modality (incrementally), train all targets, evaluate them on the `test` split and
    write `<workdir>/submission.csv` for it, every step on the Dask cluster of `client` when given; training tells
    `progress` its stages as `train` does. Returns the submission's path."""
    from mmgbm.commands.evaluate import evaluate
    from mmgbm.commands.predict import predict, write_predictions
    from mmgbm.commands.train import train
    from mmgbm.stores import extract_images, extract_text, images_enabled
    from mmgbm.workdir import submission_path

    if EVAL_SPLIT not in cfg.split_names:
        raise MmgbmError(f"the pipeline scores a {EVAL_SPLIT!r} split; add one to data.splits or set data.holdout")
    if not cfg.targets:
        raise MmgbmError("the config names no targets; add at least one under targets:")
    if images_enabled(cfg):
        say(extract_images(cfg, progress=True, client=client).describe())
    if cfg.features.text.enabled and cfg.text_fields:
        say(extract_text(cfg, client=client).describe())
    train(cfg, client=client, progress=progress, say=say)
    for result in evaluate(cfg, split=EVAL_SPLIT, client=client):
        say(result.describe())
    out = write_predictions(predict(cfg, split=EVAL_SPLIT, top_k=3, client=client), submission_path(cfg))
    say(f"submission: {out}")
    return out
