"""Drift: what `predict` and `serve` answered for a classification target, against what its model answered out of
fold on its training products (from models that never saw them, so as it answers new products).

    <workdir>/reports/<target>/drift/
        predict.json                  the answers of the last `mmgbm predict` run (one batch)
        serve/<YYYY-MM-DD>_<model>.json   the service's answers per UTC day and model, merged in as it runs
        <source>.png                  the last comparison (`mmgbm drift`), drawn

Counts, never rows: per label how many answers, and how many fell in each confidence bin (the probability of the
answered label, in CONFIDENCE_BINS bins), so memory and files stay small however many products are answered.

A batch is compared on two things: the share of low-confidence answers, and the labels' shares (a likelihood-ratio
statistic, and the total variation distance: the share of answers that would have to change label for the two to
match). Each is flagged only when it moved further than random batches of the same size drawn from the out-of-fold
answers move in 99 of 100 draws, and by at least a minimum effect: a small random batch is not flagged for being
small, a big one not for a trifle.
Flat classification targets only: a path target's answers and a regression's values are not recorded.
"""

from __future__ import annotations

import fcntl
import json
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mmgbm.commands.artifact import load_artifact
from mmgbm.commands.targets import resolve_targets
from mmgbm.config import Config
from mmgbm.errors import MmgbmError, MmgbmWarning, first_line
from mmgbm.estimator import MMGBMClassifier, MMGBMPathClassifier
from mmgbm.features.atomic import write_atomically
from mmgbm.workdir import model_dir, report_dir

CONFIDENCE_BINS = 100
# `mmgbm drift`'s exit status when drift is flagged: 1 is an error, 2 a usage error, 3 a refused model version.
DRIFT_EXIT_CODE = 4
SOURCES = ("predict", "serve")
NULL_DRAWS = 1000
NULL_QUANTILE = 0.99
# Below these a move is too small to act on, however many answers show it.
MIN_LABEL_SHIFT = 0.05
MIN_LOW_CONFIDENCE_SHIFT = 0.05
LABELS_SHOWN = 5


@dataclass
class AnswerCounts:
    """How often each label was answered and the histogram of the answers' confidences; `model` names the model
    folder that answered."""

    model: str
    labels: Counter = field(default_factory=Counter)
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(CONFIDENCE_BINS, dtype=np.int64))

    @property
    def total(self) -> int:
        return int(self.confidence.sum())

    def add(self, labels, confidences) -> None:
        self.labels.update(str(label) for label in labels)
        bins = np.clip((np.asarray(confidences, dtype=float) * CONFIDENCE_BINS).astype(int), 0, CONFIDENCE_BINS - 1)
        self.confidence += np.bincount(bins, minlength=CONFIDENCE_BINS)

    def merge(self, other: AnswerCounts) -> None:
        self.labels.update(other.labels)
        self.confidence += other.confidence

    def low_share(self, below: float) -> float:
        """The share of answers whose confidence is below `below`, counted to the nearest bin edge."""
        return float(self.confidence[: round(below * CONFIDENCE_BINS)].sum() / max(self.total, 1))

    def shares(self) -> dict[str, float]:
        return {label: n / max(self.total, 1) for label, n in self.labels.items()}

    def to_json(self) -> dict:
        return {"model": self.model, "labels": dict(self.labels), "confidence": self.confidence.tolist()}

    @classmethod
    def from_json(cls, raw: dict, path: Path) -> AnswerCounts:
        try:
            confidence = np.asarray(raw["confidence"], dtype=np.int64)
            counts = cls(str(raw["model"]), Counter({str(k): int(v) for k, v in raw["labels"].items()}), confidence)
        except (KeyError, TypeError, ValueError, AttributeError):
            counts = None
        if counts is None or confidence.shape != (CONFIDENCE_BINS,):
            raise MmgbmError(f"{path}: not a drift record; delete it (the next predict or serve writes a new one)")
        return counts


def drift_dir(cfg: Config, target: str) -> Path:
    return report_dir(cfg, target) / "drift"


def records_drift(model) -> bool:
    """Whether answers of this model are recorded: flat classifiers' (see the module docstring)."""
    return isinstance(model, MMGBMClassifier) and not isinstance(model, MMGBMPathClassifier)


def record_batch(cfg: Config, target: str, model_folder: Path, labels, confidences) -> Path | None:
    """Save what one `predict` run answered for `target`, replacing the previous run's. A workdir predict may not
    write to (a shared, read-only model store) costs the record, not the predictions: a note says so."""
    counts = AnswerCounts(str(model_folder))
    counts.add(labels, confidences)
    try:
        return _write(drift_dir(cfg, target) / "predict.json", counts)
    except (OSError, MmgbmError) as exc:
        warnings.warn(f"{target}: answers not recorded for `mmgbm drift` ({first_line(exc)})", MmgbmWarning, 2)
        return None


def _write(path: Path, counts: AnswerCounts) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(counts.to_json()) + "\n"))


def _read(path: Path) -> AnswerCounts:
    try:
        raw = json.loads(path.read_text())
    except ValueError:
        raw = None
    return AnswerCounts.from_json(raw if isinstance(raw, dict) else {}, path)


class ServedAnswers:
    """The service's answers, counted in memory per target and merged into the day's file (under a file lock:
    several service processes may share a workdir) at most every `flush_seconds` and at shutdown. `model_folders`
    names the model folder answering each recorded target: a service that loads another version sets it, and the
    answers after it count for that version."""

    def __init__(self, cfg: Config, model_folders: dict[str, Path], flush_seconds: float = 60.0):
        self.cfg = cfg
        self.model_folders = dict(model_folders)
        self.flush_seconds = flush_seconds
        self._pending: dict[tuple[str, str], AnswerCounts] = {}
        self._lock = threading.Lock()
        self._flushed_at = time.monotonic()

    def add(self, target: str, labels, confidences) -> None:
        with self._lock:
            folder = str(self.model_folders[target])
            pending = self._pending.setdefault((target, folder), AnswerCounts(folder))
            pending.add(labels, confidences)
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushed_at = time.monotonic()
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        for (target, _), counts in pending.items():
            folder = drift_dir(self.cfg, target) / "serve"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{day}_{Path(counts.model).name}.json"
            with open(folder / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if path.is_file():
                    counts.merge(_read(path))
                _write(path, counts)


@dataclass
class LabelShift:
    """How far the labels' shares moved: the total variation distance (the share of answers that would have to
    change label), and the likelihood-ratio statistic G with the value random batches reach. G weighs each label's
    move by how much its share can vary, so a common label gone counts for more than a rare one seen twice."""

    total_variation: float
    likelihood_ratio: float
    noise: float

    @property
    def flagged(self) -> bool:
        return self.likelihood_ratio > self.noise and self.total_variation >= MIN_LABEL_SHIFT

    def bound(self) -> str:
        return f"likelihood ratio {self.likelihood_ratio:.1f}, random batches reach {self.noise:.1f}"


@dataclass
class Shift:
    """How far one statistic moved between the reference and the batch, and how far random batches move it."""

    moved: float
    noise: float
    minimum: float

    @property
    def flagged(self) -> bool:
        return self.moved > max(self.noise, self.minimum)

    def bound(self) -> str:
        return f"flagged above {max(self.noise, self.minimum):.3f}"


@dataclass
class DriftReport:
    target: str
    source: str
    reference: AnswerCounts
    batch: AnswerCounts
    low_confidence: float
    labels: LabelShift
    low: Shift
    png: Path | None = None

    @property
    def flagged(self) -> bool:
        return self.labels.flagged or self.low.flagged

    def moved_most(self) -> list[tuple[str, float, float]]:
        """(label, share then, share now), the labels whose share moved most first."""
        then, now = self.reference.shares(), self.batch.shares()
        moves = [(label, then.get(label, 0.0), now.get(label, 0.0)) for label in set(then) | set(now)]
        return sorted(moves, key=lambda m: (-abs(m[2] - m[1]), m[0]))

    def describe(self) -> str:
        """One line per step: what was compared, the low-confidence share, the labels, the verdict."""
        low_then, low_now = self.reference.low_share(self.low_confidence), self.batch.low_share(self.low_confidence)
        moved = ", ".join(
            f"{label} {100 * then:.1f}% -> {100 * now:.1f}%" for label, then, now in self.moved_most()[:LABELS_SHOWN]
        )
        verdict = (
            f"DRIFT: the {self._what_moved()} moved beyond what random batches of {self.batch.total:,} show"
            if self.flagged
            else f"no drift: within what random batches of {self.batch.total:,} show"
        )
        lines = [
            f"{self.target}: {self.batch.total:,} answers ({self.source}) against {self.reference.total:,} "
            f"out-of-fold answers of {self.reference.model}",
            f"low confidence (< {self.low_confidence:.2f}): {100 * low_then:.1f}% then, {100 * low_now:.1f}% now "
            f"({self.low.bound()})",
            f"labels moved most: {moved}; total variation {self.labels.total_variation:.3f} ({self.labels.bound()})",
            f"verdict: {verdict}",
        ]
        if self.png is not None:
            lines.append(f"-> {self.png}")
        return "\n".join(lines)

    def _what_moved(self) -> str:
        moved = [name for name, shift in (("labels", self.labels), ("low-confidence share", self.low)) if shift.flagged]
        return " and ".join(moved)


def reference_counts(model: MMGBMClassifier, folder: Path) -> AnswerCounts:
    """The model's out-of-fold answers on its training products: the label it ranked first and its probability."""
    counts = AnswerCounts(str(folder))
    counts.add(model.classes_[model.oof_candidates_[:, 0]], model.oof_probabilities_[:, 0])
    return counts


def batch_counts(cfg: Config, target: str, source: str, days: int = 2) -> AnswerCounts:
    """The answers to compare: the last predict run's, or the service's of the last `days` UTC days (today
    included) by the current model."""
    if source not in SOURCES:
        raise MmgbmError(f"--source must be one of {', '.join(SOURCES)} (got {source!r})")
    folder = drift_dir(cfg, target)
    if source == "predict":
        path = folder / "predict.json"
        if not path.is_file():
            raise MmgbmError(f"no answers of `mmgbm predict` recorded for {target!r} in {folder}; run it first")
        return _read(path)
    if days < 1:
        raise MmgbmError(f"--days must be 1 or more (got {days})")
    model = model_dir(cfg, target)
    today = datetime.now(timezone.utc).date()
    wanted = {(today.fromordinal(today.toordinal() - d)).isoformat() for d in range(days)}
    paths = [p for p in sorted((folder / "serve").glob(f"*_{model.name}.json")) if p.name.split("_", 1)[0] in wanted]
    if not paths:
        raise MmgbmError(
            f"no answers of `mmgbm serve` by model {model} recorded for {target!r} in the last {days} day(s) "
            f"in {folder / 'serve'}"
        )
    counts = AnswerCounts(str(model))
    for path in paths:
        counts.merge(_read(path))
    return counts


def compare(
    reference: AnswerCounts, batch: AnswerCounts, low_confidence: float = 0.5, seed: int = 0
) -> tuple[LabelShift, Shift]:
    """(label shift, low-confidence shift) of `batch` against `reference`, each with its noise: the NULL_QUANTILE
    of the same statistic over NULL_DRAWS random batches of the batch's size drawn from the reference (its label
    counts smoothed by half an answer each, so that a label it never gave may turn up at random, rarely)."""
    if not 0.0 < low_confidence < 1.0:
        raise MmgbmError(f"--low-confidence must be in (0, 1) (got {low_confidence})")
    if batch.total == 0:
        raise MmgbmError("the recorded batch holds no answers")
    labels = sorted(set(reference.labels) | set(batch.labels))
    then = np.array([reference.labels.get(label, 0) for label in labels], dtype=float)
    now = np.array([batch.labels.get(label, 0) for label in labels], dtype=float)
    expected = batch.total * (then + 0.5) / (then.sum() + 0.5 * len(labels))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(batch.total, expected / batch.total, size=NULL_DRAWS)
    label_shift = LabelShift(
        0.5 * float(np.abs(now / batch.total - then / then.sum()).sum()),
        _likelihood_ratio(now, expected),
        float(np.quantile(_likelihood_ratio(draws, expected), NULL_QUANTILE)),
    )
    low_then = reference.low_share(low_confidence)
    low_draws = rng.binomial(batch.total, low_then, size=NULL_DRAWS) / batch.total
    return (
        label_shift,
        Shift(
            abs(batch.low_share(low_confidence) - low_then),
            float(np.quantile(np.abs(low_draws - low_then), NULL_QUANTILE)),
            MIN_LOW_CONFIDENCE_SHIFT,
        ),
    )


def _likelihood_ratio(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """G = 2 sum O log(O / E) over the labels (the last axis), a label not observed adding nothing."""
    terms = np.where(observed > 0, observed * np.log(np.maximum(observed, 1) / expected), 0.0)
    return 2 * terms.sum(axis=-1)


def drift(cfg: Config, target: str, source: str = "predict", days: int = 2, low_confidence: float = 0.5) -> DriftReport:
    """Compare the recorded answers of `source` with the out-of-fold answers of the model that gave them (the
    current one where that folder is gone), and draw both into <source>.png beside the records."""
    (target,) = resolve_targets(cfg, [target])
    if cfg.targets[target].task in ("regression", "path"):
        raise MmgbmError(f"drift compares the labels of a flat classification target; {target!r} is not one")
    batch = batch_counts(cfg, target, source, days)
    folder = Path(batch.model) if Path(batch.model).is_dir() else model_dir(cfg, target)
    reference = reference_counts(load_artifact(folder, target).model, folder)
    labels, low = compare(reference, batch, low_confidence)
    report = DriftReport(target, source, reference, batch, low_confidence, labels, low)
    report.png = write_atomically(drift_dir(cfg, target) / f"{source}.png", lambda tmp: _draw(report, tmp))
    return report


def _draw(report: DriftReport, path: Path) -> None:
    """Label shares then and now (the labels that moved most), and the confidence histograms."""
    moved = report.moved_most()[:20]
    fig = Figure(figsize=(11, 4.5))
    shares, confidence = fig.subplots(1, 2, width_ratios=[3, 2])
    x = np.arange(len(moved))
    shares.bar(x - 0.2, [100 * m[1] for m in moved], width=0.4, color="#9aa5b1", label="out of fold")
    shares.bar(x + 0.2, [100 * m[2] for m in moved], width=0.4, color="#c44e52", label=report.source)
    shares.set_xticks(x, [m[0] for m in moved], rotation=60, ha="right", fontsize=8)
    shares.set_ylabel("% of answers")
    shares.set_title(
        f"{report.target}: labels that moved most (total variation {report.labels.total_variation:.3f})", fontsize=9
    )
    shares.legend(fontsize=8)
    coarse = 20  # bins drawn: the recorded ones summed in groups
    edges = np.linspace(0, 1, coarse + 1)
    drawn = ((report.reference, "#9aa5b1", 4, "out of fold"), (report.batch, "#c44e52", 1.5, report.source))
    for counts, colour, width, name in drawn:  # the reference wider, so that the batch on top of it leaves it seen
        grouped = counts.confidence.reshape(coarse, -1).sum(axis=1) / max(counts.total, 1)
        confidence.stairs(100 * grouped, edges, color=colour, linewidth=width, label=name)
    confidence.axvline(report.low_confidence, color="grey", linestyle="--", linewidth=1)
    confidence.set_xlabel("probability of the answered label")
    confidence.set_ylabel("% of answers")
    confidence.set_title("confidence (dashed: low-confidence threshold)", fontsize=9)
    confidence.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
