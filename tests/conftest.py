"""Shared fixtures: tiny catalogues written by the tests themselves, and the bundled demo sample."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "mmgbm" / "data" / "demo" / "mmgbm.yaml"


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config dict as YAML in tmp_path and return its path."""

    def write(raw: dict, name: str = "mmgbm.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


@pytest.fixture
def object_store():
    """The URL of an empty prefix on fsspec's in-memory object storage (what s3:// and gs:// offer, in this
    process), removed after the test."""
    import fsspec

    url = f"memory://mmgbm-tests/{uuid.uuid4().hex}"
    yield url
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture
def tiny_catalogue(tmp_path: Path) -> Path:
    frame = pd.DataFrame(
        {
            "id": ["a1", "a2", "a3", "a4"],
            "title": ["red shirt", "blue jeans", "red dress", "green socks"],
            "colour": ["red", "blue", "red", "green"],
            "season": ["summer", "winter", "summer", None],
            "price": [10.0, 30.0, 25.0, 3.0],
        }
    )
    path = tmp_path / "products.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def tiny_config(write_config, tiny_catalogue: Path) -> Path:
    return write_config(
        {
            "workdir": "work",
            "data": {
                "splits": {"train": tiny_catalogue.name},
                "text_columns": ["title"],
                "categorical_columns": ["season"],
                "numeric_columns": ["price"],
            },
            "targets": {"colour": {"column": "colour"}},
            "features": {"image": {"enabled": False}},
        }
    )
