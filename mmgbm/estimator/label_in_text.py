"""Labels copied from the start of a text column (`TargetConfig.label_in_text`), so unseen labels can be predicted.

A classifier only predicts its training classes, but some labels are usually written first in a text column: a
brand leads a product title ("Craft And Curtain Multicolor 178 cm Table Runner" -> "Craft And Curtain"), and a
catalogue keeps adding brands. `PrefixChooser` picks, per product, one of the model's top label or the first 1-4
words of the column, from features such as the model's confidence, whether each prefix is a known class and how
often, the capitalisation of the words after it, and what the training titles say of each word: how many hold it
and in how many it is part of the label (so "Alloy" in "Rubera Alloy Bracelet" reads as a product word even after
a brand never seen, and "Gems" in "Asian Gems & Jewels Ring" as part of a brand). It is fitted only on rows whose
model predictions are honest (out-of-fold: no model was fitted on them) and is kept only if, scored out-of-fold on
those rows, it beats the model clearly. A chosen prefix that is a class is that class; otherwise it is a new label.
With `LabelNames` (a target's canonical names), a prefix is read as its canonical name, so a brand seen in any
spelling is predicted as the one name it was trained on, and a prefix that names no label (a colour) is never copied.

A prefix that is no training class is a new label, written only where it looks like a name and the chooser's
out-of-fold evidence backs it. Never with punctuation at either end or any that ends a phrase ("Bergamot," is a word
running into the rest of a sentence, not a brand). Where the text rarely starts with the label (a grocery
description: "Wheatgrass juice powder...") its first words are ordinary words however rare: when fewer than half the
chooser's out-of-fold picks of a label no other training product has were right, new labels are switched off and
only training classes may be copied (`new_labels_`). A prefix made only of product words (words the training texts
hold outside their label in several products of several labels: "Organic", "Powder") is a phrase of the catalogue
before it is a name; it is written only where the chooser's out-of-fold picks of such labels were right at least
half the time (`product_word_labels_`): a catalogue that writes every title brand first names brands such as
"Fashion Plus" or "Love Baby".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import lightgbm as lgb
import numpy as np
from sklearn.isotonic import IsotonicRegression

from mmgbm.estimator.label_names import LabelNames
from mmgbm.estimator.selection import clearly_better

MAX_WORDS = 4
MODEL = 0  # option 0 keeps the model's label; option k copies the first k words
N_FOLDS = 5
# A word held outside their label by this many training rows, of this many different labels, is a product word.
PRODUCT_WORD_ROWS = 5
PRODUCT_WORD_LABELS = 3
# New labels are written only when at least this share of the chooser's out-of-fold new-label picks was right.
MIN_NEW_LABEL_PRECISION = 0.5
# Small trees: the chooser learns from a few hundred validation rows and ~50 features.
PARAMS = {
    "objective": "multiclass",
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_data_in_leaf": 10,
    "feature_fraction": 0.9,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "verbose": -1,
}


def leading_words(texts, max_words: int = MAX_WORDS) -> list[list[str]]:
    """The first `max_words + 1` whitespace-separated words of each text (the extra one is the word after a prefix);
    case and punctuation are kept, because labels are compared exactly."""
    return [str(t).split()[: max_words + 1] if isinstance(t, str) else [] for t in texts]


def prefix_options(words: list[list[str]], max_words: int = MAX_WORDS) -> np.ndarray:
    """(n, max_words) prefixes of 1..max_words words; None where the text is shorter."""
    out = np.full((len(words), max_words), None, dtype=object)
    for row, w in enumerate(words):
        for k in range(1, min(len(w), max_words) + 1):
            out[row, k - 1] = " ".join(w[:k])
    return out


class PrefixChooser:
    """Multiclass LightGBM over {model's label, prefix of 1..max_words words}; see the module docstring."""

    def __init__(
        self,
        column: str,
        class_counts: dict[str, int],
        seed: int = 0,
        max_words: int = MAX_WORDS,
        margin_se: float = 2.0,
        names: LabelNames | None = None,
    ):
        self.column = column
        self.class_counts = class_counts
        self.seed = seed
        self.max_words = max_words
        self.margin_se = margin_se
        self.names = names

    def fit(self, texts, labels: np.ndarray, probs: np.ndarray, truth: np.ndarray) -> "PrefixChooser":
        """`labels`/`probs`: the model's ranked labels and probabilities on honest rows; `truth` their labels."""
        truth = np.asarray(truth, dtype=str)
        words = leading_words(texts, self.max_words)
        self.word_rows_, self.label_word_rows_, self.starting_rows_ = _word_roles(words, truth, self.max_words)
        rows_held, labels_held = _product_word_counts(texts, truth)
        # Only the product words travel in the model: a new product's text counts in none of the figures.
        self.product_words_ = np.array(sorted(w for w in rows_held if _many(rows_held[w], labels_held[w])), dtype=str)
        own_words = [{_bare(w) for w in label.split()} for label in truth]

        def product_word_but_own_row(word: str, row: int) -> bool:
            # A row holds every word of its own prefixes; outside its own label it counts in both figures.
            own = int(word not in own_words[row])
            return _many(rows_held.get(word, 0) - own, labels_held.get(word, 0) - own)

        options = self._options(words, labels)
        # Training counts include each row's own label; without it a brand seen once looks known on its own row.
        X = self._features(words, options, labels, probs, truth)
        known = self._known(options, truth)
        self.kept_ = False
        self.new_labels_ = self.product_word_labels_ = False
        self.validation_ = {
            "rows": int(len(truth)),
            "model": float(np.mean(options[:, MODEL] == truth)),
            "new_labels": False,
            "new_label_picks": 0,
            "new_label_precision": None,
            "product_word_labels": False,
            "product_word_label_picks": 0,
            "product_word_label_precision": None,
        }
        # The chooser learns from every prefix, as a reader takes a title; which of them it may write is decided
        # on its picks.
        fitted = self._cross_fit(X, options, truth)
        if fitted is None:
            return self
        names, phrases = self._new_label_kinds(options, product_word_but_own_row)
        self.product_word_labels_ = self._backed(
            fitted.oof, options, known, known | names | phrases, phrases, truth, "product_word_label"
        )
        writable = known | names | (phrases if self.product_word_labels_ else False)
        self.new_labels_ = self._backed(fitted.oof, options, known, writable, writable, truth, "new_label")
        writable = np.where(writable, options, None)
        if not self.new_labels_:
            self.product_word_labels_ = self.validation_["product_word_labels"] = False  # no new label of any kind
            # Taught again over the classes alone: its lessons in copying new labels would now mislead it.
            writable = np.where(known, options, None)
            fitted = self._cross_fit(X, writable, truth)
            if fitted is None:
                return self
        picked, confidence = self._pick(writable, fitted.oof, with_confidence=True)
        gain = (picked == truth).astype(float) - (options[:, MODEL] == truth)
        self.validation_["chooser"] = float(np.mean(picked == truth))
        self.kept_ = clearly_better(gain, self.margin_se)
        if self.kept_:
            self.booster_ = lgb.train(
                self._params(), lgb.Dataset(X[fitted.teach], fitted.y[fitted.teach]), num_boost_round=fitted.rounds
            )
            # The chooser's vote share is no probability: map it to the share of its out-of-fold picks that were right.
            self.calibrator_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                confidence, (picked == truth).astype(float)
            )
        return self

    def apply(self, texts, labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ranked labels with the chosen one first, with the chooser's calibrated confidence in it; the model's
        other labels follow in their order, sharing the rest of the probability."""
        if not self.kept_:
            return labels, probs
        words = leading_words(texts, self.max_words)
        options = self._options(words, labels)
        allowed = self._known(options)
        if self.new_labels_:
            product_words = set(self.product_words_.tolist())
            names, phrases = self._new_label_kinds(options, lambda word, row: word in product_words)
            allowed |= names | (phrases if self.product_word_labels_ else False)
        chosen, confidence = self._pick(
            np.where(allowed, options, None),
            self.booster_.predict(self._features(words, options, labels, probs)),
            with_confidence=True,
        )
        confidence = self.calibrator_.predict(confidence)
        labels, probs = labels.copy(), probs.astype(np.float64).copy()
        for row in range(len(labels)):
            rest = labels[row] != chosen[row]
            kept_labels, kept_probs = labels[row][rest], probs[row][rest]
            share = (1.0 - confidence[row]) / max(kept_probs.sum(), 1e-12)
            labels[row] = np.concatenate([[chosen[row]], kept_labels])[: labels.shape[1]]
            probs[row] = np.concatenate([[confidence[row]], kept_probs * share])[: probs.shape[1]]
        return labels, probs

    # ---- internals ------------------------------------------------------------------------------------------
    def _params(self) -> dict:
        return {**PARAMS, "num_class": self.max_words + 1, "seed": self.seed}

    def _cross_fit(self, X: np.ndarray, options: np.ndarray, truth: np.ndarray) -> "_CrossFit | None":
        """The chooser cross-fitted to pick the right one of `options` (None: not an option): its out-of-fold
        probabilities of each option on every row, or None where too few rows teach anything."""
        right = options == truth[:, None]
        # The first right option: the model when it is right (changing nothing is the safe choice), else the
        # shortest prefix. Rows where no option is right teach nothing about which to pick.
        teach = right.any(axis=1)
        y = np.argmax(right, axis=1)
        if teach.sum() < 2 * N_FOLDS or len(np.unique(y[teach])) < 2:
            return None
        folds = np.arange(int(teach.sum())) % N_FOLDS
        folds = folds[np.random.default_rng(self.seed).permutation(len(folds))]
        cv = lgb.cv(
            self._params(),
            lgb.Dataset(X[teach], y[teach]),
            num_boost_round=500,
            return_cvbooster=True,
            folds=[(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(N_FOLDS)],
            callbacks=[lgb.early_stopping(20, verbose=False)],
        )
        rounds = cv["cvbooster"].best_iteration
        # Out-of-fold picks on every honest row (rows no option gets right are scored by all folds' mean).
        oof = np.mean([b.predict(X, num_iteration=rounds) for b in cv["cvbooster"].boosters], axis=0)
        for f, booster in enumerate(cv["cvbooster"].boosters):
            rows = np.flatnonzero(teach)[folds == f]
            oof[rows] = booster.predict(X[rows], num_iteration=rounds)
        return _CrossFit(teach, y, rounds, oof)

    def _known(self, options: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
        """Where an option is the model's label or a training class; when fitting (`truth`), a class held by no
        training row but the row itself counts as new, as it would for a new product."""
        known = np.zeros(options.shape, dtype=bool)
        known[:, MODEL] = True
        for (row, k), option in np.ndenumerate(options[:, 1:]):
            held = self.class_counts.get(option, 0) if option is not None else 0
            known[row, k + 1] = held - int(truth is not None and truth[row] == option) > 0
        return known

    def _backed(
        self,
        oof: np.ndarray,
        options: np.ndarray,
        known: np.ndarray,
        writable: np.ndarray,
        kind: np.ndarray,
        truth: np.ndarray,
        name: str,
    ) -> bool:
        """Whether at least MIN_NEW_LABEL_PRECISION of the out-of-fold picks among the `writable` options that are
        new labels of a `kind` were right (none: no evidence), recorded in `validation_` under `name`."""
        picked = self._pick(np.where(writable, options, None), oof)
        # The first option spelling the pick is what was picked (the model's label is always a known class).
        first = np.argmax(np.where(writable, options, None) == picked[:, None], axis=1)
        rows = np.arange(len(truth))
        new = kind[rows, first] & ~known[rows, first]
        precision = float(np.mean(picked[new] == truth[new])) if new.any() else None
        backed = precision is not None and precision >= MIN_NEW_LABEL_PRECISION
        self.validation_.update({f"{name}s": backed, f"{name}_picks": int(new.sum()), f"{name}_precision": precision})
        return backed

    @staticmethod
    def _new_label_kinds(
        options: np.ndarray, product_word: Callable[[str, int], bool]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Where a prefix option may be a new label (see the module docstring): as a name (some word no product
        word), or as a phrase of product words; `product_word(word, row)` tells a product word of the row's text,
        a word bare and lower case."""
        names = np.zeros(options.shape, dtype=bool)
        phrases = np.zeros(options.shape, dtype=bool)
        for (row, k), option in np.ndenumerate(options[:, 1:]):
            if option is not None and _punctuated_like_a_name(option):
                phrase = all(product_word(_bare(w), row) for w in option.split())
                (phrases if phrase else names)[row, k + 1] = True
        return names, phrases

    def _options(self, words: list[list[str]], labels: np.ndarray) -> np.ndarray:
        """The model's label, then each prefix as the label it names (None: too short, or no label)."""
        prefixes = prefix_options(words, self.max_words)
        if self.names is not None:
            prefixes = self.names.names(prefixes.ravel()).reshape(prefixes.shape)
        return np.column_stack([labels[:, 0].astype(object), prefixes])

    def _pick(self, options: np.ndarray, p: np.ndarray, with_confidence: bool = False):
        """Per row the label with the most chooser probability, summed over options that spell the same label;
        options the text is too short for are never picked."""
        p = np.where(options == None, 0.0, p)  # noqa: E711 (elementwise)
        chosen = np.empty(len(options), dtype=object)
        confidence = np.empty(len(options))
        for row in range(len(options)):
            totals: dict[str, float] = {}
            for option, weight in zip(options[row], p[row]):
                if option is not None:
                    totals[option] = totals.get(option, 0.0) + weight
            chosen[row] = max(totals, key=totals.get)  # ties keep the model's label: it is listed first
            confidence[row] = totals[chosen[row]] / max(sum(totals.values()), 1e-12)
        return (chosen, confidence) if with_confidence else chosen

    def _features(
        self,
        words: list[list[str]],
        options: np.ndarray,
        labels: np.ndarray,
        probs: np.ndarray,
        truth: np.ndarray | None = None,
    ) -> np.ndarray:
        lower_counts: dict[str, int] = {}
        for name, n in self.class_counts.items():
            lower_counts[name.lower()] = lower_counts.get(name.lower(), 0) + n

        def count(label, row: int, lower: bool = False) -> int:
            if label is None:
                return -1
            table, key = (lower_counts, label.lower()) if lower else (self.class_counts, label)
            own = truth is not None and (truth[row].lower() == key if lower else truth[row] == key)
            return table.get(key, 0) - int(own)

        def roles(word: str, own_label_words: set[str] | None) -> list[float]:
            """Training rows holding the word near their start, and those where it is part of the label; when
            fitting (`own_label_words`: the row's own label's words), the row's own share is taken out, so a word
            seen in its own row only reads as a new product's would."""
            if not word:
                return [-1.0, -1.0, -1.0]
            key = word.lower()
            held, in_label = self.word_rows_.get(key, 0), self.label_word_rows_.get(key, 0)
            if own_label_words is not None:
                held -= 1
                in_label -= int(key in own_label_words)
            return [np.log1p(held), np.log1p(in_label), in_label / held if held > 0 else -1.0]

        rows = []
        for row, w in enumerate(words):
            own = None if truth is None else _label_words(w, truth[row])
            top = options[row, MODEL]
            text = " ".join(w).lower()
            second = probs[row, 1] if probs.shape[1] > 1 else 0.0
            feats = [
                probs[row, 0],
                probs[row, 0] - second,
                np.log1p(max(count(top, row), 0)),
                len(top.split()),
                float(top.lower() in text),
                len(w),
            ]
            matches = [k + 1 for k in range(self.max_words) if options[row, k + 1] == top]
            lower_matches = [
                k + 1
                for k in range(self.max_words)
                if options[row, k + 1] is not None and options[row, k + 1].lower() == top.lower()
            ]
            feats += [matches[0] if matches else 0, lower_matches[0] if lower_matches else 0]
            ranked = {label: (i, p) for i, (label, p) in reversed(list(enumerate(zip(labels[row], probs[row]))))}
            for k in range(1, self.max_words + 1):
                prefix = options[row, k]
                word = w[k - 1] if k <= len(w) else ""
                after = w[k] if k < len(w) else ""
                rank, p = ranked.get(prefix, (-1, 0.0))
                # Training rows that start with this prefix as written (a brand's own rows, or a brand and a product
                # word), whatever name it reads as.
                written = " ".join(w[:k]).lower() if k <= len(w) else None
                starting = 0 if written is None else self.starting_rows_.get(written, 0) - int(truth is not None)
                feats += [
                    count(prefix, row),
                    count(prefix, row, lower=True),
                    rank,
                    p,
                    _capitalised(word),
                    word.isupper(),
                    _has_digit(word),
                    len(word),
                    _capitalised(after),
                    _has_digit(after),
                    after == "",
                    np.log1p(max(starting, 0)),
                    *roles(word, own),
                    *roles(after, own),
                ]
            rows.append(feats)
        return np.asarray(rows, dtype=np.float64)


def _word_roles(
    words: list[list[str]], truth: np.ndarray, max_words: int
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Over the training rows' leading words (lower case): how many rows hold each word, how many of those have it
    in the label written at their start, and how many start with each prefix of 1..max_words words."""
    held, in_label, starting = Counter(), Counter(), Counter()
    for leading, label in zip(words, truth):
        held.update({w.lower() for w in leading})
        in_label.update(_label_words(leading, label))
        starting.update(" ".join(leading[:k]).lower() for k in range(1, len(leading[:max_words]) + 1))
    return dict(held), dict(in_label), dict(starting)  # plain dicts: what a model artifact holds


def _product_word_counts(texts, truth: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    """Over the training texts (all their words, bare and lower case): how many rows hold each word outside their
    label's words, and how many different labels those rows have."""
    rows: Counter = Counter()
    labels: dict[str, set] = {}
    for text, label in zip(texts, truth):
        if not isinstance(text, str):
            continue
        own = {_bare(w) for w in label.split()}
        for word in {_bare(w) for w in text.split()} - own - {""}:
            rows[word] += 1
            labels.setdefault(word, set()).add(label)
    return dict(rows), {word: len(held) for word, held in labels.items()}


def _many(rows: int, labels: int) -> bool:
    """Whether a word held outside their label by this many training rows of this many labels is a product word."""
    return rows >= PRODUCT_WORD_ROWS and labels >= PRODUCT_WORD_LABELS


def _punctuated_like_a_name(label: str) -> bool:
    """No punctuation at either end and none that ends a phrase inside: "Dr. Morepen", "F&S", "Levi's" may be
    names; "Bergamot,", "(Kazo" and "Kazo, table" are words of a sentence."""
    return label[0].isalnum() and label[-1].isalnum() and not _PHRASE_PUNCTUATION.intersection(label)


_PHRASE_PUNCTUATION = frozenset(',;:!?()[]{}"')


def _bare(word: str) -> str:
    """A word without punctuation at either end, lower case: "Bergamot," and "bergamot" are one word."""
    return _EDGE_PUNCTUATION.sub("", word).lower()


_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


class _CrossFit(NamedTuple):
    teach: np.ndarray
    y: np.ndarray
    rounds: int
    oof: np.ndarray


def _label_words(words: list[str], label: str) -> set[str]:
    """The lower-cased words of `label` where the text starts with it, else none."""
    label_words = label.lower().split()
    return set(label_words) if [w.lower() for w in words[: len(label_words)]] == label_words else set()


def _capitalised(word: str) -> float:
    return float(bool(word) and word[0].isupper())


def _has_digit(word: str) -> float:
    return float(any(ch.isdigit() for ch in word))
