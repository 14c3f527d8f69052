"""A person's decisions on training labels: `<workdir>/labels/<target>.csv`, one line per answer, oldest first.

    id,target,given,suggested,decided,by,at,model,audit

`given` and `suggested` are what the reviewer was shown, `decided` the label they chose (the given one when they
kept it), `by` who (when the request said), `at` when (UTC), `model` and `audit` the fingerprints of the model and
of the audit.csv the suspect came from. The file is data: a person may read, edit or delete lines. A product
decided twice (two reviewers, a change of mind) takes its last line.

Lines are only ever appended, each in one write under an exclusive lock and flushed to the disk before the answer
is acknowledged: two reviewers (two browser tabs, two services on a shared workdir) interleave whole lines and lose
none. A write cut short by a crash leaves a last line without its newline: readers ignore it and the next writer
cuts it off before appending, so it can never glue itself to the next decision.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import os
from dataclasses import astuple, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mmgbm.config import Config
from mmgbm.errors import MmgbmError
from mmgbm.features.atomic import disk_error
from mmgbm.workdir import labels_path

# Far above any real line; bounds how far back the writer looks for the end of the last whole line.
MAX_LINE_BYTES = 16_384
MAX_FIELD_CHARS = 1_000
REQUIRED = ("id", "target", "decided")


@dataclass(frozen=True)
class Decision:
    id: str
    target: str
    given: str
    suggested: str
    decided: str
    by: str = ""
    at: str = ""
    model: str = ""
    audit: str = ""


COLUMNS = [f.name for f in fields(Decision)]
HEADER = ",".join(COLUMNS) + "\n"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def append_decision(path: Path, decision: Decision) -> None:
    """Append one decision as one whole line, durable on return; the file and its header are made on first use."""
    for name, value in zip(COLUMNS, astuple(decision)):
        # A line break would split the line that readers and the torn-tail repair rely on being one.
        if "\n" in value or "\r" in value or "\0" in value or len(value) > MAX_FIELD_CHARS:
            raise MmgbmError(
                f"{name} {value[:80]!r} cannot be recorded: no line breaks, at most {MAX_FIELD_CHARS:,} characters"
            )
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(astuple(decision))
    line = out.getvalue().encode()
    try:
        _append(path, line)
    except OSError as exc:  # a full disk, a read-only workdir: one line naming the file
        raise disk_error(exc, path) from None


def _append(path: Path, line: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, also when the process dies
        size = _whole_lines(fd)
        data = (HEADER.encode() if size == 0 else b"") + line
        if os.write(fd, data) != len(data):  # a full disk: take the fragment back rather than leave half a line
            os.ftruncate(fd, size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:  # the new file's name must survive a crash too
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _whole_lines(fd: int) -> int:
    """The size of the file up to its last newline, cutting off a torn last line (a writer that died mid-write)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    start = max(0, size - MAX_LINE_BYTES)
    tail = os.pread(fd, size - start, start)
    if tail.endswith(b"\n"):
        return size
    keep = start + tail.rfind(b"\n") + 1  # 0 when not even the header is whole: the file starts again
    os.ftruncate(fd, keep)
    return keep


@dataclass
class Corrections:
    """The last decision per product of one target's labels file."""

    path: Path
    latest: pd.DataFrame  # indexed by id: given, decided (the last line of each product)
    torn: int  # lines cut short by a crash, ignored

    def apply(self, frame: pd.DataFrame, column: str, id_column: str) -> tuple[pd.DataFrame, int]:
        """`frame` with the decided label in `column` for each decided product, and how many of its products a
        decision changed (one that kept the given label changes nothing)."""
        if column not in frame.columns:  # an unlabelled split: the command says so itself
            return frame, 0
        decided = frame[id_column].map(self.latest["decided"])
        hit = decided.notna()
        if not hit.any():
            return frame, 0
        changed = frame[id_column][hit].map(self.latest["given"] != self.latest["decided"])
        frame = frame.copy()
        frame[column] = frame[column].astype(object).where(~hit, decided)
        return frame, int(changed.sum())


def read_corrections(path: Path, target: str) -> Corrections:
    """The decisions of `path` for `target`; a line a person broke is a one-line error naming it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MmgbmError(f"{path}: cannot read the decisions ({exc.strerror})") from None
    lines = raw.split(b"\n")
    torn = int(lines.pop() != b"")  # the text after the last newline: a write that never finished
    if not lines:
        return Corrections(path, pd.DataFrame(columns=["given", "decided"]), torn)
    header = _row(path, 1, lines[0])
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise MmgbmError(f"{path} line 1: no column {missing[0]!r} in the header; it must name {', '.join(COLUMNS)}")
    rows = {}
    for number, line in enumerate(lines[1:], start=2):
        if b"\0" in line:  # zeros where a crash lost the data of a write the file's size already counted
            torn += 1
            continue
        values = _row(path, number, line)
        if not values:
            continue
        if len(values) != len(header):
            raise MmgbmError(
                f"{path} line {number}: {len(values)} fields where the header has {len(header)}; fix or delete the line"
            )
        row = dict(zip(header, values))
        for column in REQUIRED:
            if not row[column].strip():
                raise MmgbmError(f"{path} line {number}, column {column}: empty; fill it or delete the line")
        if row["target"] != target:
            raise MmgbmError(
                f"{path} line {number}, column target: {row['target']!r} is not {target!r}; move the "
                f"line to that target's file or delete it"
            )
        rows[row["id"].strip()] = (row.get("given", ""), row["decided"].strip())
    latest = pd.DataFrame.from_dict(rows, orient="index", columns=["given", "decided"])
    return Corrections(path, latest, torn)


def _row(path: Path, number: int, line: bytes) -> list[str]:
    try:
        return next(csv.reader([line.decode().rstrip("\r")]), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MmgbmError(f"{path} line {number}: unreadable ({exc}); fix or delete the line") from None


def load_corrections(cfg: Config, target: str) -> Corrections | None:
    """The decisions that train, evaluate and audit read a target's labels through; None without a file, or with
    `data.corrections: false`."""
    return read_decisions(cfg, target) if cfg.data.corrections else None


def read_decisions(cfg: Config, target: str) -> Corrections | None:
    """Every decision on a target's labels, whether or not training applies them: what a review has done."""
    path = labels_path(cfg, target)
    return read_corrections(path, target) if path.is_file() else None


def correct_labels(cfg: Config, target: str, frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame, dict | None]:
    """`frame` with the target's decisions applied to `column` (when `data.corrections` is on and a file exists),
    and what was applied, as the metrics record it (None when nothing was read)."""
    corrections = load_corrections(cfg, target)
    if corrections is None:
        return frame, None
    frame, changed = corrections.apply(frame, column, cfg.data.id_column)
    return frame, {"file": str(corrections.path), "corrected": changed, "torn_lines": corrections.torn}


def corrections_note(applied: dict | None) -> str:
    """How many labels decisions corrected, for a command's summary line ('' when none were read)."""
    if applied is None:
        return ""
    torn = f", {applied['torn_lines']} line cut short by a crash ignored" if applied["torn_lines"] else ""
    return f"; {applied['corrected']:,} labels corrected by {Path(applied['file']).name}{torn}"
