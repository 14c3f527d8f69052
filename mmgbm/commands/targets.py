"""Which targets a command works on, the metadata each may read, and the target values it learns from.

Rows whose target cannot be learned from (missing, not positive under a log target, or a value the target's
`normalise` file marks as no label) are dropped and counted rather than crashing a run, and every command reports
how many. Labels are read in the target's canonical names (`targets.<name>.normalise`); a path target's values are
read as paths (mmgbm.taxonomy), one string each, its levels joined by the target's separator.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mmgbm.commands.normalise import read_names
from mmgbm.config import Config, TargetConfig
from mmgbm.errors import MmgbmError
from mmgbm.estimator.label_names import LabelNames
from mmgbm.taxonomy import PathFormat, PathProblem, Taxonomy, read_taxonomy

ALL = "all"
LISTED_OFF_TAXONOMY = 20  # paths outside the taxonomy that validate names one by one, most products first


def resolve_targets(cfg: Config, names: list[str] | None) -> list[str]:
    """`None`, `[]` or `["all"]` mean every configured target; unknown names are a one-line error."""
    if not cfg.targets:
        raise MmgbmError("the config has no targets; add a `targets:` section (see configs/ for examples)")
    if not names or ALL in names:
        return list(cfg.targets)
    unknown = [n for n in names if n not in cfg.targets]
    if unknown:
        raise MmgbmError(f"unknown target {unknown[0]!r}; the config has: {', '.join(cfg.targets)} (or 'all')")
    return list(dict.fromkeys(names))


def metadata_columns(cfg: Config, target: TargetConfig) -> tuple[list[str], list[str]]:
    """(categorical, numeric) metadata columns for a target: never its own column or the ones it excludes."""
    skip = {*target.source_columns, *target.exclude_columns}
    return (
        [c for c in cfg.data.categorical_columns if c not in skip],
        [c for c in cfg.data.numeric_columns if c not in skip],
    )


@dataclass
class TargetValues:
    """Learnable rows of a table for one target: `keep` (bool per row) and `y` for the kept rows, on the target's
    own scale (the regressor applies log1p itself)."""

    keep: np.ndarray
    y: np.ndarray
    dropped_missing: int
    dropped_nonpositive: int
    dropped_no_label: int = 0
    names_source: str = ""  # where the no-label marks come from
    no_label_values: Counter = field(default_factory=Counter)  # value as written -> products it marks no label
    # A regression target's values written but not numbers ("Rs. 465", "4,99"): counted among the missing, and the
    # first one shown, since a column of them is a formatting problem the user can fix, not missing prices.
    not_numbers: int = 0
    not_number_example: str = ""
    # A path target's labels that are no node of its taxonomy file (levels -> products), left out.
    off_taxonomy: dict[tuple[str, ...], int] = field(default_factory=dict)
    taxonomy: Taxonomy | None = None

    def describe(self) -> str:
        parts = []
        if self.dropped_missing:
            text = (
                f" ({self.not_numbers:,} written but not numbers, e.g. {self.not_number_example!r})"
                if self.not_numbers
                else ""
            )
            parts.append(f"{self.dropped_missing:,} with a missing target{text}")
        if self.dropped_nonpositive:
            parts.append(f"{self.dropped_nonpositive:,} with a target <= 0 (no log)")
        if self.dropped_no_label:
            parts.append(f"{self.dropped_no_label:,} marked no_brand in {Path(self.names_source).name}")
        if self.off_taxonomy:
            parts.append(
                f"{sum(self.off_taxonomy.values()):,} with a path not in {Path(self.taxonomy.source).name} "
                f"(`mmgbm validate` lists them)"
            )
        return f"dropped {' and '.join(parts)}" if parts else "no rows dropped"


def given_labels(frame: pd.DataFrame, column: str) -> pd.Series:
    """A classification target's label of each row as written (stripped); missing (NaN) where it is missing or
    empty."""
    return frame[column].map(lambda v: None if pd.isna(v) or not str(v).strip() else str(v).strip())


def target_names(cfg: Config, name: str, frame: pd.DataFrame) -> LabelNames | None:
    """The names target `name` trains with (`normalise`): none, its training labels grouped, or a file's."""
    setting = cfg.targets[name].normalise
    if setting is None:
        return None
    if setting == "auto":
        column = cfg.targets[name].column
        return LabelNames.grouped(given_labels(frame, column).value_counts().to_dict() if column in frame else {})
    return read_names(Path(setting))


def target_values(
    frame: pd.DataFrame,
    target: TargetConfig,
    source: str,
    names: LabelNames | None = None,
    id_column: str | None = None,
) -> TargetValues:
    """The learnable rows; with `names`, labels in their canonical names and values that name no label dropped. A
    path that cannot be read is an error naming the product (its `id_column`)."""
    for column in target.source_columns:
        if column not in frame.columns:
            raise MmgbmError(f"{source}: no target column {column!r}; add it or pick another --target")
    if target.task == "path":
        return path_values(frame, target, source, id_column)
    raw = frame[target.column]
    if target.task != "regression":
        given = given_labels(frame, target.column).to_numpy()
        keep = pd.notna(given)
        if names is None:
            return TargetValues(keep, given[keep].astype(str), int((~keep).sum()), 0)
        named = np.full(len(given), None, dtype=object)
        named[keep] = names.names(given[keep])
        marked = keep & pd.isna(named)
        return TargetValues(
            pd.notna(named),
            named[pd.notna(named)].astype(str),
            int((~keep).sum()),
            0,
            int(marked.sum()),
            names.source,
            no_label_values=Counter(given[marked]),
        )
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    missing = ~np.isfinite(values)
    nonpositive = ~missing & (values <= 0) if target.log_target else np.zeros(len(values), dtype=bool)
    keep = ~missing & ~nonpositive
    written = raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
    not_numbers = np.flatnonzero(missing & written & np.isnan(values))
    return TargetValues(
        keep,
        values[keep],
        int(missing.sum()),
        int(nonpositive.sum()),
        not_numbers=len(not_numbers),
        not_number_example=str(raw.iloc[not_numbers[0]]) if len(not_numbers) else "",
    )


def check_no_label(name: str, target: TargetConfig, values: TargetValues, source: str) -> None:
    """Refuse to train on what a normalise file leaves when it marks more than `max_no_label` of the labelled
    products as no label: one line with how many, the values marked most and the setting that accepts it."""
    labelled = len(values.keep) - values.dropped_missing
    if not labelled or values.dropped_no_label <= target.max_no_label * labelled:
        return
    top = ", ".join(f"{value} ({n:,})" for value, n in values.no_label_values.most_common(5))
    share = values.dropped_no_label / labelled
    raise MmgbmError(
        f"{source}: {Path(values.names_source).name} marks {values.dropped_no_label:,} of {labelled:,} labelled "
        f"products ({100 * share:.1f}%) as no {target.column}, more than targets.{name}.max_no_label "
        f"({100 * target.max_no_label:g}%); most: {top}; check its no_brand column, or set "
        f"targets.{name}.max_no_label: {min(1.0, np.ceil(share * 100) / 100):g} to train on the rest"
    )


def path_settings(target: TargetConfig) -> dict | None:
    """How a path target reads its values, as a model's manifest records them (None for other targets)."""
    if target.task != "path":
        return None
    return target.model_dump(mode="json", include={"columns", "separator", "max_depth", "truncate", "taxonomy"})


def recorded_target(column: str | None, task: str, log_target: bool, path: dict | None) -> TargetConfig:
    """The target as a model's manifest recorded it at training, whatever the config says now."""
    return TargetConfig(column=column, task=task, log_target=log_target, **(path or {}))


def path_format(target: TargetConfig) -> PathFormat:
    return PathFormat(target.separator, target.max_depth, target.truncate)


def path_values(frame: pd.DataFrame, target: TargetConfig, source: str, id_column: str | None) -> TargetValues:
    """A path target's rows with a path (and, with a taxonomy, one that is a node of it), each as one string."""
    form = path_format(target)
    taxonomy = read_taxonomy(target.taxonomy, form) if target.taxonomy is not None else None
    columns = target.source_columns
    values = frame[target.column] if target.column is not None else zip(*(frame[c] for c in columns))
    read = form.split if target.column is not None else form.from_levels
    paths = np.full(len(frame), None, dtype=object)
    off: dict[tuple[str, ...], int] = {}
    seen: dict[object, tuple[str, ...] | None] = {}
    for row, value in enumerate(values):
        key = value if target.column is not None else tuple(value)
        if key not in seen:
            try:
                seen[key] = read(value)
            except PathProblem as exc:
                product = f"product {frame[id_column].iloc[row]!r}" if id_column in frame else f"row {row + 1}"
                raise MmgbmError(f"{source}, {product}, column {' / '.join(columns)}: {exc}") from None
        levels = seen[key]
        if levels is None:
            continue
        if taxonomy is not None and levels not in taxonomy:
            off[levels] = off.get(levels, 0) + 1
            continue
        paths[row] = form.join(levels)
    keep = pd.notna(paths)
    problem = form.unsplit([str(p) for p in paths[keep]]) if target.column is not None else None
    if problem is not None:
        raise MmgbmError(f"{source}, column {target.column}: {problem}")
    return TargetValues(
        keep, paths[keep].astype(str), int((~keep).sum()) - sum(off.values()), 0, off_taxonomy=off, taxonomy=taxonomy
    )


def min_training_rows(cfg: Config) -> int:
    """Labelled products a target needs: two per fold of the heads' out-of-fold scores."""
    return 2 * cfg.model.n_folds


def target_problems(cfg: Config, frame: pd.DataFrame, source: str) -> list[str]:
    """What would stop `train` on this table, one line per target, found without computing anything."""
    problems = []
    for name, target in cfg.targets.items():
        values = target_values(frame, target, source, target_names(cfg, name, frame), cfg.data.id_column)
        off = sorted(values.off_taxonomy.items(), key=lambda item: -item[1])
        for levels, count in off[:LISTED_OFF_TAXONOMY]:
            closest = path_format(target).join(values.taxonomy.closest(levels))
            products = f"{count:,} product{'s' if count > 1 else ''}"
            problems.append(
                f"{source}: target {name!r}: {path_format(target).join(levels)!r} ({products}) "
                f"is no node of {Path(values.taxonomy.source).name}; the closest node is {closest!r}: "
                f"relabel them"
            )
        if len(off) > LISTED_OFF_TAXONOMY:
            problems.append(
                f"{source}: target {name!r}: {len(off) - LISTED_OFF_TAXONOMY:,} more paths are no node of "
                f"{Path(values.taxonomy.source).name}"
            )
        usable, classes = int(values.keep.sum()), len(np.unique(values.y))
        shown = " / ".join(target.source_columns)
        if values.not_numbers:
            problems.append(
                f"{source}: target {name!r}: {values.not_numbers:,} values of {shown!r} are not numbers (e.g. "
                f"{values.not_number_example!r}) and would be dropped; write them as plain numbers (1299.5)"
            )
        try:
            check_no_label(name, target, values, source)
        except MmgbmError as exc:
            problems.append(str(exc))
        if usable < min_training_rows(cfg):
            problems.append(
                f"{source}: target {name!r} has only {usable} usable rows in {shown!r} "
                f"({values.describe()}); train needs at least {min_training_rows(cfg)}"
            )
        elif target.task != "regression" and classes < 2:
            only = str(values.y[0])
            problems.append(
                f"{source}: target {name!r} has a single class ({only!r}) in {shown!r}; there "
                f"is nothing to predict: drop the target or add products of other classes"
            )
        elif target.task == "binary" and (problem := binary_problem(name, values.y, source)):
            problems.append(problem)
    return problems


def binary_problem(target_name: str, y: np.ndarray, source: str) -> str | None:
    n = len(np.unique(y))
    if n != 2:
        return f"{source}: target {target_name!r} is binary but has {n} distinct values; use task: multiclass"
    return None


def check_binary(target_name: str, y: np.ndarray, source: str) -> None:
    problem = binary_problem(target_name, y, source)
    if problem:
        raise MmgbmError(problem)
