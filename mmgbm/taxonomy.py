"""Category paths and taxonomy files: what a path target's values mean, and the tree they must belong to.

A path is a tuple of level names, root first: `("Clothing", "Women's Clothing", "Western Wear")`. It is read from one
column written with a separator (`Clothing >> Women's Clothing >> Western Wear`, also wrapped in a JSON list as
Flipkart writes it: `["Clothing >> ..."]`) or from one column per level (`cat_l1, cat_l2, cat_l3`, a missing level
ending the path). Inside mmgbm a path is one string, its levels joined by the target's separator.

A taxonomy file names every node a path may be:
    Google's published list with ids      1604 - Apparel & Accessories > Clothing      (lines starting # are skipped)
    the plain list                        Apparel & Accessories > Clothing
    a CSV of paths                        a `path` column, or one column per level (an `id` column is ids)
    a CSV of nodes                        `id`, `parent` (the parent's id; empty for a root), `name`
Every prefix of a listed path is a node too. Path levels in a text file or a `path` column are split on the target's
separator, as its labels are.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mmgbm.errors import MmgbmError, first_line

# Characters catalogues write between levels: a run of them in a value is a separator, and must be the target's.
SEPARATOR_MARKS = re.compile(r"[>|»›→]+")
# Characters that separate levels in some catalogues (Magento's `Default Category/Grocery/Spices`) but also occur in
# level names (`T-Shirts/Tops`): only a column where no path splits on the target's separator and most values hold one
# of them is read as written with it.
LOOSE_MARKS = ("/", "\\", "::", ":", ",", ";")
GOOGLE_LINE = re.compile(r"(\d+)\s+-\s+(.*)")


class PathProblem(ValueError):
    """What is wrong with one path value; the caller says where it is."""


@dataclass(frozen=True)
class PathFormat:
    """How a target writes its paths: `separator` between levels, at most `max_depth` levels (deeper ones are an error
    unless `truncate`, which keeps their first `max_depth`)."""

    separator: str = " > "
    max_depth: int | None = None
    truncate: bool = False

    def split(self, value: object) -> tuple[str, ...] | None:
        """The levels of one written path; None when it is missing (empty, NaN, an empty JSON list)."""
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return None
        text = str(value).strip()
        if text.startswith("["):
            try:
                listed = json.loads(text)
            except ValueError:
                listed = None
            if isinstance(listed, list):
                # A product filed under several paths: the first is its main one (as a feed's first photo).
                text = str(listed[0]).strip() if listed else ""
        if not text:
            return None
        mark = self.separator.strip() or self.separator
        for run in SEPARATOR_MARKS.findall(text):
            if run != mark:
                raise PathProblem(
                    f"path {text!r} is written with {run!r} between levels, not the target's "
                    f"separator {self.separator!r}; write every path with {self.separator!r}, or set "
                    f"the target's separator to {f' {run} '!r} if every path is written so"
                )
        return self.checked(tuple(level.strip() for level in text.split(mark)), text)

    def unsplit(self, texts: list[str]) -> PathProblem | None:
        """Where a column's paths (as written) never split on the separator but most hold one of LOOSE_MARKS, what
        to set instead: such a column would otherwise train as paths of one level."""
        if not texts or any(self.separator.strip() in t for t in texts):
            return None
        for mark in LOOSE_MARKS:
            holding = [t for t in texts if mark in t]
            if 2 * len(holding) > len(texts):
                example = holding[0]
                spaced = f" {mark} " if f" {mark} " in example else mark
                return PathProblem(
                    f"no path is written with the separator {self.separator!r} (every one would be a single "
                    f"level) and {len(holding):,} of {len(texts):,} hold {mark!r}, e.g. {example!r}; set the "
                    f"target's separator to {spaced!r}, or use task: multiclass if the values are not paths"
                )
        return None

    def from_levels(self, values: Iterable[object]) -> tuple[str, ...] | None:
        """A path from one value per level (cat_l1, cat_l2 ...): it ends at the first missing level."""
        levels = [
            None if v is None or (not isinstance(v, str) and pd.isna(v)) or not str(v).strip() else str(v).strip()
            for v in values
        ]
        depth = next((i for i, v in enumerate(levels) if v is None), len(levels))
        deeper = [i for i in range(depth, len(levels)) if levels[i] is not None]
        if deeper:
            raise PathProblem(
                f"level {depth + 1} is empty but level {deeper[0] + 1} is not (an empty level); fill it "
                f"in or clear the levels below it"
            )
        mark = self.separator.strip() or self.separator
        for level in levels[:depth]:
            if mark in level:
                raise PathProblem(
                    f"level {level!r} contains the separator {self.separator!r}; set the target's "
                    f"separator to something no level name contains"
                )
        return self.checked(tuple(levels[:depth]), self.join(levels[:depth])) if depth else None

    def checked(self, levels: tuple[str, ...], shown: str) -> tuple[str, ...]:
        empty = [i + 1 for i, level in enumerate(levels) if not level]
        if empty:
            raise PathProblem(
                f"path {shown!r} has an empty level {empty[0]}; remove the extra separator or name the level"
            )
        if self.max_depth is not None and len(levels) > self.max_depth:
            if not self.truncate:
                raise PathProblem(
                    f"path {shown!r} has {len(levels)} levels, deeper than max_depth {self.max_depth}; "
                    f"raise max_depth, or set truncate: true to learn its first {self.max_depth}"
                )
            levels = levels[: self.max_depth]
        return levels

    def join(self, levels: Iterable[str]) -> str:
        return self.separator.join(levels)


def prefixes(levels: tuple[str, ...]) -> list[tuple[str, ...]]:
    """('A', 'B', 'C') -> [('A',), ('A', 'B'), ('A', 'B', 'C')]: the node and its ancestors."""
    return [levels[:d] for d in range(1, len(levels) + 1)]


@dataclass(frozen=True)
class Taxonomy:
    """Every node of a taxonomy file (each as its levels), and the file it came from."""

    nodes: frozenset[tuple[str, ...]]
    source: str

    def __contains__(self, levels: tuple[str, ...]) -> bool:
        return levels in self.nodes

    def closest(self, levels: tuple[str, ...]) -> tuple[str, ...] | None:
        """The node most like `levels` by name: among nodes whose last level is named most like its last level, the
        one whose whole path reads most like it."""
        by_name: dict[str, list[tuple[str, ...]]] = {}
        for node in self.nodes:
            by_name.setdefault(node[-1].lower(), []).append(node)
        names = difflib.get_close_matches(levels[-1].lower(), list(by_name), n=3, cutoff=0.0)
        shown = " > ".join(levels).lower()
        return max(
            (node for name in names for node in by_name[name]),
            key=lambda node: difflib.SequenceMatcher(None, shown, " > ".join(node).lower()).ratio(),
            default=None,
        )


def read_taxonomy(path: Path, form: PathFormat) -> Taxonomy:
    """A taxonomy file in any of the module docstring's formats; every problem is one line naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MmgbmError(f"taxonomy file {path} not found; check the target's taxonomy setting")
    if path.suffix.lower() == ".csv":
        paths = _csv_paths(path, form)
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise MmgbmError(f"{path}: not UTF-8 text; save the taxonomy as UTF-8") from None
        paths = _text_paths(path, lines, form)
    nodes = frozenset(node for levels in paths for node in prefixes(levels))
    if not nodes:
        raise MmgbmError(f"{path}: no categories in the file; list one path per line")
    return Taxonomy(nodes, str(path))


def _text_paths(path: Path, lines: list[str], form: PathFormat) -> list[tuple[str, ...]]:
    """Google's `id - A > B` lines or plain `A > B` lines."""
    paths, ids = [], {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        google = GOOGLE_LINE.fullmatch(line)
        if google:
            node_id, line = google.groups()
            if node_id in ids:
                raise MmgbmError(
                    f"{path} line {number}: id {node_id} is also on line {ids[node_id]} (duplicate "
                    f"id); give every category its own id"
                )
            ids[node_id] = number
        paths.append(_file_path(form, line, f"{path} line {number}"))
    return paths


def _csv_paths(path: Path, form: PathFormat) -> list[tuple[str, ...]]:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MmgbmError(f"{path}: not a readable CSV ({first_line(exc)}); save it as CSV (UTF-8)") from None
    columns = {c.strip().lower(): c for c in frame.columns}
    if "id" in columns:
        ids = frame[columns["id"]].str.strip()
        repeated = ids[ids.duplicated()]
        if len(repeated):
            first = int(ids[ids == repeated.iloc[0]].index[0])
            raise MmgbmError(
                f"{path} line {int(repeated.index[0]) + 2}: id {repeated.iloc[0]!r} is also on line "
                f"{first + 2} (duplicate id); give every category its own id"
            )
    if {"id", "parent", "name"} <= set(columns):
        return _node_paths(path, frame, columns)
    if "path" in columns:
        return [
            _file_path(form, value, f"{path} line {i + 2}")
            for i, value in enumerate(frame[columns["path"]])
            if value.strip()
        ]
    levels = [c for c in frame.columns if c.strip().lower() != "id"]
    out = []
    for i, row in enumerate(frame[levels].itertuples(index=False)):
        try:
            out.append(PathFormat(form.separator).from_levels(row))
        except PathProblem as exc:
            raise MmgbmError(f"{path} line {i + 2}: {exc}") from None
    return [levels for levels in out if levels]


def _node_paths(path: Path, frame: pd.DataFrame, columns: dict[str, str]) -> list[tuple[str, ...]]:
    """Paths of a CSV of nodes (id, parent, name), each followed up to its root; a cycle is an error."""
    ids = frame[columns["id"]].str.strip().tolist()
    parent = dict(zip(ids, frame[columns["parent"]].str.strip()))
    name = dict(zip(ids, frame[columns["name"]].str.strip()))
    line = {node: i + 2 for i, node in enumerate(ids)}
    paths = []
    for node in ids:
        chain = [node]
        while parent[chain[-1]]:
            up = parent[chain[-1]]
            if up not in parent:
                raise MmgbmError(
                    f"{path} line {line[chain[-1]]}: parent {up!r} is no id of the file; fix the parent or add its line"
                )
            if up in chain:
                cycle = " -> ".join(chain[chain.index(up) :] + [up])
                raise MmgbmError(
                    f"{path} line {line[up]}: the parents form a cycle ({cycle}); a category cannot be "
                    f"its own ancestor: fix one of these parents"
                )
            chain.append(up)
        empty = [n for n in chain if not name[n]]
        if empty:
            raise MmgbmError(f"{path} line {line[empty[0]]}: id {empty[0]!r} has an empty name; name it")
        paths.append(tuple(name[n] for n in reversed(chain)))
    return paths


def _file_path(form: PathFormat, value: str, where: str) -> tuple[str, ...]:
    # A taxonomy may be deeper than the target's max_depth: its nodes are all kept, and labels are checked.
    try:
        levels = PathFormat(form.separator).split(value)
    except PathProblem as exc:
        raise MmgbmError(f"{where}: {exc}") from None
    if levels is None:
        raise MmgbmError(f"{where}: no category; delete the line or name one")
    return levels
