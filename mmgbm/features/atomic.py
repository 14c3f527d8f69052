"""Writing files so that a crash, a full disk or a concurrent writer never leaves half a file under its real name.

Every file of the workdir is written to a hidden `.<name>.<pid>-<random>.tmp` beside its final place and renamed
over it. A killed writer leaves its temporary file behind; the next writer in that folder removes the ones old
enough that no live writer can still be filling them (a shared workdir may hold writers of other machines, whose
pids mean nothing here, so age is the test rather than the pid).
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from mmgbm.errors import MmgbmError

TMP_SUFFIX = ".tmp"
# Longer than any one shard, vectorizer or failures list takes to write, by far.
ORPHAN_AGE_SECONDS = 3600


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` and rename tmp to `path`; on any failure nothing is left, and an OSError (disk full,
    read-only folder) becomes one line naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise disk_error(exc, path) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # the folder may be unwritable: then there is no temporary file either
            pass
    return path


def remove_orphans(folder: Path, max_age: float = ORPHAN_AGE_SECONDS) -> int:
    """Delete temporary files of killed writers in `folder`; returns how many."""
    if not folder.is_dir():
        return 0
    cutoff = time.time() - max_age
    removed = 0
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        try:
            if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except OSError:  # another writer removed it first, or the folder is read-only: not ours to fix here
            continue
    return removed


def disk_error(exc: OSError, path: Path | str | None = None) -> MmgbmError:
    """One line for a failed write or read of the workdir: what, where, and what to do about it."""
    where = path or exc.filename or "the workdir"
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return MmgbmError(
            f"{where}: no space left on the device; free some space and re-run the command "
            f"(everything finished before is kept, only the rest is redone)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return MmgbmError(
            f"{where}: not writable ({exc.strerror}); make the workdir writable or point `workdir` "
            f"at a folder you can write"
        )
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return MmgbmError(
            f"{where}: a file stands where a folder is needed ({exc.strerror}); move it or point `workdir` elsewhere"
        )
    if exc.errno == errno.EISDIR:
        return MmgbmError(f"{where}: is a folder; give a file name instead")
    return MmgbmError(f"{where}: {exc.strerror or exc}")
