"""`targets.<name>.normalise`: the file of label names a person keeps, and which names a model was trained with.

    normalise: auto          spellings that differ only by accents, case, punctuation or spacing become the one most
                             training products use (mmgbm.estimator.label_names); nothing is marked as no label
    normalise: brands.csv    the file `mmgbm brands` writes, as a person left it: per spelling (`brand`) its
                             `canonical` name, and `no_brand` filled in (with anything: the reason) where the value
                             names no brand; `products` and `reason` are for the reader and not read back

A canonical name may itself be a spelling with a canonical name of its own: the chain is followed, so one group is
merged into another by renaming its canonical row alone. A model records which names it was trained with; a command
given a model trained with other names than the config's now refuses it in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mmgbm.errors import MmgbmError, first_line
from mmgbm.estimator.label_names import LabelNames

if TYPE_CHECKING:
    from mmgbm.commands.artifact import Artifact
    from mmgbm.config import Config

COLUMNS = ["brand", "canonical", "products", "reason", "no_brand"]
READ_BACK = ("brand", "canonical", "no_brand")


def read_names(path: Path) -> LabelNames:
    """The names a brands CSV gives; every problem is one line naming the file, the line and the column."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise MmgbmError(
            f"normalise file {path} not found; write one with `mmgbm brands --column COLUMN` or set normalise: auto"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' parser and empty-file errors are ValueErrors
        raise MmgbmError(f"{path}: not a readable CSV ({first_line(exc)}); save it as CSV (UTF-8)") from None
    missing = [c for c in READ_BACK if c not in frame.columns]
    if missing:
        raise MmgbmError(
            f"{path}: no column {missing[0]!r}; a normalise file has the columns {','.join(COLUMNS)} "
            f"(as `mmgbm brands` writes it)"
        )
    direct: dict[str, str] = {}
    flagged: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line, (brand, canonical, no_brand) in enumerate(zip(*(frame[c].str.strip() for c in READ_BACK)), start=2):
        if not brand:
            raise MmgbmError(f"{path} line {line}: column 'brand' is empty; fill it in or delete the line")
        if brand in lines:
            raise MmgbmError(
                f"{path} line {line}: brand {brand!r} is listed again (first on line {lines[brand]}); "
                f"keep one line per spelling"
            )
        if not canonical and not no_brand:
            raise MmgbmError(
                f"{path} line {line}: brand {brand!r} has an empty 'canonical'; write the name it should "
                f"become (itself to keep it as it is), or fill in 'no_brand'"
            )
        lines[brand] = line
        direct[brand] = canonical or brand
        if no_brand:
            flagged[brand] = no_brand
    canonical = {brand: _followed(brand, direct, lines, path) for brand in direct}
    # A value is no brand when its own line says so or its canonical name's line does.
    no_label = {
        brand: flagged.get(brand) or flagged[name]
        for brand, name in canonical.items()
        if brand in flagged or name in flagged
    }
    return LabelNames(canonical, no_label, source=str(path))


def _followed(brand: str, direct: dict[str, str], lines: dict[str, int], path: Path) -> str:
    chain = [brand]
    while (after := direct.get(chain[-1], chain[-1])) != chain[-1]:
        if after in chain:
            circle = " -> ".join([*chain[chain.index(after) :], after])
            raise MmgbmError(
                f"{path} line {lines[brand]}: canonical names go round in a circle ({circle}); make one "
                f"of them its own canonical"
            )
        chain.append(after)
    return chain[-1]


def normalisation(names: LabelNames | None) -> dict | None:
    """What a model records of the names it was trained with."""
    return None if names is None else {"source": names.source, "fingerprint": names.fingerprint}


def check_normalisation(cfg: Config, artifact: Artifact, folder: Path) -> None:
    """Refuse a model trained with other label names than the config's target gives now: its labels would not be
    the names the config asks for. `auto` names are the model's own (made from its training table)."""
    setting = cfg.targets[artifact.name].normalise
    trained = artifact.target.normalise
    if setting is None:
        now, same = None, trained is None
    elif setting == "auto":
        now = {"source": "auto"}
        same = trained is not None and trained["source"] == "auto"
    else:
        now = normalisation(read_names(Path(setting)))
        same = trained is not None and trained["fingerprint"] == now["fingerprint"]
    if not same:
        raise MmgbmError(
            f"model {folder} was trained with {_said(trained)} but targets.{artifact.name}.normalise "
            f"now gives {_said(now)}; retrain with `mmgbm train --target {artifact.name}` or set it back"
        )


def _said(record: dict | None) -> str:
    if record is None:
        return "the labels as written (no normalise)"
    if record["source"] == "auto":
        return "normalise: auto"
    return f"the names of {record['source']} (fingerprint {record['fingerprint'][:12]})"
