"""Reading and validating catalogue tables: CSV, TSV, Parquet, JSON Lines or a Google Merchant Center feed (tab-
separated or RSS XML, see mmgbm/feeds.py), keyed by a product id column.

Ids are always read as strings so that `16234` in a CSV and `"16234"` in a Parquet file are the same product.

A record of a delimited file with more fields than its header is broken: pandas cannot tell which value belongs
to which column. It stops the read with the file line the record starts on (a quoted field may span lines, so the
record number pandas reports is no line a user can find), or, with `data.bad_rows: skip`, is left out and listed in
<workdir>/reports/bad_rows/<split>.csv, and the CLI prints one note.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmgbm.config import Config
from mmgbm.errors import MmgbmError, MmgbmWarning
from mmgbm.features.atomic import write_atomically
from mmgbm.feeds import PREFIX, is_merchant_header, read_xml_feed, tidy_delimited_feed
from mmgbm.workdir import bad_rows_path

READERS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xml": "merchant xml",
}
SEPARATORS = {"csv": ",", "tsv": "\t"}


def read_table(path: Path, id_column: str, skipped_report: Path | None = None) -> pd.DataFrame:
    """Read one table with its id column as strings; one-line errors for anything a user can get wrong. A broken
    record of a delimited file is one of them, unless `skipped_report` is given: then it is skipped, listed in that
    CSV and counted in an MmgbmWarning."""
    path = Path(path)
    if not path.is_file():
        raise MmgbmError(f"table {path} not found; check data.splits in the config")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise MmgbmError(
            f"{path}: unknown table format {path.suffix!r}; use .csv, .tsv/.txt, .parquet, .jsonl or a Merchant "
            "Center .xml feed"
        )
    try:
        if kind == "merchant xml":
            frame = read_xml_feed(path, id_column)
        elif kind in SEPARATORS:
            frame = _read_delimited(path, SEPARATORS[kind], id_column, skipped_report)
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True, dtype={id_column: str})
    except MmgbmError:
        raise
    except Exception as exc:  # pandas raises many types for unreadable files; all mean the same to a user
        raise MmgbmError(f"{path}: cannot read as {kind} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise MmgbmError(f"{path}: no products (the table has no rows); fill it or point the config at another table")
    return validate_ids(frame, id_column, str(path))


def _read_delimited(path: Path, sep: str, id_column: str, skipped_report: Path | None) -> pd.DataFrame:
    feed = is_merchant_header(pd.read_csv(path, sep=sep, nrows=0).columns)
    dtype = str if feed else {id_column: str}  # a feed's attributes are all text (mmgbm/feeds.py)
    if skipped_report is not None:
        skipped_report.unlink(missing_ok=True)  # it listed what an earlier read of the table skipped
    frame = _read_sound(path, sep, dtype)
    if frame is None:
        frame = _read_on_past_broken(path, sep, dtype, id_column, skipped_report)
    return tidy_delimited_feed(frame, str(path), id_column) if feed else frame


def _read_sound(path: Path, sep: str, dtype: object) -> pd.DataFrame | None:
    """The table as pandas' C parser reads it at full speed, or None when a record has more fields than the header:
    the parser refuses such a record, except the first, whose extra field it silently takes for an index."""
    try:
        frame = pd.read_csv(path, sep=sep, dtype=dtype, low_memory=False)
    except pd.errors.ParserError as exc:
        if BROKEN_RECORD_ERROR in str(exc):
            return None
        raise
    return frame if isinstance(frame.index, pd.RangeIndex) else None


def _read_on_past_broken(
    path: Path, sep: str, dtype: object, id_column: str, skipped_report: Path | None
) -> pd.DataFrame:
    records = scan_records(path, sep, id_column)
    if not records.broken:  # pandas and the csv module split the file differently: nothing to name
        raise MmgbmError(f"{path}: a record has more fields than the header; check the file's quoting")
    first = records.broken[0]
    if skipped_report is None:
        raise MmgbmError(
            f"{path} line {first.line}{first.naming}: {first.reason}; fix the record or set data.bad_rows: skip "
            "to read on"
        )
    frame = pd.read_csv(records.sound_csv(), dtype=dtype, low_memory=False)
    report = pd.DataFrame(
        {
            "line": [r.line for r in records.broken],
            "id": [r.id for r in records.broken],
            "reason": [r.reason for r in records.broken],
        }
    )
    write_atomically(skipped_report, lambda tmp: report.to_csv(tmp, index=False))
    warnings.warn(_skipped_summary(path, records.broken, skipped_report), MmgbmWarning, stacklevel=2)
    return frame


# How pandas' C parser words a record with more fields than the header ("Expected 11 fields in line 7, saw 12").
BROKEN_RECORD_ERROR = "C error: Expected "


@dataclass(frozen=True)
class BrokenRecord:
    line: int  # the file line the record starts on; the header is line 1
    id: str | None  # the value where the id column is, if the record has one there
    fields: int
    header_fields: int

    @property
    def reason(self) -> str:
        return f"record has {self.fields} fields, the header has {self.header_fields}"

    @property
    def naming(self) -> str:
        return f" (id {self.id!r})" if self.id else ""


@dataclass
class Records:
    """A delimited file split into records the way pandas splits it, by the csv module, which says where each
    record starts."""

    header: list[str]
    sound: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the file line each sound record starts on
    broken: list[BrokenRecord] = field(default_factory=list)

    def sound_csv(self) -> io.StringIO:
        """The header and the sound records as one CSV text, for pandas to read with its usual type inference."""
        text = io.StringIO()
        csv.writer(text).writerows([self.header, *self.sound])
        text.seek(0)
        return text


def scan_records(path: Path, sep: str, id_column: str) -> Records:
    """Every record of a delimited file, sound or broken (more fields than the header), with the line it starts on."""
    limit = csv.field_size_limit(2**31 - 1)  # pandas reads a field of any length; so must the scan
    try:
        with open(path, newline="", encoding="utf-8-sig") as source:
            reader = csv.reader(source, delimiter=sep)
            header = next((fields for fields in reader if fields), [])  # blank lines are no records, as for pandas
            id_at = _id_position(header, id_column)
            records = Records(header)
            start = reader.line_num + 1
            for fields in reader:
                if len(fields) > len(header):
                    pid = fields[id_at].strip() if id_at is not None else None
                    records.broken.append(BrokenRecord(start, pid or None, len(fields), len(header)))
                elif fields:
                    records.sound.append(fields)
                    records.lines.append(start)
                start = reader.line_num + 1
    finally:
        csv.field_size_limit(limit)
    return records


def _id_position(header: list[str], id_column: str) -> int | None:
    names = [name.strip().removeprefix(PREFIX) for name in header]  # a feed's header may write g:id
    return names.index(id_column) if id_column in names else None


def _skipped_summary(path: Path, broken: list[BrokenRecord], report: Path) -> str:
    lines = ", ".join(str(r.line) for r in broken[:5]) + (" ..." if len(broken) > 5 else "")
    if len(broken) == 1:
        return f"{path}: 1 broken record skipped (line {lines}) -> {report}"
    return f"{path}: {len(broken):,} broken records skipped (lines {lines}) -> {report}"


def validate_ids(frame: pd.DataFrame, id_column: str, source: str) -> pd.DataFrame:
    if id_column not in frame.columns:
        raise MmgbmError(f"{source}: no id column {id_column!r}{_suggest(id_column, frame.columns)}")
    ids = frame[id_column]
    null = ids.isna() | (ids.astype(str).str.strip() == "")
    if null.any():
        where = _where(source, frame.index[null][:5])
        raise MmgbmError(
            f"{source}: {int(null.sum())} rows have an empty id in {id_column!r}{where}; every product needs an id"
        )
    ids = ids.map(_id_string)
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        examples = ", ".join(map(repr, dup.unique()[:5]))
        raise MmgbmError(
            f"{source}: {dup.nunique()} duplicate product ids in {id_column!r} (e.g. {examples}); ids must be unique"
        )
    frame = frame.copy()
    frame[id_column] = ids
    return frame.reset_index(drop=True)


def _where(source: str, rows: pd.Index) -> str:
    """Where rows are in the file, for a file whose rows a user can find: the lines of a delimited file its records
    start on (a quoted field may span lines; a skipped broken record is no row), items of XML."""
    kind = READERS.get(Path(source).suffix.lower())
    if kind in SEPARATORS:
        lines = scan_records(Path(source), SEPARATORS[kind], "").lines
        return f" (file lines {', '.join(str(lines[i]) for i in rows)})"
    if source.lower().endswith(".xml"):
        return f" (items {', '.join(str(i + 1) for i in rows)})"
    return ""


def _id_string(value: object) -> str:
    # Parquet/JSON may carry ints or floats; 123.0 and 123 name the same product.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _suggest(name: str, columns: object) -> str:
    cols = [str(c) for c in columns]
    close = difflib.get_close_matches(name, cols, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; columns are: {', '.join(cols[:12])}{' ...' if len(cols) > 12 else ''}"


def required_columns(cfg: Config, with_targets: bool = True) -> list[str]:
    data = cfg.data
    cols = list(data.text_columns) + list(data.categorical_columns) + list(data.numeric_columns)
    for field_cols in cfg.text_fields.values():
        cols += field_cols
    if data.image_column:
        cols.append(data.image_column)
    if with_targets:
        cols += [c for t in cfg.targets.values() for c in t.source_columns]
    return list(dict.fromkeys(cols))


def check_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    for col in columns:
        if col not in frame.columns:
            raise MmgbmError(f"{source}: no column {col!r} named in the config{_suggest(col, frame.columns)}")


def empty_columns(cfg: Config, frame: pd.DataFrame) -> list[str]:
    """Configured feature columns (text, image, metadata) without a single value in `frame`."""
    data = cfg.data
    named = [
        *data.text_columns,
        *(c for cols in cfg.text_fields.values() for c in cols),
        *data.categorical_columns,
        *data.numeric_columns,
        *([data.image_column] if data.image_column else []),
    ]
    return [
        c
        for c in dict.fromkeys(named)
        if c in frame.columns and frame[c].map(lambda v: pd.isna(v) or str(v).strip() == "").all()
    ]


def _id_unit(ids: pd.Series, salt: str) -> pd.Series:
    """A per-id number in [0, 1) from a hash: the same product always gets the same number."""

    def unit(pid: str) -> float:
        return int.from_bytes(hashlib.sha1(f"{salt}:{pid}".encode()).digest()[:8], "big") / 2**64

    return ids.map(unit)


def in_holdout(ids: pd.Series, fraction: float, seed: int) -> pd.Series:
    """Deterministic per-id membership: the same product always lands on the same side."""
    return _id_unit(ids, str(seed)) < fraction


def load_split(cfg: Config, split: str, with_targets: bool = True) -> pd.DataFrame:
    """The products of one split, validated against the config's column roles."""
    data = cfg.data
    holdout = data.holdout
    if split not in cfg.split_names:
        raise MmgbmError(f"unknown split {split!r}; the config has: {', '.join(cfg.split_names)}")
    if holdout is not None and split in (holdout.name, "train"):
        frame = _read_split_table(cfg, "train")
        mask = in_holdout(frame[data.id_column], holdout.fraction, holdout.seed)
        frame = frame[mask if split == holdout.name else ~mask].reset_index(drop=True)
        source = f"{data.splits['train']} ({split} part)"
    else:
        frame = _read_split_table(cfg, split)
        source = str(data.splits[split])
    # Target columns are required on train; other splits may be unlabelled (evaluate checks for them itself).
    check_columns(frame, required_columns(cfg, with_targets=with_targets and split == "train"), source)
    return frame


def read_configured(cfg: Config, path: Path, name: str) -> pd.DataFrame:
    """A table of the catalogue read as the config says: with `data.bad_rows: skip`, its broken records are listed in
    the bad-rows report `name` (a split, or `input` for a table given on the command line)."""
    report = bad_rows_path(cfg, name) if cfg.data.bad_rows == "skip" else None
    return read_table(path, cfg.data.id_column, skipped_report=report)


def _read_split_table(cfg: Config, split: str) -> pd.DataFrame:
    return read_configured(cfg, cfg.data.splits[split], split)


def load_all_products(cfg: Config) -> pd.DataFrame:
    """Every product of every split, once: what the extract commands cover."""
    frames = [load_split(cfg, name, with_targets=False) for name in cfg.split_names]
    allp = pd.concat(frames, ignore_index=True)
    return allp.drop_duplicates(subset=cfg.data.id_column, keep="first").reset_index(drop=True)
