"""A project to review: the demo sample with 5% of its articleType labels flipped and one title that tries to run a
script, articleType trained and audited. Shared by the review tests in and out of a browser."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmgbm.catalogue import in_holdout
from mmgbm.commands.audit import audit
from mmgbm.commands.train import train
from mmgbm.config import load_config
from tests.modelling_project import demo_frame, make_project
from tests.test_audit import flip_labels

# Both run if the page ever puts a title in as HTML.
HOLDOUT = {"fraction": 0.2, "seed": 0}
SCRIPT = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> '


def review_project(folder: Path) -> tuple[Path, str]:
    """(config, the id of the flipped product whose title holds SCRIPT): trained on articleType and audited."""
    clean = demo_frame()
    frame, flipped = flip_labels(clean, "articleType", 0.05, seed=0)
    training = ~in_holdout(frame["id"], HOLDOUT["fraction"], HOLDOUT["seed"])  # make_project's holdout
    # A flipped product whose own title names its true class: the audit puts it first, where the page opens.
    row = next(
        i
        for i in frame.index[training & frame["id"].isin(flipped)]
        if clean.loc[i, "articleType"].lower().rstrip("s") in frame.loc[i, "productDisplayName"].lower()
    )
    scripted = frame.loc[row, "id"]
    frame.loc[row, "productDisplayName"] = SCRIPT + frame.loc[row, "productDisplayName"]
    path = make_project(folder, frame)
    cfg = load_config(path)
    train(cfg, ["articleType"])
    audit(cfg, "articleType")
    return path, scripted


def audit_suspects(path: Path) -> pd.DataFrame:
    return pd.read_csv(path.parent / "work" / "reports" / "articleType" / "audit.csv", dtype=str, keep_default_na=False)


def decisions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path.parent / "work" / "labels" / "articleType.csv", dtype=str, keep_default_na=False)
