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
"""

from __future__ import annotations

from collections import Counter

import lightgbm as lgb
import numpy as np
from sklearn.isotonic import IsotonicRegression

from mmgbm.estimator.label_names import LabelNames
from mmgbm.estimator.selection import clearly_better

MAX_WORDS = 4
MODEL = 0  # option 0 keeps the model's label; option k copies the first k words
N_FOLDS = 5
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
        options = self._options(words, labels)
        # Training counts include each row's own label; without it a brand seen once looks known on its own row.
        X = self._features(words, options, labels, probs, truth)
        right = options == truth[:, None]
        # The first right option: the model when it is right (changing nothing is the safe choice), else the
        # shortest prefix. Rows where no option is right teach nothing about which to pick.
        teach = right.any(axis=1)
        y = np.argmax(right, axis=1)
        self.kept_ = False
        self.validation_ = {"rows": int(len(truth)), "model": float(np.mean(options[:, MODEL] == truth))}
        if teach.sum() < 2 * N_FOLDS or len(np.unique(y[teach])) < 2:
            return self
        folds = np.arange(int(teach.sum())) % N_FOLDS
        folds = folds[np.random.default_rng(self.seed).permutation(len(folds))]
        params = {**PARAMS, "num_class": self.max_words + 1, "seed": self.seed}
        cv = lgb.cv(
            params,
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
        picked, confidence = self._pick(options, oof, with_confidence=True)
        gain = (picked == truth).astype(float) - (options[:, MODEL] == truth)
        self.validation_["chooser"] = float(np.mean(picked == truth))
        self.kept_ = clearly_better(gain, self.margin_se)
        if self.kept_:
            self.booster_ = lgb.train(params, lgb.Dataset(X[teach], y[teach]), num_boost_round=rounds)
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
        chosen, confidence = self._pick(
            options, self.booster_.predict(self._features(words, options, labels, probs)), with_confidence=True
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


def _label_words(words: list[str], label: str) -> set[str]:
    """The lower-cased words of `label` where the text starts with it, else none."""
    label_words = label.lower().split()
    return set(label_words) if [w.lower() for w in words[: len(label_words)]] == label_words else set()


def _capitalised(word: str) -> float:
    return float(bool(word) and word[0].isupper())


def _has_digit(word: str) -> float:
    return float(any(ch.isdigit() for ch in word))
