"""`mmgbm audit`: the training products whose given label is most likely wrong, ranked, with the evidence.

Every product is judged by out-of-fold probabilities: those of models that never saw it, so a wrong label the model
memorised cannot vouch for itself. The fitted model keeps them (`oof_proba_`, per modality `oof_proba_by_modality_`);
a model without them is cross-validated again here with the same settings. cleanlab ranks the labels (its label
quality score) and flags the likely issues; each suspect names the modalities whose own prediction agrees with the
suggested label, so a reviewer knows whether to look at the photo or read the title.

    <workdir>/reports/<target>/audit.csv    every product whose label the model disagrees with, most suspect first
    <workdir>/reports/<target>/audit.html   the top suspects with photo thumbnails embedded: opens offline, anywhere

Products a reviewer already decided (`mmgbm review`, <workdir>/labels/<target>.csv) are left out of both: a person
has looked at them. Labels are read through those decisions as `train` reads them.
"""

from __future__ import annotations

import base64
import html
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_validate

from mmgbm.catalogue import load_split
from mmgbm.commands.predict import checked_artifact
from mmgbm.commands.targets import resolve_targets, target_values
from mmgbm.config import Config
from mmgbm.corrections import correct_labels, read_decisions
from mmgbm.errors import MmgbmError
from mmgbm.estimator import MMGBMClassifier, MMGBMPathClassifier, ProductMatrix
from mmgbm.features.image_decoding import UnreadableImage, thumbnail_jpeg
from mmgbm.features.photos import Photos
from mmgbm.stores import load_products
from mmgbm.workdir import report_dir

FUSED_ONLY = "fused"  # no single modality suggests the label: only their combination does
THUMBNAIL = (96, 128)
COLUMNS = [
    "id",
    "given_label",
    "suggested_label",
    "suggested_probability",
    "confidence_wrong",
    "modality",
    "label_issue",
    "title",
]


@dataclass
class AuditResult:
    target: str
    ranked: pd.DataFrame  # every training product, COLUMNS, most suspect first
    source: str  # where the out-of-fold probabilities came from
    csv_path: Path
    html_path: Path
    decided: frozenset[str] = frozenset()  # ids a reviewer decided: not suspects any more

    @property
    def suspects(self) -> pd.DataFrame:
        """The products whose given label the model disagrees with and nobody has decided yet, most suspect first."""
        disagree = self.ranked["given_label"] != self.ranked["suggested_label"]
        return self.ranked[disagree & ~self.ranked["id"].isin(self.decided)]

    def describe(self) -> str:
        decided = f"; {len(self.decided):,} decided by reviewers, left out" if self.decided else ""
        return (
            f"{self.target}: {len(self.ranked):,} training products; the model disagrees with "
            f"{len(self.suspects):,} given labels left to review{decided}; "
            f"{int(self.ranked['label_issue'].sum()):,} flagged as label issues ({self.source})"
            f"\n-> {self.csv_path}\n-> {self.html_path}"
        )


def audit(cfg: Config, target: str, report_rows: int = 200) -> AuditResult:
    """Rank the training split's labels of a classification target and write the CSV and HTML reports."""
    name = resolve_targets(cfg, [target])[0]
    frame = load_split(cfg, "train")
    products, fingerprints = load_products(cfg, frame)
    model = checked_artifact(cfg, name, fingerprints).model
    frame, _ = correct_labels(cfg, name, frame, cfg.targets[name].column)
    if model.regression:
        raise MmgbmError(f"target {name!r} is a regression; audit ranks the labels of classification targets")
    values = target_values(
        frame, cfg.targets[name], f"{cfg.data.splits['train']} (train)", model.label_names, cfg.data.id_column
    )
    keep, given = values.keep.copy(), values.y
    if isinstance(model, MMGBMPathClassifier):  # a partial label (partial_paths: ancestors) is no class to rank
        taught = np.isin(given, model.classes_)
        keep[keep], given = taught, given[taught]
    kept = frame[keep].reset_index(drop=True)
    probs, by_modality, source = out_of_fold(model, products[keep], given)
    ranked = rank_labels(model.classes_, given, probs, by_modality)
    ranked.insert(0, "id", kept[cfg.data.id_column].to_numpy())
    ranked["title"] = kept[cfg.data.text_columns[0]].fillna("").to_numpy() if cfg.data.text_columns else ""
    # Exact ties (rare with the margin) go to the product whose suggested label the model is surer of.
    ranked = ranked.sort_values(["confidence_wrong", "suggested_probability"], ascending=False, kind="stable")
    columns = COLUMNS
    if isinstance(model, MMGBMPathClassifier):  # where down the path the model parts from the given label
        ranked["wrong_from_depth"] = [
            _parting_depth(given, suggested, model.separator)
            for given, suggested in zip(ranked["given_label"], ranked["suggested_label"])
        ]
        columns = [*COLUMNS[:3], "wrong_from_depth", *COLUMNS[3:]]
    ranked = ranked[columns].reset_index(drop=True)

    folder = report_dir(cfg, name)
    folder.mkdir(parents=True, exist_ok=True)
    decisions = read_decisions(cfg, name)
    decided = frozenset() if decisions is None else frozenset(decisions.latest.index)
    result = AuditResult(name, ranked, source, folder / "audit.csv", folder / "audit.html", decided)
    result.suspects.to_csv(result.csv_path, index=False)
    places = Photos.of(cfg.data)
    photos = (
        dict(zip(kept[cfg.data.id_column], places.paths(kept[cfg.data.image_column]))) if cfg.data.image_column else {}
    )
    result.html_path.write_text(_html_report(result, photos, places, report_rows))
    return result


def _parting_depth(given: str, suggested: str, separator: str) -> int:
    """The first level at which two paths differ (1 = the top level); 0 when they are the same path."""
    if given == suggested:
        return 0
    a, b = given.split(separator), suggested.split(separator)
    return next((d + 1 for d, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)) + 1)


def out_of_fold(model: MMGBMClassifier, X: ProductMatrix, y: np.ndarray) -> tuple[np.ndarray, dict, str]:
    """(n, len(classes_)) out-of-fold probabilities of the model's predictor, per modality the labels its best
    head alone predicts out of fold, and where they came from."""
    if hasattr(model, "oof_proba_"):
        if not np.array_equal(model.train_ids_, X.ids.astype(str)):
            raise MmgbmError("the training split changed since the model was trained; retrain it, then audit")
        by_modality = {m: model.classes_[p.argmax(axis=1)] for m, p in model.oof_proba_by_modality_.items()}
        return model.oof_proba_, by_modality, "the model's out-of-fold probabilities"
    folds = StratifiedKFold(model.n_folds, shuffle=True, random_state=model.seed)
    fitted = cross_validate(clone(model), X, y, cv=folds, return_estimator=True, return_indices=True, scoring=None)
    probs = np.zeros((len(y), len(model.classes_)))
    by_modality = {m: np.empty(len(y), dtype=object) for m in model.modalities_}
    for fold_model, rows in zip(fitted["estimator"], fitted["indices"]["test"]):
        # A fold's model may lack a rare class: its columns go to their places among all the classes.
        columns = np.searchsorted(model.classes_, fold_model.classes_)
        probs[np.ix_(rows, columns)] = fold_model.predict_proba(X[rows])
        for modality, labels in by_modality.items():
            if modality in fold_model.modalities_:
                labels[rows] = fold_model.predict_alone(X[rows], modality)
    return probs, by_modality, f"{model.n_folds}-fold cross-validated refits"


def rank_labels(classes: np.ndarray, given: np.ndarray, probs: np.ndarray, by_modality: dict) -> pd.DataFrame:
    """Per product: given and suggested label (with its probability), confidence that the given one is wrong
    (1 - cleanlab's normalised-margin label quality), cleanlab's issue flag, and which modalities alone suggest
    the same label."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    # Classes outside a product's re-ranked candidates get 0; cleanlab wants rows that are distributions.
    totals = probs.sum(axis=1, keepdims=True)
    probs = np.where(totals > 0, probs / np.where(totals > 0, totals, 1), 1 / probs.shape[1])
    labels = np.searchsorted(classes, given)
    # The margin between the given label and the best other one, not the given label's probability alone: on
    # bench_audit.py's flipped fashion labels it ranked more flips into the top 5% on both draws (articleType
    # 0.806 -> 0.835 and 0.827 -> 0.858, baseColour 0.727 -> 0.733 and 0.725 -> 0.733).
    quality = get_label_quality_scores(labels, probs, method="normalized_margin")
    with warnings.catch_warnings():
        # cleanlab warns per class too rare to estimate its noise rate; those products are still ranked above.
        warnings.simplefilter("ignore", UserWarning)
        issues = find_label_issues(labels, probs, n_jobs=1)
    suggested = classes[probs.argmax(axis=1)]
    modality = [
        "" if s == g else "+".join(m for m, alone in by_modality.items() if alone[i] == s) or FUSED_ONLY
        for i, (s, g) in enumerate(zip(suggested, given))
    ]
    return pd.DataFrame(
        {
            "given_label": given,
            "suggested_label": suggested,
            "suggested_probability": probs.max(axis=1),
            "confidence_wrong": 1 - quality,
            "modality": modality,
            "label_issue": issues,
        }
    )


def _html_report(result: AuditResult, photos: dict[str, str], places: Photos, rows: int) -> str:
    shown = result.suspects.head(rows)
    body = "\n".join(
        f"<tr><td>{i + 1}</td><td>{_thumbnail(photos.get(r.id, ''), places)}</td><td>{html.escape(str(r.title))}<br>"
        f"<small>{html.escape(str(r.id))}</small></td><td class=given>{html.escape(str(r.given_label))}</td>"
        f"<td class=suggested>{html.escape(str(r.suggested_label))}</td><td>{r.confidence_wrong:.2f}</td>"
        f"<td>{html.escape(r.modality)}</td></tr>"
        for i, r in enumerate(shown.itertuples())
    )
    title = f"mmgbm audit: {html.escape(result.target)}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: sans-serif; margin: 2em; }} table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: middle; }}
.given {{ color: #b00; text-decoration: line-through; }} .suggested {{ color: #070; font-weight: bold; }}
</style></head><body>
<h1>{title}</h1>
<p>{len(result.suspects):,} of {len(result.ranked):,} training labels disagree with the out-of-fold prediction
({html.escape(result.source)}) and are left to review{_decided_note(result)}; the {len(shown):,} most likely wrong
first. The full list is {result.csv_path.name}; review them with
<code>mmgbm review -t {html.escape(result.target)}</code>.</p>
<table><tr><th>#</th><th>photo</th><th>title / id</th><th>given</th><th>suggested</th><th>confidence wrong</th>
<th>suggested by</th></tr>
{body}
</table></body></html>
"""


def _decided_note(result: AuditResult) -> str:
    return f" ({len(result.decided):,} decided by reviewers are left out)" if result.decided else ""


def photo_preview(path: str, places: Photos, box: tuple[int, int]) -> bytes | str | None:
    """What a reviewer is shown of a product's photo: a small JPEG of a file, a photo URL as itself (linked, not
    fetched: the reviewer's browser shows it), None when there is none. The extractor's checks come first: a path
    outside the images folder or a special file (a FIFO would block) is never opened."""
    if places.fetched(path):
        return path
    try:
        places.check(path)
        return thumbnail_jpeg(path, box, places.inside)
    except UnreadableImage:  # refused, missing, not an image: the product just has no photo
        return None


def _thumbnail(path: str, places: Photos) -> str:
    """The photo as a small inline JPEG, so the report is one self-contained file."""
    photo = photo_preview(path, places, THUMBNAIL)
    if photo is None:
        return "<small>no photo</small>"
    if isinstance(photo, str):
        return f'<img src="{html.escape(photo)}" alt="photo" width="{THUMBNAIL[0]}" loading="lazy">'
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(photo).decode()}" alt="photo">'
