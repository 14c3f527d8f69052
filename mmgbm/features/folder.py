"""A folder of the feature store: a directory on a file system, or a prefix on object storage named by an fsspec
URL (`s3://bucket/catalogue`, `gs://...`, `memory://` in tests).

Either way a file appears under its name whole or not at all. On a file system it is written to a temporary name
beside its place and renamed over it (mmgbm.features.atomic). Object storage has no atomic rename, and needs none:
an upload becomes visible only once complete, so a file is written to a local temporary file first and uploaded in
one piece; a killed writer leaves nothing behind in the bucket.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mmgbm.errors import MmgbmError, first_line
from mmgbm.features.atomic import disk_error, remove_orphans, write_atomically
from mmgbm.urls import is_url


class StorageError(MmgbmError):
    """The object store could not be reached or refused a request: nothing is known of the file asked for."""


def folder(where: str | Path, options: dict[str, Any] | None = None) -> LocalFolder | ObjectFolder:
    """The folder at a path or URL; `options` are the object store's (fsspec storage options: endpoint, profile)."""
    return ObjectFolder(str(where), options or {}) if is_url(where) else LocalFolder(Path(where))


class LocalFolder:
    read_threads = 1  # the disk is fastest read in order
    # A file copied in by hand or damaged on disk may be whole up to its last page: reading it all is what tells.
    verify_whole_files = True

    def __init__(self, root: Path):
        self.root = root

    def __truediv__(self, name: str) -> LocalFolder:
        return LocalFolder(self.root / name)

    def __str__(self) -> str:
        return str(self.root)

    def address(self, name: str) -> Path:
        return self.root / name

    def names(self) -> list[str]:
        return [p.name for p in self.root.iterdir()] if self.root.is_dir() else []

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    @contextmanager
    def open(self, name: str) -> Iterator[Path]:
        yield self.root / name

    def read_text(self, name: str) -> str:
        return (self.root / name).read_text()

    def write(self, name: str, write: Callable[[Path], None]) -> Path:
        """`write(tmp)` fills a local file that then takes `name`'s place whole."""
        return write_atomically(self.root / name, write)

    def rename(self, name: str, new_name: str) -> None:
        (self.root / name).replace(self.root / new_name)

    def delete(self, name: str) -> None:
        """Remove one file; one already gone is fine."""
        (self.root / name).unlink(missing_ok=True)

    def remove(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)

    def remove_orphans(self) -> None:
        remove_orphans(self.root)


class ObjectFolder:
    read_threads = 16  # objects read at once: each read waits on the network's latency, not on this machine
    # Objects appear only when their upload is complete; the footer (read anyway, for the fingerprint) tells a
    # foreign or truncated one, and downloading the whole store to find damage would cost more than redoing it.
    verify_whole_files = False

    def __init__(self, url: str, options: dict[str, Any]):
        import fsspec

        self.root, self.options = url.rstrip("/"), options
        self.fs, self.path = fsspec.core.url_to_fs(self.root, **options)

    def __truediv__(self, name: str) -> ObjectFolder:
        return ObjectFolder(f"{self.root}/{name}", self.options)

    def __str__(self) -> str:
        return self.root

    def address(self, name: str) -> str:
        return f"{self.root}/{name}"

    def names(self) -> list[str]:
        # Listings are cached per process (s3fs, gcsfs) and other machines' writes do not invalidate them.
        self.fs.invalidate_cache(self.path)
        with self._reaching(self.root):
            try:
                return [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path, detail=False)]
            except FileNotFoundError:  # a prefix nothing was written under yet
                return []

    def has(self, name: str) -> bool:
        self.fs.invalidate_cache(self.path)
        with self._reaching(self.address(name)):
            return self.fs.isfile(self._key(name))

    @contextmanager
    def open(self, name: str) -> Iterator[_Fetching]:
        where = self.address(name)
        with self._reaching(where):
            fh = self.fs.open(self._key(name), "rb")
        with fh:
            yield _Fetching(fh, lambda: self._reaching(where))

    def read_text(self, name: str) -> str:
        with self._reaching(self.address(name)):
            return self.fs.cat_file(self._key(name)).decode()

    def write(self, name: str, write: Callable[[Path], None]) -> str:
        """`write(tmp)` fills a local temporary file, uploaded whole as `name`."""
        with tempfile.TemporaryDirectory(prefix="mmgbm-") as tmp:
            local = Path(tmp) / name
            try:
                write(local)
            except OSError as exc:  # the local temporary file: a full or read-only temporary folder
                raise disk_error(exc, local) from None
            with self._reaching(self.address(name)):
                try:
                    self.fs.put_file(str(local), self._key(name))
                except FileNotFoundError as exc:  # what s3fs, gcsfs ... say of a bucket that is not there
                    raise MmgbmError(
                        f"{self.address(name)}: cannot be written ({exc}); create the bucket or fix the `store` URL"
                    ) from None
        return self.address(name)

    def rename(self, name: str, new_name: str) -> None:
        with self._reaching(self.address(name)):  # a copy and a delete: readers skip either name
            self.fs.mv(self._key(name), self._key(new_name))

    def delete(self, name: str) -> None:
        """Remove one object; one already gone is fine."""
        with self._reaching(self.address(name)):
            try:
                self.fs.rm_file(self._key(name))
            except FileNotFoundError:
                pass

    def remove(self) -> None:
        self.fs.invalidate_cache(self.path)
        with self._reaching(self.root):
            try:
                self.fs.rm(self.path, recursive=True)
            except FileNotFoundError:  # nothing was stored yet
                pass

    def remove_orphans(self) -> None:
        """Uploads that did not finish never became objects: nothing to remove."""

    def _key(self, name: str) -> str:
        return f"{self.path}/{name}"

    @contextmanager
    def _reaching(self, where: str) -> Iterator[None]:
        """The object store's failures (no connection, no such bucket, access denied: each client library has its
        own exceptions) as one line naming `where`; a missing object stays FileNotFoundError for the caller."""
        try:
            yield
        except (FileNotFoundError, MmgbmError):
            raise
        except Exception as exc:
            raise StorageError(
                f"{where}: the object store failed ({type(exc).__name__}: {first_line(exc)}); check "
                f"the `store` URL, `store_options` (endpoint_url ...) and the credentials"
            ) from None


class _Fetching:
    """A remote file as a reader sees it, whose reads turn the store's failures into StorageError. Readers (pyarrow,
    pandas) pass a file's own exceptions through unchanged, so a dropped connection in the middle of a shard is
    told apart from a damaged shard, which the reader itself reports."""

    def __init__(self, fh: IO[bytes], reaching: Callable[[], Any]):
        self._fh, self._reaching = fh, reaching

    def read(self, size: int = -1) -> bytes:
        with self._reaching():
            return self._fh.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        with self._reaching():
            return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        self._fh.close()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.read().splitlines(keepends=True))
