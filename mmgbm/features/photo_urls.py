"""Product photos on object storage: `data.images_root: s3://bucket/photos` (any fsspec URL), so that a cluster's
workers need no shared file system at all, the feature store being on object storage too (mmgbm.features.folder).

A catalogue's image value is a key under the root, joined and normalised as a path is: `..` cannot climb out of the
root, and a value that is itself a URL is outside it unless `allow_absolute_image_paths` lets it be read. What an
embedding is made from (its `source`) is the key, the object's size and its ETag (or modification time): the whole
root is listed once per run instead of one request per photo, so a million photos cost a thousand list requests,
not a million.
"""

from __future__ import annotations

import posixpath
from typing import Any
from urllib.parse import unquote

from mmgbm.errors import MmgbmError, first_line
from mmgbm.urls import is_url


def join(root: str, value: str) -> str:
    """The URL of a catalogue's image value under `root` (a value that is a URL itself stays one), normalised."""
    protocol, path = (value if is_url(value) else root).split("://", 1)
    if not is_url(value):
        path = path.rstrip("/") + "/" + value
    return f"{protocol}://" + posixpath.normpath(path)


def inside(url: str, root: str) -> bool:
    """Whether `url` names a key under `root`. A `..` segment, percent-encoded or not, is never inside: some stores
    (HTTP servers, file systems) resolve it, so it could lead anywhere."""
    path = unquote(url.split("://", 1)[-1])
    return url.startswith(root.rstrip("/") + "/") and ".." not in path.split("/")


def relative(url: str, root: str) -> str:
    return url[len(root.rstrip("/")) + 1 :] if inside(url, root) else url


def fetch(url: str) -> bytes:
    """The object's bytes (one request; photos are small); FileNotFoundError where there is none, and any failure of
    the store as the exception its client raises."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs.cat_file(path)


def versions(root: str, urls: list[str]) -> dict[str, str]:
    """`size|version` of every object among `urls`, from one listing of `root` (and one request per URL outside
    it); URLs with no object are left out."""
    import fsspec

    fs, prefix = fsspec.core.url_to_fs(root)
    listed: dict[str, dict[str, Any]] = {}
    if any(inside(url, root) for url in urls):
        try:
            listed = fs.find(prefix, detail=True)  # keyed by the store's own form of a path, as _strip_protocol gives
        except FileNotFoundError:
            pass
        except Exception as exc:  # no credentials, access denied, no connection: each client has its own errors
            raise MmgbmError(
                f"data.images_root {root}: cannot be listed ({type(exc).__name__}: {first_line(exc)}); "
                f"check the URL, fsspec's settings for it (endpoint) and the credentials"
            ) from None
    out = {}
    for url in filter(None, urls):
        info = listed.get(fs._strip_protocol(url)) if inside(url, root) else _info(url)
        if info is not None and info.get("type", "file") == "file":
            out[url] = _version(info)
    return out


def _info(url: str) -> dict[str, Any] | None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    try:
        return fs.info(path)
    except Exception:  # no such object, or unreachable: no source, so extraction tries it and lists the failure
        return None


def _version(info: dict[str, Any]) -> str:
    """Size and what changes when the object is replaced: S3's and GCS's ETag, else the modification time."""
    stamp = next((info[k] for k in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "created") if info.get(k)), "")
    return f"{info.get('size', '')}|{str(stamp).strip(chr(34))}"
