"""Typed, validated run configuration with strict dotted `key=value` overrides.

Unknown keys and values of the wrong type or range raise `UserError` naming what is valid.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.core.checks import check_choice, check_float, check_int
from sweeper.core.errors import UserError

SAMPLERS = ("nsga2", "tpe", "random", "gp")
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # resize modes (preprocess.py)
DEVICES = ("auto", "cpu", "cuda")
RUNTIMES = ("torch", "onnxruntime")
SEED_MAX = 2**32 - 1  # numpy's and Optuna's samplers take seeds in 0..2**32-1
MAX_PARAMS = 2e9  # a bigger ViT (8 GB of float32 weights) is a typo, not a sweep
# MLflow tracking stores: a server, a database, a folder (`databricks` has no ://)
TRACKING_SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql",
                    "databricks")
# ray.address: 'auto', HOST:PORT, [IPv6]:PORT or ray://HOST:PORT (Ray client)
RAY_ADDRESS = re.compile(r"auto|(ray://)?([\w.-]+|\[[0-9a-fA-F:.]+\]):\d{1,5}")


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    # CIFAR: the torchvision dataset's folder (None: <output>/data); imagefolder: the folder
    # holding train/<class>/* and optionally val/ and test/ (sweeper.imagefolder)
    root: str | None = None
    download: bool = False  # CIFAR only: fetch from the internet when missing under root
    val_fraction: float = 0.15  # carved from the training split, fixed by seed
    test_fraction: float = 0.2  # digits, and an image folder without test/ (CIFAR has one)
    limit: int = 0  # keep at most this many training images (0 = all); for quick runs
    seed: int = 0
    # normalisation; None: the dataset's own, else the model's pretrained config (preprocess.py)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # resizing; None: the model's pretrained config (image files: the short side to
    # img_size / crop_pct, then the centre crop; crop_pct=1 keeps the whole short side)
    interpolation: str | None = None
    crop_pct: float | None = None
    workers: int = 2  # imagefolder: DataLoader processes decoding images, per loop

    def __post_init__(self) -> None:
        check_choice("data.name", self.name, DATASETS)
        for key in ("mean", "std"):  # a list when read back from sweep.json
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(value))
                _rgb(f"data.{key}", getattr(self, key), *((0.0, 1.0) if key == "mean"
                                                          else (1e-6, 10.0)))
        if self.interpolation is not None:
            check_choice("data.interpolation", self.interpolation, INTERPOLATIONS)
        if self.crop_pct is not None:
            check_float("data.crop_pct", self.crop_pct, 0.05, 1.0)
        check_int("data.workers", self.workers, 0, 64)
        check_float("data.val_fraction", self.val_fraction, 0.01, 0.5)
        check_float("data.test_fraction", self.test_fraction, 0.01, 0.5)
        check_int("data.limit", self.limit, 0, 10**9)
        check_int("data.seed", self.seed, 0, SEED_MAX)
        if self.name == "digits" and self.val_fraction + self.test_fraction > 0.8:
            raise UserError(f"data.val_fraction + data.test_fraction = "
                            f"{self.val_fraction + self.test_fraction:g} leaves too few "
                            "training images; keep the sum at most 0.8")


@dataclass(frozen=True)
class ModelConfig:
    """A timm VisionTransformer. name='vit_digits' builds the small embedded model from the
    fields below; any other name goes to timm.create_model (e.g. vit_small_patch16_224)."""

    name: str = "vit_digits"
    pretrained: bool = False
    img_size: int = 32
    patch_size: int = 4
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2.0
    # the user's weights (state_dict or training checkpoint), see sweeper/checkpoint.py
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.checkpoint is not None:  # absolute: resume and workers run from other folders
            if not self.checkpoint.strip():
                raise UserError("model.checkpoint is empty; leave it unset for no checkpoint")
            if self.pretrained:
                raise UserError("model.pretrained=true and model.checkpoint both give the "
                                "weights; set only one")
            object.__setattr__(self, "checkpoint", str(Path(self.checkpoint).expanduser()
                                                       .absolute()))
        check_int("model.img_size", self.img_size, 8, 1024)
        check_int("model.patch_size", self.patch_size, 1, self.img_size)
        check_int("model.depth", self.depth, 1, 48)
        check_int("model.num_heads", self.num_heads, 1, 64)
        check_int("model.embed_dim", self.embed_dim, 1, 16_384)
        check_float("model.mlp_ratio", self.mlp_ratio, 0.01, 64.0)
        if not self.name.strip():
            raise UserError("model.name is empty; use vit_digits or a timm ViT name")
        if self.embed_dim % self.num_heads:
            raise UserError(
                f"model.embed_dim={self.embed_dim} must be divisible by "
                f"model.num_heads={self.num_heads}"
            )
        if self.img_size % self.patch_size:
            raise UserError(
                f"model.img_size={self.img_size} must be divisible by "
                f"model.patch_size={self.patch_size}"
            )
        # blocks: qkv + proj (4 d^2) and the MLP (2 d^2 mlp_ratio)
        params = self.depth * self.embed_dim**2 * (4 + 2 * self.mlp_ratio)
        if self.name == "vit_digits" and params > MAX_PARAMS:
            raise UserError(f"model.embed_dim={self.embed_dim}, model.depth={self.depth} and "
                            f"model.mlp_ratio={self.mlp_ratio} make {params:.2g} weights "
                            f"(limit {MAX_PARAMS:.0e})")


@dataclass(frozen=True)
class TrainConfig:
    """How the baseline is trained (and the defaults for recovery fine-tuning)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("train.epochs", self.epochs, 0, 10_000)
        check_int("train.batch_size", self.batch_size, 1, 65_536)
        check_float("train.lr", self.lr, 1e-8, 10.0)
        check_float("train.weight_decay", self.weight_decay, 0.0, 10.0)
        check_float("train.label_smoothing", self.label_smoothing, 0.0, 0.9)
        check_int("train.seed", self.seed, 0, SEED_MAX)


@dataclass(frozen=True)
class SearchConfig:
    trials: int = 12
    concurrency: int = 2
    sampler: str = "nsga2"
    population: int = 0  # NSGA-II population size; 0 picks one from the trial count
    seed: int = 0
    max_failures: int = 3  # retries of a trial whose process or node died
    # Optuna storage URL (e.g. postgresql+psycopg2://user@host/optuna, password in PGPASSWORD:
    # the config is logged to MLflow); None: a journal file, <sweep folder>/optuna.journal
    storage: str | None = None
    # Successive halving of trials that train (sweeper.early_stop): judged after `rungs`
    # epochs of their training stage, going on only within the best 1/eta there (never one
    # no other trial dominates). auto: on for spaces whose every configuration trains;
    # observe: judged, never stopped (the decision is a tag; for benchmarks).
    early_stop: str = "auto"
    rungs: tuple[int, ...] = (1, 3, 9)
    eta: int = 3

    def __post_init__(self) -> None:
        check_choice("search.early_stop", self.early_stop, ("auto", "on", "off", "observe"))
        if not self.rungs or any(not 1 <= r <= 1000 for r in self.rungs) or list(
                self.rungs) != sorted(set(self.rungs)):
            raise UserError("search.rungs must be increasing epoch counts in 1..1000, "
                            "e.g. 1,3,9")
        check_int("search.eta", self.eta, 2, 100)
        check_int("search.trials", self.trials, 1, 100_000)
        check_int("search.concurrency", self.concurrency, 1, 10_000)
        check_choice("search.sampler", self.sampler, SAMPLERS)
        check_int("search.population", self.population, 0, 10_000)
        if self.population == 1:  # NSGA-II breeds pairs
            raise UserError("search.population=1 is too small; use 0 (automatic) or at least 2")
        check_int("search.max_failures", self.max_failures, 0, 100)
        check_int("search.seed", self.seed, 0, SEED_MAX)
        if self.storage is not None and "://" not in self.storage:
            # not echoed: a malformed URL may still hold a password
            raise UserError(
                "search.storage is not a database URL "
                "(e.g. postgresql+psycopg2://user@host:5432/optuna or sqlite:///path/optuna.db)"
            )
        no_password("search.storage", self.storage, "PGPASSWORD")


@dataclass(frozen=True)
class ResourcesConfig:
    cpus: float = 1.0  # per trial; also the trial's torch thread count
    gpus: float = 0.0  # per trial; fractional GPUs allowed
    device: str = "auto"  # auto: cuda when the trial was given a GPU, else cpu

    def __post_init__(self) -> None:
        check_float("resources.cpus", self.cpus, 0.01, 1024)
        check_float("resources.gpus", self.gpus, 0.0, 64)
        check_choice("resources.device", self.device, DEVICES)

    def trial_device(self) -> str:
        """The device type every trial computes and times on: "cuda" or "cpu"."""
        return "cuda" if self.device == "cuda" or (self.device == "auto" and self.gpus > 0) \
            else "cpu"


@dataclass(frozen=True)
class MeasureConfig:
    batch_sizes: tuple[int, ...] = (1, 64)
    warmup: int = 5  # calls of each model before timing
    repeats: int = 30  # model/baseline pairs per round; rounds repeat until the interval fits
    max_seconds: float = 5.0  # time cap of the pairs at each batch size
    target_halfwidth: float = 0.03  # stop when the ratio's 95% interval is within +-3%
    # while a trial times latency, the other trials on its node pause (sweeper.node_lock)
    quiet: bool = True
    eval_batch_size: int = 256
    runtime: str = "torch"  # torch (eager) | onnxruntime: where latency is measured

    def __post_init__(self) -> None:
        check_choice("measure.runtime", self.runtime, RUNTIMES)
        if not self.batch_sizes or any(not 1 <= b <= 65_536 for b in self.batch_sizes):
            raise UserError("measure.batch_sizes must be a non-empty list of integers in "
                            "[1, 65536]")
        # floors: a "measurement" of one cold call is not one
        check_int("measure.warmup", self.warmup, 1, 10_000)
        check_int("measure.repeats", self.repeats, 5, 100_000)
        check_float("measure.max_seconds", self.max_seconds, 0.0, 3600.0)
        check_float("measure.target_halfwidth", self.target_halfwidth, 0.001, 1.0)
        check_int("measure.eval_batch_size", self.eval_batch_size, 1, 65_536)


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # HOST:PORT or 'auto' attaches to a running cluster
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265

    def __post_init__(self) -> None:
        check_int("ray.dashboard_port", self.dashboard_port, 1, 65_535)
        if not self.dashboard_host.strip():
            raise UserError("ray.dashboard_host is empty; e.g. 127.0.0.1")
        if self.address is not None:
            match = RAY_ADDRESS.fullmatch(self.address)
            port = int(self.address.rsplit(":", 1)[1]) if match and self.address != "auto" else 1
            if not match or not 1 <= port <= 65_535:
                raise UserError(f"ray.address={self.address!r} is not 'auto', HOST:PORT or "
                                "ray://HOST:PORT")


@dataclass(frozen=True)
class Config:
    space: str = "nystrom_m"
    output_dir: str = "outputs"
    cache_dir: str | None = None  # baseline cache; default <output_dir>/cache (share it freely)
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite under output_dir
    experiment: str = "sweeper"
    dashboard: bool = False
    quiet: bool = False
    # Trials losing more than this many accuracy points (validation) are infeasible: kept in
    # MLflow with a tag, never on the front, and steered away from by Optuna's constraints.
    max_accuracy_drop: float | None = None
    # register the front in MLflow's Model Registry at the end (an ONNX export per member)
    registry: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        if self.max_accuracy_drop is not None:
            check_float("max_accuracy_drop", self.max_accuracy_drop, 0.0, 100.0)
        for key in ("space", "output_dir", "experiment"):
            if not getattr(self, key).strip():
                raise UserError(f"{key} is empty")
        if self.cache_dir is not None and not self.cache_dir.strip():
            raise UserError("cache_dir is empty; leave it unset for <output_dir>/cache")
        if self.tracking_uri is not None:
            check_tracking_uri("tracking_uri", self.tracking_uri)

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.output_dir) / "cache"

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{Path(self.output_dir).resolve() / 'mlflow.db'}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _rgb(key: str, values: tuple[float, ...], low: float, high: float) -> None:
    if len(values) != 3:
        raise UserError(f"{key} takes three numbers (R,G,B), got {len(values)}")
    for v in values:
        check_float(key, v, low, high)


def no_password(key: str, url: str | None, env: str) -> None:
    """A password in a URL would reach MLflow's params, sweep.json and the logs: refuse it
    (without echoing it) and name the variable that carries it instead."""
    if url and re.search(r"://[^/@\s]*:[^/@\s]*@", url):
        raise UserError(f"{key} contains a password; remove it from the URL (user@host) "
                        f"and set {env} instead")


def redact(text: str) -> str:
    """`text` with the password of every scheme://user:password@ URL in it replaced by ***."""
    return re.sub(r"(://[^/@\s:]*):[^/@\s]*@", r"\1:***@", text)


def url_scheme(url: str) -> str:
    """'postgresql' of postgresql+psycopg2://..., 'sqlite' of sqlite:///...: the store kind."""
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def check_tracking_uri(key: str, uri: str) -> None:
    scheme = url_scheme(uri)
    if scheme not in TRACKING_SCHEMES or (scheme != "databricks" and ":" not in uri):
        raise UserError(f"{key}={redact(uri)!r} is not an MLflow tracking URI; e.g. "
                        "http://HOST:5000 or sqlite:///PATH/mlflow.db")
    no_password(key, uri, "MLFLOW_TRACKING_PASSWORD (and MLFLOW_TRACKING_USERNAME)"
                if scheme in ("http", "https") else "PGPASSWORD")


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key an override may name."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += valid_keys(hint, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def parse_value(key: str, text: str, hint: Any) -> Any:
    """Convert the text of an override to the field's declared type, or raise UserError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        non_none = [a for a in args if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        return parse_value(key, text, non_none[0])
    if origin is tuple:
        items = [t for t in text.strip("[]()").split(",") if t.strip()]
        return tuple(parse_value(key, t.strip(), args[0]) for t in items)
    if hint is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise UserError(f"{key}={text!r} is not a boolean; use true or false")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f"{key}={text!r} is not an integer") from None
    if hint is float:
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{key}={text!r} is not a number") from None
        if not math.isfinite(value):
            raise UserError(f"{key}={text!r} is not a finite number")
        return value
    return text


def _set(obj: Any, path: list[str], text: str, full_key: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    name = path[0]
    if name not in hints:
        raise UserError(
            f"unknown key {full_key!r}; valid keys: {', '.join(valid_keys())}"
        )
    current = getattr(obj, name)
    if len(path) == 1:
        if dataclasses.is_dataclass(current):
            raise UserError(f"{full_key!r} is a section; set one of its keys, e.g. {full_key}.X")
        value = parse_value(full_key, text, hints[name])
    else:
        if not dataclasses.is_dataclass(current):
            raise UserError(
                f"unknown key {full_key!r}; valid keys: {', '.join(valid_keys())}"
            )
        value = _set(current, path[1:], text, full_key)
    try:
        return dataclasses.replace(obj, **{name: value})
    except TypeError as exc:  # pragma: no cover - guarded by the hint lookup above
        raise UserError(f"{full_key}: {exc}") from None


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `key=value` strings in order. `space=NAME` is a plain key like any other."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key=value")
        key = override_key(item)
        cfg = _set(cfg, key.split("."), item.split("=", 1)[1].strip(), key)
    return cfg


def override_key(item: str) -> str:
    """The key of a `key=value` override."""
    return item.partition("=")[0].strip()


def given_once(overrides: list[str]) -> None:
    """A key given twice on one command line is a mistake, not "the last one wins"."""
    seen: dict[str, str] = {}
    for item in overrides:
        if (key := override_key(item)) in seen:
            raise UserError(f"{key} is given twice ({seen[key]} and {item}); give each key once")
        seen[key] = item


def layered(*overrides: str) -> list[str]:
    """Defaults followed by what replaces them: each key once, where it was last given (a
    command line refuses a key given twice; scripts layer their own defaults under it)."""
    last = {override_key(item): i for i, item in enumerate(overrides)}
    return [item for i, item in enumerate(overrides) if last[override_key(item)] == i]


def build_config(overrides: list[str], base: Config | None = None) -> Config:
    return apply_overrides(base or Config(), overrides)


def config_from_dict(data: Any) -> Config:
    """Rebuild a Config from `Config.to_dict()` output (used by resume and export); a
    malformed or foreign one is a UserError naming what is wrong."""
    if not isinstance(data, dict):
        raise UserError(f"config is a {type(data).__name__}, not a mapping")
    hints = typing.get_type_hints(Config)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            raise UserError(f"unknown config key {key!r}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"config section {key!r} is not a mapping")
            sub = dict(value)
            for name in ("batch_sizes", "rungs"):
                if isinstance(sub.get(name), list):
                    sub[name] = tuple(sub[name])
            kwargs[key] = _build(hint, sub, key)
        else:
            kwargs[key] = value
    return _build(Config, kwargs, "config")


def _build(cls: type, kwargs: dict[str, Any], where: str) -> Any:
    try:
        return cls(**kwargs)
    except TypeError as exc:  # unknown or missing key, or a value of the wrong type
        raise UserError(f"{where}: {exc}") from None
