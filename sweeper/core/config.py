"""Typed, validated run configuration with strict dotted `key=value` overrides.

Unknown keys and values of the wrong type or range raise `UserError` naming what is valid.
Each setting is declared once, with `setting(default, meaning, lo=, hi= | choices=)`: that
declaration is what `check_declared` enforces in every __post_init__ (beside the checks that
involve several fields) and what sweeper.cli.config_help writes `launch --help`'s key list
and docs/configuration.md from.
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

from sweeper.core.checks import check_declared, setting
from sweeper.core.errors import UserError

SAMPLERS = ("nsga2", "tpe", "random", "gp")
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # resize modes (preprocess.py)
DEVICES = ("auto", "cpu", "cuda")
RUNTIMES = ("torch", "onnxruntime")
EARLY_STOP = ("auto", "on", "off", "observe")
SEED_MAX = 2**32 - 1  # numpy's and Optuna's samplers take seeds in 0..2**32-1
MAX_PARAMS = 2e9  # a bigger ViT (8 GB of float32 weights) is a typo, not a sweep
# MLflow tracking stores: a server, a database, a folder (`databricks` has no ://)
TRACKING_SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql",
                    "databricks")
# ray.address: 'auto', HOST:PORT, [IPv6]:PORT or ray://HOST:PORT (Ray client)
RAY_ADDRESS = re.compile(r"auto|(ray://)?([\w.-]+|\[[0-9a-fA-F:.]+\]):\d{1,5}")


@dataclass(frozen=True)
class DataConfig:
    """The images: which dataset, how it is split and preprocessed."""

    name: str = setting("digits", "the images: digits is built in, CIFAR is read from "
                        "data.root, imagefolder is your own folder", choices=DATASETS)
    root: str | None = setting(None, "CIFAR: the torchvision dataset's folder (none: "
                               "<output_dir>/data); imagefolder: the folder holding "
                               "train/<class>/* and optionally val/ and test/")
    download: bool = setting(False, "CIFAR only: fetch it from the internet when missing "
                             "under data.root")
    val_fraction: float = setting(0.15, "share of the training split held out for validation "
                                  "(fixed by data.seed)", lo=0.01, hi=0.5)
    test_fraction: float = setting(0.2, "share held out for testing: digits, and an image "
                                   "folder without test/ (CIFAR has its own)", lo=0.01, hi=0.5)
    limit: int = setting(0, "keep at most this many training images, a seeded sample "
                         "(0: all); for quick runs", lo=0, hi=10**9)
    seed: int = setting(0, "seed of the validation/test split and of data.limit's sample",
                        lo=0, hi=SEED_MAX)
    mean: tuple[float, ...] | None = setting(
        None, "normalisation mean, three numbers R,G,B (none: the dataset's own, else the "
        "model's pretrained config)", lo=0.0, hi=1.0)
    std: tuple[float, ...] | None = setting(
        None, "normalisation standard deviation, three numbers R,G,B (none: as data.mean)",
        lo=1e-6, hi=10.0)
    interpolation: str | None = setting(None, "resize mode of image files (none: the model's "
                                        "pretrained config)", choices=INTERPOLATIONS)
    crop_pct: float | None = setting(None, "image files: the short side is resized to "
                                     "img_size / crop_pct, then centre-cropped; 1 keeps it "
                                     "whole (none: the model's pretrained config)",
                                     lo=0.05, hi=1.0)
    workers: int = setting(2, "imagefolder: DataLoader processes decoding images, per loop "
                           "(0: in the trial's own process)", lo=0, hi=64)

    def __post_init__(self) -> None:
        for key in ("mean", "std"):  # a list when read back from sweep.json
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(value))
                if len(value) != 3:
                    raise UserError(f"data.{key} takes three numbers (R,G,B), got {len(value)}")
        check_declared(self, "data.")
        if self.name == "digits" and self.val_fraction + self.test_fraction > 0.8:
            raise UserError(f"data.val_fraction + data.test_fraction = "
                            f"{self.val_fraction + self.test_fraction:g} leaves too few "
                            "training images; keep the sum at most 0.8")


@dataclass(frozen=True)
class ModelConfig:
    """The model swept: a timm VisionTransformer.

    name='vit_digits' builds the small embedded model from the fields below; any other name
    goes to timm.create_model (e.g. vit_small_patch16_224)."""

    name: str = setting("vit_digits", "vit_digits (the small built-in ViT, sized by the "
                        "fields below) or a timm ViT name, e.g. vit_small_patch16_224")
    pretrained: bool = setting(False, "load timm's pretrained weights (not with "
                               "model.checkpoint)")
    img_size: int = setting(32, "input image size in pixels", lo=8, hi=1024)
    patch_size: int = setting(4, "vit_digits: patch size in pixels; divides model.img_size",
                              lo=1, hi="img_size")
    embed_dim: int = setting(64, "vit_digits: token width; divisible by model.num_heads",
                             lo=1, hi=16_384)
    depth: int = setting(4, "vit_digits: transformer blocks", lo=1, hi=48)
    num_heads: int = setting(4, "vit_digits: attention heads per block", lo=1, hi=64)
    mlp_ratio: float = setting(2.0, "vit_digits: MLP hidden width over model.embed_dim",
                               lo=0.01, hi=64.0)
    # absolute once set: resume and workers run from other folders (sweeper.models.checkpoint)
    checkpoint: str | None = setting(None, "your weights (safetensors, state_dict or training "
                                     "checkpoint) loaded into the model (none: "
                                     "model.pretrained or random)")

    def __post_init__(self) -> None:
        if self.checkpoint is not None:
            if not self.checkpoint.strip():
                raise UserError("model.checkpoint is empty; leave it unset for no checkpoint")
            if self.pretrained:
                raise UserError("model.pretrained=true and model.checkpoint both give the "
                                "weights; set only one")
            object.__setattr__(self, "checkpoint", str(Path(self.checkpoint).expanduser()
                                                       .absolute()))
        check_declared(self, "model.")
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

    epochs: int = setting(30, "baseline training epochs (0: the model is swept as loaded)",
                          lo=0, hi=10_000)
    batch_size: int = setting(32, "training batch size", lo=1, hi=65_536)
    lr: float = setting(2e-3, "peak learning rate (AdamW, warm-up then cosine decay)",
                        lo=1e-8, hi=10.0)
    weight_decay: float = setting(0.05, "AdamW's decoupled weight decay", lo=0.0, hi=10.0)
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy loss",
                                     lo=0.0, hi=0.9)
    seed: int = setting(0, "seed of the baseline's training (same seed and machine: the same "
                        "weights)", lo=0, hi=SEED_MAX)

    def __post_init__(self) -> None:
        check_declared(self, "train.")


@dataclass(frozen=True)
class SearchConfig:
    """How configurations are proposed (Optuna), retried and stopped early."""

    trials: int = setting(12, "trials to run in all", lo=1, hi=100_000)
    concurrency: int = setting(2, "trials running at once", lo=1, hi=10_000)
    sampler: str = setting("nsga2", "Optuna sampler proposing the configurations",
                           choices=SAMPLERS)
    population: int = setting(0, "NSGA-II population size, at least 2 (0: picked from "
                              "search.trials)", lo=0, hi=10_000)
    seed: int = setting(0, "seed of the sampler", lo=0, hi=SEED_MAX)
    max_failures: int = setting(3, "retries of a trial whose process or node died",
                                lo=0, hi=100)
    # the config is logged to MLflow, so a password in the URL is refused (no_password)
    storage: str | None = setting(None, "Optuna storage URL, e.g. postgresql+psycopg2://user@"
                                  "host/optuna, password in PGPASSWORD (none: a journal file, "
                                  "<sweep folder>/optuna.journal)")
    # Successive halving (sweeper.early_stop): never stops one no other trial dominates.
    early_stop: str = setting("auto", "successive halving of trials that train: auto is on "
                              "for spaces whose every configuration trains; observe judges "
                              "but never stops (a tag)", choices=EARLY_STOP)
    rungs: tuple[int, ...] = setting((1, 3, 9), "early stopping judges a trial after these "
                                     "epochs of its training stage", lo=1, hi=1000,
                                     increasing=True,
                                     must="increasing epoch counts in {lo}..{hi}, e.g. 1,3,9")
    eta: int = setting(3, "early stopping: a trial goes on only within the best 1/eta at "
                       "each rung", lo=2, hi=100)

    def __post_init__(self) -> None:
        check_declared(self, "search.")
        if self.population == 1:  # NSGA-II breeds pairs
            raise UserError("search.population=1 is too small; use 0 (automatic) or at least 2")
        if self.storage is not None and "://" not in self.storage:
            # not echoed: a malformed URL may still hold a password
            raise UserError(
                "search.storage is not a database URL "
                "(e.g. postgresql+psycopg2://user@host:5432/optuna or sqlite:///path/optuna.db)"
            )
        no_password("search.storage", self.storage, "PGPASSWORD")


@dataclass(frozen=True)
class ResourcesConfig:
    """What each trial is given on the Ray cluster."""

    cpus: float = setting(1.0, "CPUs per trial; also the trial's torch thread count",
                          lo=0.01, hi=1024)
    gpus: float = setting(0.0, "GPUs per trial; fractions share a GPU", lo=0.0, hi=64)
    device: str = setting("auto", "where trials compute and time; auto: cuda when the trial "
                          "was given a GPU, else cpu", choices=DEVICES)

    def __post_init__(self) -> None:
        check_declared(self, "resources.")

    def trial_device(self) -> str:
        """The device type every trial computes and times on: "cuda" or "cpu"."""
        return "cuda" if self.device == "cuda" or (self.device == "auto" and self.gpus > 0) \
            else "cpu"


@dataclass(frozen=True)
class MeasureConfig:
    """How latency and accuracy are measured (sweeper.measure)."""

    batch_sizes: tuple[int, ...] = setting(
        (1, 64), "batch sizes latency is timed at", lo=1, hi=65_536,
        must="a non-empty list of integers in [{lo}, {hi}]")
    # floors: a "measurement" of one cold call is not one
    warmup: int = setting(5, "calls of each model before timing", lo=1, hi=10_000)
    repeats: int = setting(30, "model/baseline timing pairs per round; rounds repeat until "
                           "the interval fits", lo=5, hi=100_000)
    max_seconds: float = setting(5.0, "time cap of the timing pairs at each batch size",
                                 lo=0.0, hi=3600.0)
    target_halfwidth: float = setting(0.03, "stop timing when the latency ratio's 95% "
                                      "interval is within +- this fraction of it",
                                      lo=0.001, hi=1.0)
    quiet: bool = setting(True, "while a trial times latency, the other trials on its node "
                          "pause (sweeper.core.node_lock)")
    eval_batch_size: int = setting(256, "batch size of accuracy evaluation", lo=1, hi=65_536)
    runtime: str = setting("torch", "where latency is measured: torch (eager) or onnxruntime",
                           choices=RUNTIMES)

    def __post_init__(self) -> None:
        check_declared(self, "measure.")


@dataclass(frozen=True)
class RayConfig:
    """The Ray cluster the trials run on."""

    address: str | None = setting(None, "attach to a running cluster: HOST:PORT, "
                                  "ray://HOST:PORT or auto (none: start Ray here)")
    dashboard_host: str = setting("127.0.0.1", "address the Ray dashboard listens on "
                                  "(dashboard=true); keep it private")
    dashboard_port: int = setting(8265, "port of the Ray dashboard", lo=1, hi=65_535)

    def __post_init__(self) -> None:
        check_declared(self, "ray.")
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
    """A sweep: the search space, where its results go, and one section per concern."""

    space: str = setting("nystrom_m", "search space: a name `python -m sweeper spaces` lists, "
                         "or a YAML file")
    output_dir: str = setting("outputs", "folder of the sweeps, and of the default MLflow "
                              "store and baseline cache")
    cache_dir: str | None = setting(None, "baseline cache, safe to share between sweeps "
                                    "(none: <output_dir>/cache)")
    tracking_uri: str | None = setting(None, "MLflow tracking store, e.g. http://HOST:5000 "
                                       "(none: $MLFLOW_TRACKING_URI, else sqlite under "
                                       "output_dir)")
    experiment: str = setting("sweeper", "MLflow experiment the sweep's runs go into")
    dashboard: bool = setting(False, "start the Ray dashboard (ray.dashboard_host:"
                              "ray.dashboard_port) and print its URL")
    quiet: bool = setting(False, "print only the result, no progress")
    # infeasible trials are kept in MLflow with a tag; Optuna's constraints steer away
    max_accuracy_drop: float | None = setting(
        None, "trials losing more validation accuracy points than this are infeasible, never "
        "on the front (none: no limit)", lo=0.0, hi=100.0)
    registry: bool = setting(True, "register the front in MLflow's Model Registry at the end "
                             "(an ONNX export per member)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        check_declared(self)
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
