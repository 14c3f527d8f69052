"""Telling a URL from a path, and refusing a URL whose storage is not installed: what the config checks and every
layer below it asks, so it sits at the bottom and imports nothing of mmgbm's but its errors."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from mmgbm.errors import MmgbmError

WEB_SCHEMES = ("http", "https")


def is_url(where: str | Path) -> bool:
    return "://" in str(where)


def is_web_url(value: str) -> bool:
    """An http(s) URL: a photo fetched over the web (mmgbm.features.photo_fetch), not an fsspec object."""
    return urlsplit(value).scheme.lower() in WEB_SCHEMES if "://" in value else False


def check_url(url: str, setting: str) -> None:
    """Refuse, in one line, a URL whose storage fsspec does not know or whose package is not installed."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:  # fsspec says which package: "Install s3fs to access S3"
        raise MmgbmError(f"{setting} {url}: {exc} (on every machine that runs mmgbm or a Dask worker)") from None
    except ValueError:
        raise MmgbmError(
            f"{setting} {url}: unknown storage {protocol!r}; give a folder or an fsspec URL such as s3://bucket/path"
        ) from None
