"""The model artifact: one folder per trained version of a target that predicts without the training data.

    models/<target>/<version>/  (mmgbm.model_versions; mmgbm before versions wrote it into models/<target>/)
        manifest.json       format version, the target (name, column, task, log transform, the label names it was
                            trained with: targets.<name>.normalise; a path target's columns, separator, depth and
                            taxonomy file), a SHA-256 per file and the version's provenance (data fingerprint,
                            settings, code version, out-of-fold score: what `mmgbm models` lists and the gate reads)
        estimator.skops     the fitted MMGBMClassifier / MMGBMPathClassifier / MMGBMRegressor without its LightGBM
                            boosters (skops)
        lightgbm.txt        the LightGBM stacker (LightGBM's own text format)
        chooser.txt         the label-in-text chooser's booster, where the model kept one
        labels.json         class names in code order (classification) or the target transform (regression)
        config.json         the config it was trained with, as JSON (provenance: predict reads the manifest)
        fingerprints.json   the feature stores' fingerprints; predict refuses features made another way
        metrics.json        training summary and validation figures

Nothing is unpickled: a model folder may come from a colleague or a shared workdir, and loading it must not run
code. The estimator goes through skops, which rebuilds objects only of types it is told to trust: beyond skops's
own safe defaults (scikit-learn's estimators, NumPy arrays), exactly the classes an mmgbm estimator is made of and
SciPy's CSR matrix. Trusting whole modules would not do: skops rebuilds some objects by calling a function the file
names, and NumPy or scikit-learn hold functions that run code. A file naming any other type is refused.
Every file is checked against the manifest before anything is loaded, and an artifact of another format version
is refused in one line that says to retrain.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import scipy.sparse as sp
import skops.io as sio

from mmgbm import __version__
from mmgbm.errors import MmgbmError
from mmgbm.features.atomic import ORPHAN_AGE_SECONDS
from mmgbm.estimator import MMGBMClassifier, MMGBMRegressor
from mmgbm.estimator.base import MMGBMBase, modality_of
from mmgbm.estimator.heads import trusted_types
from mmgbm.estimator.label_in_text import PrefixChooser
from mmgbm.estimator.label_names import LabelNames
from mmgbm.estimator.metadata import MetadataEncoder
from mmgbm.estimator.path_classifier import MMGBMPathClassifier
from mmgbm.estimator.stacking import CandidateReranker, RegressionStacker

# 14: the label-in-text chooser's product words and whether it may write new labels; 13: wide dense rows' exact
# neighbour search in their SVD directions; 12: a path target's levels' heads and partial paths; 11: path targets
# (how the target reads its paths); 10: each head kind in its own module
FORMAT_VERSION = 14
MANIFEST = "manifest.json"
ESTIMATOR = "estimator.skops"
BOOSTER = "lightgbm.txt"
JSON_FILES = ("labels.json", "config.json", "fingerprints.json", "metrics.json")
# LightGBM boosters are kept in LightGBM's own text format (skops cannot hold them): file -> the estimator's
# attribute that holds the booster's owner.
BOOSTERS = {BOOSTER: "stacker_", "chooser.txt": "chooser_"}
# The types an artifact may name beyond skops's defaults: classes, never functions.
ESTIMATOR_TYPES = (
    MMGBMClassifier,
    MMGBMPathClassifier,
    MMGBMRegressor,
    PrefixChooser,
    LabelNames,
    MetadataEncoder,
    CandidateReranker,
    RegressionStacker,
    sp.csr_matrix,
)


def trusted_type_names() -> frozenset[str]:
    """The estimator's own types and every registered head's (read when loading: a head registered since counts)."""
    return frozenset(f"{t.__module__}.{t.__qualname__}" for t in (*ESTIMATOR_TYPES, *trusted_types()))


@dataclass
class TargetInfo:
    """What a model predicts, recorded in its manifest: commands read it rather than today's config."""

    name: str
    column: str
    task: str
    log_target: bool = False
    normalise: dict | None = None  # mmgbm.commands.normalise.normalisation: where its names came from
    path: dict | None = None  # a path target's reading of its values (mmgbm.commands.targets.path_settings)


@dataclass
class Artifact:
    target: TargetInfo
    model: MMGBMBase
    config: dict[str, Any]
    fingerprints: dict[str, dict]
    metrics: dict[str, Any]

    @property
    def name(self) -> str:
        return self.target.name


def save_artifact(folder: Path, artifact: Artifact, provenance: dict[str, Any] | None = None) -> None:
    """Write into a fresh temporary folder, then swap it in: a crash never leaves half a model. `provenance` goes
    into the manifest as it is (mmgbm.model_versions.provenance)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(folder)
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        model = artifact.model
        boosters = _detach_boosters(model)
        try:
            for file, booster in boosters.items():
                booster.save_model(str(tmp / file))
            sio.dump(model, tmp / ESTIMATOR)
        finally:
            _attach_boosters(model, boosters)
        payloads = {
            "labels.json": _labels(model, artifact.target),
            "config.json": artifact.config,
            "fingerprints.json": artifact.fingerprints,
            "metrics.json": artifact.metrics,
        }
        for name, payload in payloads.items():
            _write_json(tmp / name, payload)
        files = {name: _sha256(tmp / name) for name in (ESTIMATOR, *boosters, *JSON_FILES)}
        _write_json(
            tmp / MANIFEST,
            {
                "format_version": FORMAT_VERSION,
                "mmgbm_version": __version__,
                "target": vars(artifact.target),
                "files": files,
                "provenance": provenance,
            },
        )
        old = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.old"
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """Folders killed saves left beside `folder` (`.<name>.<random>.tmp` / `.old`, of this model or a sibling
    version's): half-written ones, and models set aside while a new one was moved in (kept while the folder they
    were set aside from is missing: then they are the only model there is)."""
    cutoff = time.time() - ORPHAN_AGE_SECONDS
    for path in folder.parent.glob(".*.*"):
        set_aside_from = folder.parent / path.name[1:].rsplit(".", 2)[0]
        stale = path.suffix == ".tmp" or (path.suffix == ".old" and set_aside_from.is_dir())
        try:
            if stale and path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path)
        except OSError:  # another trainer removed it first: not ours to fix
            continue


def load_artifact(folder: Path, name: str) -> Artifact:
    """The artifact of target `name`, after checking its format version, its target and every file's checksum."""
    folder = Path(folder)
    retrain = f"retrain with `mmgbm train --target {name}`"
    if not folder.is_dir():
        previous = sorted(folder.parent.glob(f".{folder.name}.*.old"))
        if previous:  # killed between setting the old model aside and moving the new one in
            raise MmgbmError(
                f"no model in {folder}: training was interrupted while replacing it; the previous "
                f"model is {previous[-1]}: rename it to {folder.name} or {retrain}"
            )
        raise MmgbmError(f"no trained model for target {name!r} in {folder}; run `mmgbm train --target {name}`")
    manifest = _read_json(folder / MANIFEST, retrain) if (folder / MANIFEST).is_file() else None
    if manifest is None or manifest.get("format_version") != FORMAT_VERSION:
        version = "an older format" if manifest is None else f"format {manifest.get('format_version')!r}"
        raise MmgbmError(f"{folder}: model written in {version}; this mmgbm reads format {FORMAT_VERSION}: {retrain}")
    try:
        target = TargetInfo(**manifest["target"])
        files = dict(manifest["files"])
    except (KeyError, TypeError) as exc:
        raise MmgbmError(f"{folder / MANIFEST}: incomplete manifest ({exc}); {retrain}") from None
    if target.name != name:
        raise MmgbmError(f"{folder} holds a model of target {target.name!r}, not {name!r}; {retrain}")
    # Only the names this format knows are opened: a manifest must not point the checksum at any other file.
    for file in (ESTIMATOR, BOOSTER, *JSON_FILES, *(f for f in BOOSTERS if f != BOOSTER and f in files)):
        path = folder / file
        if file not in files or not path.is_file() or _sha256(path) != files[file]:
            raise MmgbmError(f"{path}: missing or changed since training (checksum mismatch); {retrain}")
    read = {f: _read_json(folder / f, retrain) for f in JSON_FILES}
    model = _load_estimator(folder / ESTIMATOR, retrain)
    _attach_boosters(model, {f: _load_booster(folder / f, retrain) for f in BOOSTERS if f in files})
    if (target.task == "regression") != model.regression or read["labels.json"] != _labels(model, target):
        raise MmgbmError(
            f"{folder}: the model does not match its manifest and labels.json (a {target.task} target "
            f"{target.name!r}); {retrain}"
        )
    return Artifact(target, model, read["config.json"], read["fingerprints.json"], read["metrics.json"])


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the model in `folder` without loading the model (None where there is none or it is
    unreadable): what listing versions needs; load_artifact checks it before anything is loaded."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _labels(model: MMGBMBase, target: TargetInfo) -> dict[str, Any]:
    """labels.json: what the model's outputs mean, written at training and checked against the model at loading."""
    if model.regression:
        return {"transform": "log1p" if target.log_target else "none"}
    return {"classes": [str(c) for c in model.classes_]}


def check_fingerprints(artifact: Artifact, fingerprints: dict[str, dict], folder: Path) -> None:
    """Refuse features made with another backbone, vectorizer or settings than the model was trained on, and a
    model that records no fingerprint for a modality it reads (an emptied fingerprints.json checks nothing)."""
    unrecorded = sorted(
        {modality_of(h) for h in artifact.model.heads_} - {key.split("/", 1)[0] for key in artifact.fingerprints}
    )
    if unrecorded:
        raise MmgbmError(
            f"{folder / 'fingerprints.json'} records no {' or '.join(unrecorded)} features although the "
            f"model reads them; retrain with `mmgbm train --target {artifact.name}`"
        )
    for key, trained in artifact.fingerprints.items():
        now = fingerprints.get(key)
        if now is None:
            raise MmgbmError(
                f"model {folder} was trained with {key} features, which the config no longer provides; "
                f"enable them again or retrain with `mmgbm train --target {artifact.name}`"
            )
        if now != trained:
            diff = sorted(k for k in set(now) | set(trained) if now.get(k) != trained.get(k))
            raise MmgbmError(
                f"{key} features differ from those model {folder} was trained on ({', '.join(diff)} changed); "
                f"retrain with `mmgbm train --target {artifact.name}` or restore the original features"
            )


def _detach_boosters(model: MMGBMBase) -> dict[str, lgb.Booster]:
    """Take the boosters out of the model (file name -> booster), leaving None in their place."""
    boosters = {}
    for file, owner_name in BOOSTERS.items():
        owner = getattr(model, owner_name, None)
        if getattr(owner, "booster_", None) is not None:
            boosters[file], owner.booster_ = owner.booster_, None
    return boosters


def _attach_boosters(model: MMGBMBase, boosters: dict[str, lgb.Booster]) -> None:
    for file, booster in boosters.items():
        getattr(model, BOOSTERS[file]).booster_ = booster


def _load_estimator(path: Path, retrain: str) -> MMGBMBase:
    """Unpack the skops file, refusing it when it names a type outside the trusted ones."""
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # not a skops file at all
        raise MmgbmError(f"{path}: unreadable model ({type(exc).__name__}); {retrain}") from None
    trusted = trusted_type_names()
    foreign = [t for t in untrusted if t not in trusted]
    if foreign:
        raise MmgbmError(
            f"{path} names types mmgbm does not load ({', '.join(foreign[:3])}); "
            f"only models trained by mmgbm are loaded: {retrain}"
        )
    try:
        model = sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise MmgbmError(f"{path}: unreadable model ({type(exc).__name__}); {retrain}") from None
    if not isinstance(model, MMGBMBase):
        raise MmgbmError(f"{path} holds a {type(model).__name__}, not an mmgbm model; {retrain}")
    return model


def _load_booster(path: Path, retrain: str) -> lgb.Booster:
    """A LightGBM text model. LightGBM aborts the whole process on some truncated files (C++ `terminate`, which
    Python cannot catch), so a file without the end of its trees is refused before LightGBM sees it."""
    text = path.read_text(errors="replace")
    if "\nend of trees\n" not in text:
        raise MmgbmError(f"{path}: truncated model (no end of trees); {retrain}")
    try:
        return lgb.Booster(model_str=text)
    except Exception as exc:  # a foreign file with a valid checksum: many exception types, one meaning
        raise MmgbmError(f"{path}: unreadable model ({type(exc).__name__}); {retrain}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path, retrain: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MmgbmError(f"{path}: unreadable ({type(exc).__name__}); {retrain}") from None


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
