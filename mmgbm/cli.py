"""The `mmgbm` command: thin Typer commands that load the config, call the library and print a short summary.

Any setting can be overridden for one run with dotted options after the command's own options, e.g.
`mmgbm train --target category --model.learning_rate 0.03`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from mmgbm.cluster import connect
from mmgbm.config import PATH_WORDS, Config, TextFeaturesConfig, is_path_setting, load_config, parse_overrides
from mmgbm.errors import MmgbmError, MmgbmWarning

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Predict product attributes from a catalogue: image + text + metadata features, fused by LightGBM.",
)
console = Console()
err_console = Console(stderr=True)

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML config (default: ./mmgbm.yaml).", show_default=False)
]
ClusterOpt = Annotated[
    Optional[str],
    typer.Option(
        help="Run on a Dask cluster: 'local' (started on this machine for the command), a scheduler address "
        "tcp://HOST:8786, or 'none' (default: the config's `cluster`).",
        show_default=False,
    ),
]
PruneOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--prune/--no-prune",
        help="Remove from the store the products in none of the splits (default: the config's features.prune).",
        show_default=False,
    ),
]


@app.callback()
def _each_command(ctx: typer.Context) -> None:
    ctx.with_resource(_warnings_as_notes())


@contextmanager
def _warnings_as_notes() -> Iterator[None]:
    """What a command read on past (MmgbmWarning) as one `note:` line on stderr, once however often it is met: a
    table read twice (a holdout's two parts) is one note."""
    shown: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("always", MmgbmWarning)
        show_others = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if not issubclass(category, MmgbmWarning):
                return show_others(message, category, *args, **kwargs)
            if str(message) not in shown:
                shown.add(str(message))
                err_console.print(f"[bold yellow]note:[/] {escape(str(message))}", highlight=False, soft_wrap=True)

        warnings.showwarning = show
        yield


def _config(ctx: typer.Context, path: Optional[Path], **cli_overrides: object) -> Config:
    """Config file + dotted overrides from the command line + a command's own options (None = not given). A path
    typed on the command line means what it means in the shell it was typed in: relative to the current folder,
    not to the config's (where the config's own paths are relative to)."""
    overrides = parse_overrides(list(ctx.args))
    overrides.update({k: v for k, v in cli_overrides.items() if v is not None})
    return load_config(path, {k: _from_here(v) if is_path_setting(k) else v for k, v in overrides.items()})


def _from_here(value: object) -> object:
    text = str(value)
    if not isinstance(value, (str, Path)) or "://" in text or text in PATH_WORDS or Path(text).is_absolute():
        return value
    return str(Path(text).resolve())


@app.command(context_settings=OVERRIDES)
def validate(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Check the config and every table it names (ids, columns, usable targets) without computing anything."""
    from mmgbm.catalogue import empty_columns, load_split
    from mmgbm.commands.targets import target_problems

    cfg = _config(ctx, config)
    problems = []
    for split in cfg.split_names:
        frame = load_split(cfg, split)
        console.print(f"{split}: {len(frame):,} products, columns OK")
        if split == "train":
            problems += target_problems(cfg, frame, f"split {split!r}")
            problems += [
                f"split {split!r}: column {c!r} has no values at all; fill it or drop it from the config"
                for c in empty_columns(cfg, frame)
            ]
    for problem in problems:
        err_console.print(f"[bold red]problem:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    if problems:
        raise MmgbmError(f"{len(problems)} problem(s) above; fix them and run `mmgbm validate` again")
    console.print(f"targets: {', '.join(cfg.targets) or 'none'}; workdir: {cfg.workdir}")


@app.command("extract-images", context_settings=OVERRIDES)
def extract_images_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    backbone: Annotated[Optional[str], typer.Option(help="b0 or b3.")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Input size in pixels.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per forward pass.")] = None,
    weights: Annotated[Optional[str], typer.Option(help="Weights file, 'imagenet' or 'none'.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Discard stored image features and start again.")] = False,
    prune: PruneOpt = None,
    cluster: ClusterOpt = None,
) -> None:
    """Embed every product image with a frozen EfficientNet into the feature store (incremental)."""
    from mmgbm.stores import extract_images

    cfg = _config(
        ctx,
        config,
        cluster=cluster,
        **{
            "features.prune": prune,
            "features.image.backbone": backbone,
            "features.image.image_size": image_size,
            "features.image.batch_size": batch_size,
            "features.image.weights": weights,
        },
    )
    with connect(cfg.cluster) as client:
        summary = extract_images(cfg, overwrite=overwrite, progress=True, client=client)
    console.print(summary.describe())


def _extract_text_help() -> str:
    """The help of extract-text, with the n-gram settings' names and defaults as the config declares them."""
    settings = TextFeaturesConfig.model_fields
    words, chars = settings["ngram_range"].default, settings["char_ngram_range"].default
    return (
        "Fit TF-IDF on the training split and store sparse vectors for every product (incremental): word n-grams of "
        f"{words[0]}-{words[1]} words (features.text.ngram_range) and character n-grams of {chars[0]}-{chars[1]} "
        "characters within words (features.text.char_ngram_range; null for words only)."
    )


@app.command("extract-text", context_settings=OVERRIDES, help=_extract_text_help())
def extract_text_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    overwrite: Annotated[
        bool, typer.Option(help="Refit the vectorizer on train and rebuild all text features.")
    ] = False,
    prune: PruneOpt = None,
    cluster: ClusterOpt = None,
) -> None:
    from mmgbm.stores import extract_text

    cfg = _config(ctx, config, cluster=cluster, **{"features.prune": prune})
    with connect(cfg.cluster) as client:
        summary = extract_text(cfg, overwrite=overwrite, client=client)
    console.print(summary.describe())


TargetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--target", "-t", help="Target name from the config; repeat it, or 'all' (default: all).", show_default=False
    ),
]
SplitOpt = Annotated[str, typer.Option(help="Split of the config to use.")]


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    cluster: ClusterOpt = None,
    force: Annotated[
        bool, typer.Option(help="Make each new version current even where it scores worse than the current one.")
    ] = False,
) -> None:
    """Fit per-modality heads and a LightGBM stacker per target; save each as a new version in
    <workdir>/models/<target>/, made current unless its out-of-fold score is worse than the current version's
    beyond two standard errors. A refused version is kept and named on stderr, and train exits with status 3 once
    every target is trained (1: any other error). Each stage shows as it goes (one line per stage when the output is
    not a terminal)."""
    from mmgbm.commands.train import train as train_targets
    from mmgbm.model_versions import REFUSED_EXIT_CODE
    from mmgbm.progress import StageBars

    cfg = _config(ctx, config, cluster=cluster)
    with connect(cfg.cluster) as client, StageBars(console) as stages:
        summaries = train_targets(cfg, target, client=client, progress=stages, say=stages.say, force=force)
    refused = [s.gate for s in summaries if s.gate.refused]
    for gate in refused:
        err_console.print(f"[bold red]refused:[/] {escape(gate.refusal())}", highlight=False, soft_wrap=True)
    if refused:
        raise typer.Exit(REFUSED_EXIT_CODE)


@app.command(context_settings=OVERRIDES)
def models(
    ctx: typer.Context,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    use: Annotated[
        Optional[str],
        typer.Option(help="Make this version of the target current (roll back, or promote a refused one)."),
    ] = None,
) -> None:
    """List each target's model versions (oldest first: when trained, out-of-fold score, current / refused /
    kept), or with --use make one current."""
    from mmgbm.commands.targets import resolve_targets
    from mmgbm.model_versions import use as use_version
    from mmgbm.model_versions import versions
    from mmgbm.workdir import target_models_dir

    cfg = _config(ctx, config)
    names = resolve_targets(cfg, target)
    if use is not None:
        if len(names) != 1:
            raise MmgbmError(f"--use takes one target; name it with --target ({', '.join(names)})")
        console.print(use_version(target_models_dir(cfg, names[0]), names[0], use), highlight=False, soft_wrap=True)
        return
    for name in names:
        listed = versions(target_models_dir(cfg, name))
        if not listed:
            console.print(f"{name}: no model yet; run `mmgbm train --target {name}`", highlight=False)
        for version in listed:
            console.print(f"{name}  {version.describe()}", highlight=False, soft_wrap=True)


@app.command(context_settings=OVERRIDES)
def evaluate(
    ctx: typer.Context,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    split: SplitOpt = "test",
    cluster: ClusterOpt = None,
) -> None:
    """Score trained models on a labelled split; metrics.json and PNGs go to <workdir>/reports/<target>/."""
    from mmgbm.commands.evaluate import evaluate as evaluate_targets

    cfg = _config(ctx, config, cluster=cluster)
    with connect(cfg.cluster) as client:
        for result in evaluate_targets(cfg, target, split, client=client):
            console.print(result.describe(), highlight=False)


@app.command(context_settings=OVERRIDES)
def predict(
    ctx: typer.Context,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    split: SplitOpt = "test",
    input: Annotated[Optional[Path], typer.Option("--input", help="Table to predict instead of a split.")] = None,
    out: Annotated[Path, typer.Option(help="CSV to write: one row per input product, in input order.")] = Path(
        "submission.csv"
    ),
    top_k: Annotated[int, typer.Option(help="Also write the k most likely classes and their probabilities.")] = 0,
    probabilities: Annotated[bool, typer.Option(help="Also write every class's probability.")] = False,
    min_confidence: Annotated[
        float,
        typer.Option(
            help="Leave a label empty when its calibrated probability is below this (fill only what is safe); a path "
            "target keeps the deepest level of its path that reaches it, with its depth."
        ),
    ] = 0.0,
    cluster: ClusterOpt = None,
) -> None:
    """Predict every target for each product of a split or an input table and write a CSV."""
    from mmgbm.commands.predict import predict as predict_targets
    from mmgbm.commands.predict import write_predictions, written_summary

    cfg = _config(ctx, config, cluster=cluster)
    with connect(cfg.cluster) as client:
        frame = predict_targets(
            cfg,
            target,
            split,
            input,
            probabilities=probabilities,
            top_k=top_k,
            min_confidence=min_confidence,
            client=client,
            say=lambda line: console.print(line, highlight=False),
        )
    path = write_predictions(frame, out)
    console.print(written_summary(frame, path), highlight=False, soft_wrap=True)


@app.command(context_settings=OVERRIDES)
def drift(
    ctx: typer.Context,
    config: ConfigOpt = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Classification target whose answers to check.")] = ...,
    source: Annotated[
        str, typer.Option(help="Whose answers: 'predict' (its last run) or 'serve' (the service's, by day).")
    ] = "predict",
    days: Annotated[int, typer.Option(help="With --source serve: the last N UTC days, today included.")] = 2,
    low_confidence: Annotated[float, typer.Option(help="An answer below this probability counts as unsure.")] = 0.5,
) -> None:
    """Compare what predict or serve answered with the model's out-of-fold answers: the share of low-confidence
    answers, the labels whose share moved most, a verdict, and a PNG in <workdir>/reports/<target>/drift/. Exits
    with status 4 when drift is flagged (1: any other error), so a scheduler can act on it."""
    from mmgbm.drift import DRIFT_EXIT_CODE
    from mmgbm.drift import drift as compare_answers

    report = compare_answers(_config(ctx, config), target, source, days, low_confidence)
    console.print(report.describe(), highlight=False, soft_wrap=True)
    if report.flagged:
        raise typer.Exit(DRIFT_EXIT_CODE)


DEMO_CONFIG = Path(__file__).resolve().parent / "data" / "demo" / "mmgbm.yaml"


@app.command(context_settings=OVERRIDES)
def demo(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", help="Config to run end to end.")] = DEMO_CONFIG,
    workdir: Annotated[
        Optional[Path],
        typer.Option(
            help="Where features, models and the submission go (default: ./runs/demo for the bundled sample, "
            "the config's own workdir otherwise).",
            show_default=False,
        ),
    ] = None,
    cluster: ClusterOpt = None,
) -> None:
    """Run the whole pipeline on a config (default: the bundled sample): extract, train, evaluate, predict."""
    from mmgbm.commands.pipeline import run_pipeline
    from mmgbm.progress import StageBars

    if workdir is None and config == DEMO_CONFIG:
        workdir = Path("runs") / "demo"  # never inside the installed package
    cfg = _config(ctx, config, cluster=cluster, workdir=None if workdir is None else str(workdir.resolve()))
    with connect(cfg.cluster) as client, StageBars(console) as stages:
        run_pipeline(cfg, say=stages.say, client=client, progress=stages)


@app.command(context_settings=OVERRIDES)
def serve(
    ctx: typer.Context,
    config: ConfigOpt = None,
    target: TargetOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 exposes the service to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the trained models over HTTP: POST /predict, GET /health, API docs at /docs."""
    from mmgbm.commands.serve import serve as run_service

    cfg = _config(ctx, config)
    run_service(cfg, target, host, port, say=lambda line: console.print(line, highlight=False))


@app.command(context_settings=OVERRIDES)
def audit(
    ctx: typer.Context,
    config: ConfigOpt = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Classification target whose labels to audit.")] = ...,
    report_rows: Annotated[int, typer.Option(help="Suspects shown in the HTML report (audit.csv has them all).")] = (
        200
    ),
) -> None:
    """Rank training products whose given label looks wrong; write audit.csv and audit.html to reports/<target>/."""
    from mmgbm.commands.audit import audit as audit_target

    cfg = _config(ctx, config)
    console.print(audit_target(cfg, target, report_rows).describe(), highlight=False)


@app.command(context_settings=OVERRIDES)
def review(
    ctx: typer.Context,
    config: ConfigOpt = None,
    target: Annotated[
        Optional[list[str]],
        typer.Option(
            "--target",
            "-t",
            help="Audited target to review; repeat it (default: every target with an audit).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; any but this machine's needs MMGBM_REVIEW_TOKEN set to take decisions."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Answer the audit's suspects in a browser (keep, take the suggestion, pick another label); the answers go to
    <workdir>/labels/<target>.csv, which train and evaluate read."""
    from mmgbm.commands.review import review as run_review

    cfg = _config(ctx, config)
    run_review(cfg, target, host, port, say=lambda line: console.print(line, highlight=False, soft_wrap=True))


@app.command(context_settings=OVERRIDES)
def brands(
    ctx: typer.Context,
    config: ConfigOpt = None,
    column: Annotated[str, typer.Option(help="The brand column of the training table.")] = ...,
    titles: Annotated[
        Optional[str],
        typer.Option(
            help="Column of the product titles (default: the first of data.text_columns).", show_default=False
        ),
    ] = None,
) -> None:
    """One canonical name per brand and the values that name no brand: brands.csv and brands.html in reports/brands/;
    check and edit the CSV, then name it in targets.<name>.normalise."""
    from mmgbm.commands.brands import brands as find_brands

    cfg = _config(ctx, config)
    console.print(find_brands(cfg, column, titles).describe(), highlight=False)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 1, never a traceback."""
    from mmgbm.features.atomic import disk_error

    try:
        app()
    except MmgbmError as exc:
        _fail(exc)
    except OSError as exc:  # what the library does not catch itself: a full disk, a read-only or odd workdir
        _fail(disk_error(exc))
    except Exception as exc:  # a bug, or a library's error nothing anticipated: still one line, with a way to dig
        if os.environ.get("MMGBM_DEBUG"):
            raise
        _fail(MmgbmError(f"unexpected {type(exc).__name__}: {exc} (set MMGBM_DEBUG=1 to see where; please report it)"))


def _fail(exc: MmgbmError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
