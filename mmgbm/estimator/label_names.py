"""Canonical names of a target's labels: one spelling per label, and the values that name no label at all.

A catalogue spells one brand many ways ("DressBerry", "Dressberry"; "Fash Blush", "FashBlush") and fills the brand
field with other things ("Regular", "Red"). `LabelNames` maps every spelling it knows to its canonical name, or to
None where the value names no label; a spelling it does not know takes the canonical name of the known spellings
that differ from it only by accents, case, punctuation or spacing, where those all agree. The map is plain data, so
it travels inside a model: the label-in-text chooser reads prefixes of a title through it.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np


def _strip_accents(name: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch))


# What a spelling may differ by and still be the same name, each as the folding that removes the difference.
FOLDINGS = {
    "accents": _strip_accents,
    "case": str.casefold,
    "punctuation": lambda name: "".join(ch for ch in name if ch.isalnum() or ch.isspace()),
    "spacing": lambda name: "".join(name.split()),
}


def fold(name: str, skip: str | None = None) -> str:
    """The key all spellings of a name share ("Fash Blush", "FASHBLUSH", "Fash-blush" -> "fashblush"), with every
    folding but `skip`. Keys differ only where letters or digits do, so grouping by them never merges two names that
    differ in a word. A name of punctuation alone is its own key: it has nothing to compare."""
    key = name
    for step, folding in FOLDINGS.items():
        if step != skip:
            key = folding(key)
    return key or name


def differences(spelling: str, canonical: str) -> list[str]:
    """Why two spellings of one key differ: the foldings without which they stay apart (["case", "spacing"] for
    "Fashblush" and "Fash Blush")."""
    return [step for step in FOLDINGS if fold(spelling, skip=step) != fold(canonical, skip=step)]


class LabelNames:
    """Spelling -> canonical name (`canonical`), the spellings that name no label with why (`no_label`), and where
    the map came from (`source`: "auto" or a file name). See the module docstring."""

    def __init__(self, canonical: Mapping[str, str], no_label: Mapping[str, str] | None = None, source: str = "auto"):
        self.canonical = dict(canonical)
        self.no_label = dict(no_label or {})
        self.source = source
        targets: dict[str, set] = defaultdict(set)
        for spelling in {*self.canonical, *self.no_label}:
            targets[fold(spelling)].add(self.name(spelling))
        # A key whose known spellings disagree (a person split them) settles nothing for an unknown spelling.
        self.by_key = {key: next(iter(names)) for key, names in targets.items() if len(names) == 1}

    @classmethod
    def grouped(cls, counts: Mapping[str, int]) -> "LabelNames":
        """Spellings that differ only by accents, case, punctuation or spacing made one name: the spelling most
        products use (`counts`), ties going to one neither all capitals nor all lower case."""
        groups: dict[str, list[str]] = defaultdict(list)
        for spelling in counts:
            groups[fold(spelling)].append(spelling)
        canonical = {}
        for spellings in groups.values():
            best = min(spellings, key=lambda s: (-counts[s], s.isupper(), s.islower(), s))
            canonical.update(dict.fromkeys(spellings, best))
        return cls(canonical)

    def name(self, label: str | None) -> str | None:
        """The canonical name of a label, None where it names no label (or is None); a label neither known nor
        sharing a settled key stays as it is."""
        if label is None or label in self.no_label:
            return None
        if label in self.canonical:
            return self.canonical[label]
        return self.by_key.get(fold(label), label)

    def knows(self, label: str) -> bool:
        """Whether the map settles this spelling (listed, or sharing a settled key), rather than leaving it as is."""
        return label in self.canonical or label in self.no_label or fold(label) in self.by_key

    def names(self, labels: Iterable[str | None]) -> np.ndarray:
        """`name` of each label, as an object array (a table's worth of labels holds few distinct ones)."""
        seen: dict[str | None, str | None] = {}
        return np.array([seen[v] if v in seen else seen.setdefault(v, self.name(v)) for v in labels], dtype=object)

    @property
    def fingerprint(self) -> str:
        """What the map does, not how its file is laid out: an edited reason or count leaves it unchanged."""
        payload = json.dumps([sorted(self.canonical.items()), sorted(self.no_label)], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()
