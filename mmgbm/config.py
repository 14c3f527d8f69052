"""The one config that is the truth for a run: a validated YAML file plus dotted command-line overrides.

Relative paths in the file are resolved against the folder that holds the file, so a config means the same thing
whatever directory a command is run from.
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmgbm.backbones import BACKBONE_DIMS, BACKBONE_SIZES
from mmgbm.errors import MmgbmError
from mmgbm.urls import check_url, is_url

DEFAULT_CONFIG_NAME = "mmgbm.yaml"
# A Dask scheduler's address as `dask scheduler` prints it: tcp://host:port (an IPv6 host in brackets).
SCHEDULER_ADDRESS = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):\d{1,5}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HoldoutConfig(Strict):
    """Carve a named split out of `train` by hashing the product id: stable as the catalogue grows."""

    name: str = "test"
    fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0


class PhotoFetchConfig(Strict):
    """How photo URLs are fetched (mmgbm.features.photo_fetch): many at once, none waited on for long."""

    in_flight: int = Field(128, ge=1, le=4096, description="requests in flight at once")
    per_host: int = Field(64, ge=1, description="requests in flight to one host (a CDN serves many)")
    connect_timeout: float = Field(5.0, gt=0, description="seconds to connect")
    read_timeout: float = Field(10.0, gt=0, description="seconds without a byte from the server")
    total_timeout: float = Field(30.0, gt=0, description="seconds for one try, however slowly the bytes come")
    tries: int = Field(3, ge=1, le=10, description="tries of a URL answered 429 / 5xx or dropped")
    backoff: float = Field(0.5, ge=0, description="seconds before the second try, doubled for each next one")
    max_bytes: int = Field(20_000_000, ge=1, description="a larger photo is refused before its body is read")
    max_redirects: int = Field(5, ge=0)


class DataConfig(Strict):
    id_column: str = "id"
    splits: dict[str, Path] = Field(..., description="split name -> table (CSV, Parquet or JSON Lines)")
    holdout: HoldoutConfig | None = None
    text_columns: list[str] = []
    image_column: str | None = None
    # A folder, or an fsspec URL (s3://bucket/photos) whose keys the image column names.
    images_root: str | Path | None = None
    # Image paths must resolve into images_root (after `..` and symbolic links) unless this is set: a catalogue from
    # elsewhere must not make mmgbm read any file the user can read.
    allow_absolute_image_paths: bool = False
    # Image values that are http(s) URLs are fetched as those URLs, whatever images_root is (a feed's image_link).
    remote_images: bool = False
    # Hosts, addresses or networks (CIDR) that photo URLs may reach although they are not public: loopback,
    # private, link-local and metadata addresses are refused otherwise (a feed is untrusted input). The host of
    # an http(s) images_root is always allowed.
    remote_image_hosts: list[str] = []
    # Several photos in one value: a JSON list (["a.jpg", "b.jpg"]) is always read as a list; values are also split
    # on this separator (e.g. "|"). The first usable photo is embedded.
    image_separator: str | None = None
    fetch: PhotoFetchConfig = PhotoFetchConfig()
    categorical_columns: list[str] = []
    numeric_columns: list[str] = []
    # Reviewers' decisions (<workdir>/labels/<target>.csv, written by `mmgbm review`) replace the labels they decided
    # in train, evaluate and audit; false reads the table's labels as they are.
    corrections: bool = True
    # A record of a CSV/TSV table with more fields than its header: "error" stops, naming the file line it starts
    # on; "skip" reads on without it, listing it in <workdir>/reports/bad_rows/<split>.csv.
    bad_rows: Literal["error", "skip"] = "error"

    @field_validator("splits")
    @classmethod
    def _has_train(cls, splits: dict[str, Path]) -> dict[str, Path]:
        if "train" not in splits:
            raise ValueError(f"needs a 'train' split (has: {', '.join(splits) or 'none'})")
        return splits

    @model_validator(mode="after")
    def _holdout_name_free(self) -> "DataConfig":
        if self.holdout is not None and self.holdout.name in self.splits:
            raise ValueError(f"holdout name {self.holdout.name!r} is also a split; rename one of them")
        return self


class TargetConfig(Strict):
    column: str | None = None  # needed by every target but a path given as `columns`
    task: Literal["multiclass", "binary", "regression", "path"] = "multiclass"
    log_target: bool = False
    # Metadata columns this target must not read, e.g. sibling category levels that would leak the answer.
    # The target's own column is always left out.
    exclude_columns: list[str] = []
    # The label is often written at the start of this column, e.g. a brand in a title: the first words of it are
    # also candidates, so labels never seen in training can be predicted (see mmgbm/label_in_text.py).
    label_in_text: str | None = None
    # One name per label (mmgbm/commands/normalise.py): "auto" merges spellings that differ only by accents, case,
    # punctuation or spacing; a CSV such as `mmgbm brands` writes (a person may edit it) also merges declared aliases
    # and marks values that are no label at all, whose products are left out of training.
    normalise: str | Path | None = None
    # The largest share of the labelled training products the normalise file may mark as no label: past it, `train`
    # stops and names the values, since a file that leaves many products out is more likely wrong than the labels.
    max_no_label: float = Field(0.05, ge=0.0, le=1.0)
    # A category path (task: path, mmgbm/taxonomy.py): `column` written with `separator` between levels, or `columns`
    # one per level; at most `max_depth` levels (deeper paths are an error unless `truncate` keeps their first
    # `max_depth`); with `taxonomy`, a file of the tree every label must be a node of. `partial_paths`: a path that
    # stops above other training paths is a class of its own ("leaf") or known only down to there ("ancestors": it
    # trains the levels above it, no class; mmgbm/estimator/path_classifier.py).
    columns: list[str] = []
    separator: str = Field(" > ", min_length=1)
    max_depth: int | None = Field(None, ge=1)
    truncate: bool = False
    taxonomy: Path | None = None
    partial_paths: Literal["leaf", "ancestors"] = "leaf"

    @property
    def source_columns(self) -> list[str]:
        """The table columns the target's values are read from."""
        return list(self.columns) if self.columns else [self.column]

    @model_validator(mode="after")
    def _path_settings_only_for_paths(self) -> "TargetConfig":
        path_settings = [
            name
            for name in ("columns", "max_depth", "truncate", "taxonomy", "separator", "partial_paths")
            if name in self.model_fields_set
        ]
        if self.task != "path" and path_settings:
            raise ValueError(f"{path_settings[0]} only applies to task: path")
        if self.column is not None and self.columns:
            raise ValueError("a path target reads `column` (one path per value) or `columns` (one per level), not both")
        if self.column is None and not self.columns:
            raise ValueError("needs a `column` (a path target may give `columns` instead, one per level)")
        if self.truncate and self.max_depth is None:
            raise ValueError("truncate needs max_depth: the depth paths are cut to")
        if self.task == "path" and self.normalise is not None:
            raise ValueError("normalise does not apply to task: path")
        return self

    @model_validator(mode="after")
    def _log_only_for_regression(self) -> "TargetConfig":
        if self.log_target and self.task != "regression":
            raise ValueError("log_target only applies to task: regression")
        if self.label_in_text is not None and self.task != "multiclass":
            raise ValueError("label_in_text only applies to task: multiclass")
        if self.normalise is not None and self.task == "regression":
            raise ValueError("normalise only applies to classification targets (it names their labels)")
        return self


class ImageFeaturesConfig(Strict):
    enabled: bool = True
    backbone: Literal["b0", "b3"] = "b0"
    # A path to a Keras .h5 weights file, "imagenet" (Keras download, needs internet) or "none" (random).
    weights: str = "imagenet"
    image_size: int | None = Field(None, ge=32, le=1024, description="default: 224 for b0, 300 for b3")
    batch_size: int = Field(32, ge=1, le=1024)
    shard_size: int = Field(1024, ge=1)
    # What runs the network (mmgbm.features.image_runtime): auto continues a store as it was made, and for a new one
    # takes OpenVINO where it is installed (else TensorFlow), in bfloat16 where the CPU computes it natively.
    runtime: Literal["auto", "tensorflow", "openvino"] = "auto"
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # A store refuses features made by another runtime or precision; true reads and extends it with them mixed in
    # (they agree within the cosine bounds the README gives).
    accept_other_runtimes: bool = False

    @property
    def resolved_image_size(self) -> int:
        return self.image_size or BACKBONE_SIZES[self.backbone]

    @property
    def dim(self) -> int:
        return BACKBONE_DIMS[self.backbone]


class TextFeaturesConfig(Strict):
    enabled: bool = True
    # field name -> text columns joined into it; empty means one field "text" joining every data.text_columns.
    fields: dict[str, list[str]] = {}
    # Vocabulary controls (sklearn TfidfVectorizer meaning): an int df is a document count, a float a fraction.
    # The default token pattern keeps one-character tokens: sizes and variants ("s", "xl", "4") matter in titles.
    ngram_range: tuple[int, int] = (1, 2)
    # Character n-grams within words beside the word n-grams (null: words only): titles spell one thing many ways.
    char_ngram_range: tuple[int, int] | None = (2, 5)
    min_df: int | float = 2
    max_df: int | float = 1.0
    max_features: int | None = Field(200_000, ge=1)
    sublinear_tf: bool = True
    lowercase: bool = True
    token_pattern: str = r"(?u)\b\w+\b"
    strip_html: bool = True
    shard_size: int = Field(50_000, ge=1)

    @field_validator("fields")
    @classmethod
    def _fields_named_safely(cls, fields: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, columns in fields.items():
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
                raise ValueError(f"field name {name!r} becomes a folder name; use letters, digits, '_', '.', '-'")
            if not columns:
                raise ValueError(f"field {name!r} needs at least one text column")
        return fields

    @field_validator("ngram_range", "char_ngram_range")
    @classmethod
    def _ngrams_ordered(cls, ngrams: tuple[int, int] | None) -> tuple[int, int] | None:
        if ngrams is not None and not 1 <= ngrams[0] <= ngrams[1]:
            raise ValueError("needs 1 <= min_n <= max_n, e.g. [1, 2]")
        return ngrams

    @field_validator("min_df", "max_df")
    @classmethod
    def _df_count_or_fraction(cls, df: int | float) -> int | float:
        if isinstance(df, float) and not 0.0 <= df <= 1.0:
            raise ValueError("a float is a fraction of documents in [0, 1]; use an int for a count")
        if isinstance(df, int) and df < 1:
            raise ValueError("a count of documents must be >= 1")
        return df

    @field_validator("token_pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        if groups > 1:
            raise ValueError("may have at most one capturing group (it selects the token)")
        return pattern


class FeaturesConfig(Strict):
    image: ImageFeaturesConfig = ImageFeaturesConfig()
    text: TextFeaturesConfig = TextFeaturesConfig()
    # The extract commands remove from the stores the products in none of the splits (removed from the feed), so a
    # store run every night holds the catalogue, not every product it ever held; false keeps them (a store that
    # several configs with different splits share). The commands' --prune/--no-prune decide for one run.
    prune: bool = True
    # A nightly feed drops a few products; one that drops more than this share of the stored ones at once was more
    # likely cut short: then nothing is pruned, and a note says so.
    max_prune: float = Field(0.2, ge=0.0, le=1.0)


class ModelConfig(Strict):
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, ge=2)
    min_data_in_leaf: int = Field(20, ge=1)
    max_rounds: int = Field(2000, ge=1)
    early_stopping_rounds: int = Field(50, ge=1)
    rare_category_min_count: int = Field(5, ge=1, description="metadata levels rarer than this become one level")
    seed: int = 42
    num_threads: int = Field(0, ge=0, description="0 = all cores")
    params: dict[str, Any] = Field({}, description="extra LightGBM parameters, passed through")
    # Per-modality heads, fitted out-of-fold on train and stacked under LightGBM.
    n_folds: int = Field(5, ge=2, le=20, description="folds for the heads' out-of-fold scores")
    stack_folds: int = Field(3, ge=2, le=20, description="folds the LightGBM stacker is cross-fitted over")
    stack_max_products: int = Field(200_000, ge=100, description="products the stacker learns from, at most")
    n_jobs: int | None = Field(None, description="heads' folds run at once (joblib: null = one, -1 = all cores)")
    knn_neighbors: int = Field(20, ge=1, description="neighbours of the cosine kNN heads")
    knn_exact_max_rows: int = Field(
        20_000,
        ge=1,
        description="exact kNN search up to this many training products; approximate (an inverted file) above",
    )
    knn_dense_dims: int = Field(
        256,
        ge=0,
        description="exact kNN search compares dense rows wider than this (photo embeddings) in this many SVD "
        "directions; 0 = every dimension",
    )
    linear_max_weights: int = Field(
        100_000_000,
        ge=1,
        description="skip a block's linear head when classes x features exceeds this (its weights' memory)",
    )
    linear_max_products: int = Field(
        50_000,
        ge=100,
        description="products each linear or boosted head (and kNN projection) learns from, at most: a "
        "sample that keeps rare classes whole",
    )
    linear_shortlist: int = Field(
        30,
        ge=0,
        description="above twice this many classes, each class's text SVM learns from the products whose "
        "nearest class centroids include it (0 = one-vs-rest on every product)",
    )
    linear_c: float = Field(1.0, gt=0, description="inverse regularisation of the linear SVM text heads")
    text_ridge_alpha: float = Field(0.2, gt=0, description="penalty of the ridge text heads (regression)")
    # MAE is the figure of merit for prices, so by default the stacker minimises it directly.
    regression_objective: Literal["regression", "regression_l1", "huber"] = "regression_l1"
    image_components: int = Field(0, ge=0, description="PCA components of image embeddings (0 = keep all)")
    image_alpha: float = Field(10.0, gt=0, description="ridge penalty of the linear image head")
    image_knn_projection: bool = Field(
        True, description="also a kNN image head searching in the space of a ridge classifier's class scores"
    )
    boosted_max_classes: int = Field(
        64,
        ge=0,
        description="a boosted-trees head on each small dense block (the photos' colour statistics) that "
        "tells the target at least as well as the embeddings, for targets of at most this many classes: its cost "
        "grows with them (0 = none)",
    )
    candidates: int = Field(
        20, ge=2, description="classes per product the stacker re-ranks (all classes when there are fewer)"
    )
    head_top_k: int = Field(
        32, ge=2, description="classes each classification head keeps per product (its best; at least candidates)"
    )
    selection_min_gain: float = Field(
        0.05, ge=0, lt=1, description="share of the best head's out-of-fold errors the stack must remove to be kept"
    )
    selection_margin_se: float = Field(
        2.0,
        ge=0,
        description="standard errors by which the stack (or a label copied from the text) must beat the "
        "best head out-of-fold to be kept",
    )

    @field_validator("n_jobs")
    @classmethod
    def _n_jobs(cls, value: int | None) -> int | None:
        if value is not None and value == 0:
            raise ValueError("0 runs nothing; use null (one at a time), a count, or -1 (all cores)")
        return value


class ModelsConfig(Strict):
    """The trained versions of each target's model (mmgbm.model_versions)."""

    keep: int = Field(5, ge=1, description="versions kept per target, the current one always among them")


class Config(Strict):
    workdir: Path = Path("runs/mmgbm")
    # The feature store (mmgbm.workdir): <workdir>/features unless a folder or an fsspec URL (s3://bucket/path) is
    # given; `store_options` are the object store's fsspec options (endpoint_url, profile ...).
    store: str | None = None
    store_options: dict[str, Any] = {}
    data: DataConfig
    targets: dict[str, TargetConfig] = {}
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    models: ModelsConfig = ModelsConfig()
    # Where commands run their work (mmgbm.cluster): here (null), on a Dask cluster started on this machine for the
    # command ("local") or on the Dask scheduler at an address. "none" lets `--cluster none` undo the file's setting.
    cluster: str | None = None

    @field_validator("cluster")
    @classmethod
    def _cluster_known(cls, cluster: str | None) -> str | None:
        if cluster is None or cluster == "none":
            return None
        if cluster != "local" and not SCHEDULER_ADDRESS.fullmatch(cluster):
            raise ValueError("must be 'local', 'none' or a Dask scheduler address such as tcp://10.0.0.5:8786")
        return cluster

    @property
    def text_fields(self) -> dict[str, list[str]]:
        if self.features.text.fields:
            return dict(self.features.text.fields)
        return {"text": list(self.data.text_columns)} if self.data.text_columns else {}

    @property
    def split_names(self) -> list[str]:
        names = list(self.data.splits)
        if self.data.holdout is not None and self.data.holdout.name not in names:
            names.append(self.data.holdout.name)
        return names


def find_config(path: str | Path | None) -> Path:
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MmgbmError(f"config file {path} not found; pass an existing YAML file with --config")
        return path
    default = Path.cwd() / DEFAULT_CONFIG_NAME
    if not default.is_file():
        raise MmgbmError(f"no {DEFAULT_CONFIG_NAME} in {Path.cwd()}; pass --config PATH (see configs/ for examples)")
    return default


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read, override and validate a config; every problem is one MmgbmError line."""
    path = find_config(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise MmgbmError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise MmgbmError(f"{path}: the top level must be a mapping of settings")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    cfg = validate_config(raw, source=str(path))
    cfg = _resolve_paths(cfg, path.parent.resolve())
    if cfg.workdir.exists() and not cfg.workdir.is_dir():
        raise MmgbmError(f"{path}: workdir {cfg.workdir} is a file, not a folder; point `workdir` at a folder")
    return cfg


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise MmgbmError(f"{source}: {_describe(exc)}") from None


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--model.learning_rate 0.03` or `--model.learning_rate=0.03` -> {"model.learning_rate": 0.03}."""
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) <= 2:
            raise MmgbmError(f"unexpected argument {arg!r}; overrides look like --section.key VALUE")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise MmgbmError(f"override --{key} needs a value, e.g. --{key} VALUE")
            value = args[i + 1]
            i += 1
        overrides[key.replace("-", "_")] = yaml.safe_load(value) if value != "" else ""
        i += 1
    return overrides


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise MmgbmError(f"override --{dotted}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


# Settings that name files or folders (resolved by `_resolve_paths`), and the words some of them take instead.
PATH_SETTINGS = re.compile(
    r"workdir|store|data\.images_root|data\.splits\.[^.]+|features\.image\.weights|"
    r"targets\.[^.]+\.(normalise|taxonomy)"
)
PATH_WORDS = ("imagenet", "none", "auto")


def is_path_setting(dotted: str) -> bool:
    return PATH_SETTINGS.fullmatch(dotted) is not None


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    def located(where: str | Path, setting: str) -> str | Path:
        """A checked fsspec URL, or a resolved folder. file:// names a folder: it gets a folder's atomic renames
        and, for photos, the symbolic-link checks."""
        where = str(where).removeprefix("file://")
        if is_url(where):
            check_url(where, setting)
            return where
        return resolve(Path(where))

    cfg.workdir = resolve(cfg.workdir)
    if cfg.store is not None:
        cfg.store = str(located(cfg.store, "store"))
    cfg.data.splits = {name: resolve(p) for name, p in cfg.data.splits.items()}
    if cfg.data.images_root is not None:
        cfg.data.images_root = located(cfg.data.images_root, "data.images_root")
    for target in cfg.targets.values():
        if target.normalise not in (None, "auto"):
            target.normalise = resolve(Path(target.normalise))
        if target.taxonomy is not None:
            target.taxonomy = resolve(target.taxonomy)
    weights = cfg.features.image.weights
    if weights not in ("imagenet", "none"):
        cfg.features.image.weights = str(resolve(Path(weights)))
    return cfg


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    where = ".".join(loc) or "config"
    if err["type"] == "extra_forbidden":
        hint = _did_you_mean(loc)
        return f"unknown setting {where!r}{hint}"
    if err["type"] == "missing":
        return f"missing required setting {where!r}"
    value = err.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict) else ""
    more = f" [+{len(exc.errors()) - 1} more problems]" if len(exc.errors()) > 1 else ""
    return f"setting {where!r}: {err['msg']}{shown}{more}"


def _did_you_mean(loc: list[str]) -> str:
    section: Any = Config
    parts = iter(loc[:-1])
    for part in parts:
        model = _section_type(section)
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return ""
        section = field.annotation
        if typing.get_origin(section) is dict:
            section = typing.get_args(section)[1]
            next(parts, None)  # the user's own key, e.g. the target name in targets.<name>.column
    model = _section_type(section)
    if model is None:
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(model.model_fields)}"


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The model class behind an annotation such as `HoldoutConfig | None`."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
