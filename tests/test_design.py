"""load_products: the estimators' input for a table, with the metadata columns the config declares."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmgbm.config import load_config
from mmgbm.stores import extract_text, load_products


def test_products_carry_the_declared_metadata_in_row_order_and_never_the_target(
    tiny_config: Path, tiny_catalogue: Path
):
    cfg = load_config(tiny_config, {"targets.colour.label_in_text": "title", "features.text.min_df": 1})
    extract_text(cfg)
    frame = pd.read_csv(tiny_catalogue).iloc[::-1]
    products, _ = load_products(cfg, frame)
    assert products.ids.tolist() == ["a4", "a3", "a2", "a1"]
    assert list(products.meta.columns) == ["season", "price", "title"]  # categorical, numeric, label_in_text
    assert products.meta["price"].tolist() == [3.0, 25.0, 30.0, 10.0]
    # An --input table without some columns gets the ones it has.
    assert list(load_products(cfg, frame[["id", "title"]])[0].meta.columns) == ["title"]
