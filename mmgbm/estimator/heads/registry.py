"""The one list of head kinds: what each is, which blocks it reads, and the types a fitted one holds.

A head kind is a class (a scikit-learn estimator whose `predict` gives its score columns, `n_outputs` wide) plus one
`register` call naming how an estimator builds it for a block. The estimators build their heads from this list, in
its order (which is the stacker's column order), and model artifacts trust exactly the types it names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

WORDS = ".words"  # a text field's words, as the mention heads read them: "text.<field>.words"


class Head(Protocol):
    n_outputs: int

    def fit(self, X: Any, y: np.ndarray) -> "Head": ...

    def predict(self, X: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class HeadKind:
    name: str  # the head's name is "<block>.<name>"
    type: type
    # (estimator, block, n_features) -> the head for that block, or None. With `after_others`, (estimator, blocks,
    # out-of-fold scores of the heads fitted so far, target) -> [(block, head)]: for heads worth their cost only
    # where the others' scores show what a block tells the target.
    build: Callable[..., Any]
    after_others: bool = False


HEAD_KINDS: list[HeadKind] = []


def register(name: str, type: type, build: Callable[..., Any], after_others: bool = False) -> None:
    HEAD_KINDS.append(HeadKind(name, type, build, after_others))


def trusted_types() -> Iterable[type]:
    """Every head class and the classes its fitted state holds (`holds`): what an artifact may name."""
    for kind in HEAD_KINDS:
        yield kind.type
        yield from getattr(kind.type, "holds", ())


def block_kind(block: str) -> str:
    """ "words" (a text field's words), "text" (its sparse vectors) or "dense" (an image block)."""
    if block.endswith(WORDS):
        return "words"
    return "text" if block.startswith("text.") else "dense"
