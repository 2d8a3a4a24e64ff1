"""Experiment configuration: presets, overrides and validation.

A configuration is a YAML preset (``stsep/presets/<name>.yaml`` or a path to
a YAML file) read into frozen dataclasses. ``--set key=value`` overrides take
dotted keys (``train.epochs=3``) and parse values as YAML scalars or lists.
An optional smoke mode shrinks any preset to a run of a few minutes on two
CPU cores. Every invalid key or value raises `ConfigError` with one line
that names the key, the value and what is allowed, so entry points can stop
before any Ray work starts.

The dataclasses are used inside the library; `ExperimentConfig.to_dict` gives
the plain dict that crosses the Ray boundary, and `config_from_dict` reads it
back on the other side.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Mapping, Sequence, Union

import yaml

__all__ = [
    "DATASETS",
    "OPTIMIZERS",
    "PRESETS",
    "SCHEDULERS",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "GridConfig",
    "ModelConfig",
    "ResourcesConfig",
    "S3Config",
    "TrackingConfig",
    "TrainConfig",
    "TuneConfig",
    "config_from_dict",
    "load_config",
    "parse_override",
    "resolve_tracking_uri",
]

logger = logging.getLogger(__name__)

PRESET_DIR: Final[Path] = Path(__file__).resolve().parent / "presets"
PRESETS: Final[tuple[str, ...]] = ("demo", "ucf101", "hmdb51", "ssv2")
DATASETS: Final[tuple[str, ...]] = ("demo", "ucf101", "hmdb51", "ssv2", "folder", "arrow", "speed", "manifest")
# Datasets whose videos come from `data.root`; the demo task finds its own clips.
DATASETS_NEEDING_ROOT: Final[frozenset[str]] = frozenset({"ucf101", "hmdb51", "ssv2", "folder", "arrow", "speed"})
OPTIMIZERS: Final[tuple[str, ...]] = ("sgd", "adamw")
SCHEDULERS: Final[tuple[str, ...]] = ("fifo", "asha")
SURROGATES: Final[tuple[str, ...]] = ("atan", "sigmoid")
RESET_MODES: Final[tuple[str, ...]] = ("hard", "soft")
FUSIONS: Final[tuple[str, ...]] = ("add", "gate")
AMP_DTYPES: Final[tuple[str, ...]] = ("auto", "bfloat16", "float16")
DEPTHS: Final[tuple[int, ...]] = (18, 34)

# Settings `--smoke` applies on top of any preset: a few minutes on two CPU cores.
SMOKE_OVERRIDES: Final[dict[str, Any]] = {
    "data.num_frames": 4,
    "data.crop_size": 32,
    "data.short_side": 36,
    "data.limit_per_class": 4,
    "data.num_clips": 1,
    "data.num_crops": 1,
    "data.decode_concurrency": 1,
    # Two smoke trials then reserve 3 of 4 CPUs, leaving one whole CPU for the
    # Ray Data shuffle tasks, which each reserve one (Ray 2.60).
    "data.decoder_cpus": 0.125,
    "model.depth": 18,
    "model.width": 0.0625,
    "train.epochs": 1,
    "train.global_batch_size": 4,
    "train.warmup_epochs": 0,
    "resources.num_workers": 1,
    "resources.cpus_per_worker": 1,
    "resources.use_gpu": False,
    "grid.variants": ["vanilla", "ns4", "stsep-s34-state"],
    "grid.seeds": [0],
    "grid.sweep": {},
    "tune.scheduler": "fifo",
    "tune.max_concurrent_trials": 2,
}


class ConfigError(ValueError):
    """An invalid configuration key or value; the message is one line."""


# --------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataConfig:
    """Clip source and sampling settings.

    Attributes:
        dataset: Dataset layout, one of `DATASETS`.
        root: Dataset root (local directory or ``s3://`` URI); optional for demo.
        split: Official split number (1..3 for UCF101 and HMDB51).
        manifest_path: Manifest Parquet file; default ``<storage_path>/manifests/<dataset>-split<split>.parquet``.
        num_frames: Clip length T in frames (time steps).
        crop_size: Side of the square crop in pixels (the model's resolution).
        short_side: Short side after resizing, before cropping, in pixels.
        limit_per_class: Keep at most this many videos per class and split.
        decode_concurrency: Decoder actors per split and trial.
        decoder_cpus: CPUs Ray reserves for each decoder actor (fractions allowed).
        max_unreadable_fraction: Fail when more than this fraction of videos is unreadable.
        num_clips: Clips per video for multi-view evaluation.
        num_crops: Crops per clip for multi-view evaluation.
        flip: Horizontal flip for training; None picks it per dataset.
    """

    dataset: str = "demo"
    root: str | None = None
    split: int = 1
    manifest_path: str | None = None
    num_frames: int = 8
    crop_size: int = 64
    short_side: int = 72
    limit_per_class: int | None = None
    decode_concurrency: int = 2
    decoder_cpus: float = 1.0
    max_unreadable_fraction: float = 0.1
    num_clips: int = 1
    num_crops: int = 1
    flip: bool | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and neuron settings shared by every variant of a grid.

    Attributes:
        depth: SEW-ResNet depth, 18 or 34.
        width: Channel width multiplier (1.0 = 64 channels in stage 1).
        tau: LIF membrane time constant.
        v_threshold: Firing threshold of the membrane potential.
        v_reset: Reset potential.
        surrogate: Surrogate gradient, ``atan`` or ``sigmoid``.
        surrogate_alpha: Shape parameter of the surrogate gradient.
        detach_reset: Detach the reset term from the graph.
        reset_mode: ``hard`` (to v_reset) or ``soft`` (subtract v_threshold).
        learnable_tau: Parametric LIF with a learnable time constant.
        stsep_ds: Spatial downsampling factor of the STSep temporal branch.
        stsep_dc: Channel reduction factor of the STSep temporal branch.
        stsep_lambda: Balance of the temporal branch in the fusion.
        learnable_lambda: Learn the balance instead of fixing it.
        fusion: ``add`` (spatial + lambda * temporal) or ``gate``.
    """

    depth: int = 18
    width: float = 0.25
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float = 0.0
    surrogate: str = "atan"
    surrogate_alpha: float = 2.0
    detach_reset: bool = True
    reset_mode: str = "hard"
    learnable_tau: bool = False
    stsep_ds: int = 2
    stsep_dc: int = 4
    stsep_lambda: float = 0.5
    learnable_lambda: bool = False
    fusion: str = "add"


@dataclass(frozen=True)
class TrainConfig:
    """Optimization settings of one training run.

    Attributes:
        epochs: Number of epochs.
        global_batch_size: Clips per optimizer step over all workers.
        optimizer: ``sgd`` or ``adamw``.
        lr: Peak learning rate, reached after the warm-up.
        momentum: SGD momentum (AdamW uses it as beta1).
        weight_decay: Decoupled for AdamW, L2 for SGD.
        warmup_epochs: Linear warm-up length in epochs, then cosine decay to zero.
        label_smoothing: Label smoothing of the cross-entropy loss.
        amp: Automatic mixed precision when a GPU is used.
        amp_dtype: ``auto`` (bfloat16 where the GPU supports it, else float16
            with loss scaling), ``bfloat16`` or ``float16``.
        channels_last: Channels-last memory format when a GPU is used.
        grad_clip_norm: Clip the gradient norm to this value; None disables it.
        log_every_steps: Rank 0 logs progress every this many steps.
    """

    epochs: int = 10
    global_batch_size: int = 8
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    amp: bool = True
    amp_dtype: str = "auto"
    channels_last: bool = True
    grad_clip_norm: float | None = None
    log_every_steps: int = 10


@dataclass(frozen=True)
class ResourcesConfig:
    """Resources of each trial.

    Attributes:
        num_workers: Ray Train workers per trial.
        cpus_per_worker: CPUs reserved by each worker.
        use_gpu: ``auto`` (when the cluster has GPUs), true or false.
    """

    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: Union[bool, str] = "auto"


@dataclass(frozen=True)
class GridConfig:
    """The ablation grid: variants x seeds x every swept setting.

    Attributes:
        variants: Variant names (``vanilla``, ``ns2``, ``stsep-s34-state``, ...);
            empty selects ``stsep.variants.DEFAULT_VARIANTS``.
        seeds: Random seeds.
        sweep: Dotted config key -> list of values, for example
            ``{"model.stsep_lambda": [0.25, 0.5]}``.
    """

    variants: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    sweep: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class TuneConfig:
    """Ray Tune settings of the grid.

    Attributes:
        scheduler: ``fifo`` (every trial trained fully) or ``asha``.
        max_concurrent_trials: Trials running at once; None lets the cluster decide.
        metric: Metric that ASHA and the best checkpoint follow.
        asha_grace_period: Epochs before ASHA may stop a trial.
        asha_reduction_factor: ASHA's reduction factor.
        trial_max_failures: Retries of a failed trial.
        worker_max_failures: Restarts of a trial's failed worker group.
    """

    scheduler: str = "fifo"
    max_concurrent_trials: int | None = None
    metric: str = "val_top1"
    asha_grace_period: int = 1
    asha_reduction_factor: int = 2
    trial_max_failures: int = 1
    worker_max_failures: int = 2


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking settings.

    Attributes:
        uri: Tracking URI; None takes ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``.
        experiment: Experiment name; None takes ``stsep-<name>``.
        artifact_location: Artifact root of a newly created experiment, such as
            ``s3://bucket/mlflow``; None leaves it to the tracking store. MLflow
            cannot move the artifacts of an existing experiment.
    """

    uri: str | None = None
    experiment: str | None = None
    artifact_location: str | None = None


@dataclass(frozen=True)
class S3Config:
    """The S3 store behind every ``s3://`` path, on top of the AWS environment.

    A value set here replaces what the AWS variables give (see
    `stsep.storage.S3Settings.from_env`); null keeps them. Credentials never
    go here: every process takes them from the standard AWS chain.

    Attributes:
        endpoint_url: Endpoint of an S3-compatible store, such as ``http://minio:9000``.
        region: Region name.
        addressing_style: ``auto``, ``path`` (most S3-compatible stores) or ``virtual``.
        profile: Named profile of the shared AWS config files.
    """

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str | None = None
    profile: str | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """A complete, validated experiment configuration.

    Attributes:
        name: Name of the ablation (preset name by default).
        storage_path: Local directory or ``s3://`` URI for manifests, checkpoints and Tune state.
    """

    name: str = "demo"
    storage_path: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    s3: S3Config = field(default_factory=S3Config)

    def s3_settings(self) -> Any:
        """Return the `stsep.storage.S3Settings` of the ``s3`` section on top of the environment."""
        from stsep.storage import S3Settings

        return S3Settings.from_config(dataclasses.asdict(self.s3))

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain nested dicts and lists (YAML-safe)."""
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        """Return the configuration as a YAML document."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: Mapping[str, Any]) -> "ExperimentConfig":
        """Return a validated copy with dotted-key overrides applied."""
        raw = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(raw, key, value)
        return config_from_dict(raw, resolve_paths=False)

    @property
    def manifest_path(self) -> str:
        """Manifest location: ``data.manifest_path`` or one cached on the storage path."""
        if self.data.manifest_path:
            return self.data.manifest_path
        file_name = f"{self.data.dataset}-split{self.data.split}.parquet"
        return _join(self.storage_path, "manifests", file_name)


SECTIONS: Final[dict[str, type]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "resources": ResourcesConfig,
    "grid": GridConfig,
    "tune": TuneConfig,
    "tracking": TrackingConfig,
    "s3": S3Config,
}


# ---------------------------------------------------------------------- loading


def load_config(
    preset: str,
    *,
    overrides: Sequence[str] = (),
    smoke: bool = False,
) -> ExperimentConfig:
    """Load a preset, apply smoke settings and ``key=value`` overrides, and validate.

    Args:
        preset: Preset name (one of `PRESETS`) or path to a YAML file.
        overrides: ``dotted.key=value`` strings, applied after the smoke settings.
        smoke: Shrink the run to a few minutes on two CPU cores.

    Returns:
        The validated configuration, with the storage path and a local
        tracking URI made absolute.

    Raises:
        ConfigError: On an unknown preset, key or an invalid value.
    """
    raw = _read_preset(preset)
    if smoke:
        for key, value in SMOKE_OVERRIDES.items():
            _set_dotted(raw, key, copy.deepcopy(value))
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    return config_from_dict(raw)


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``key=value`` and parse the value as a YAML scalar or list.

    Raises:
        ConfigError: When the item has no ``=`` or the value is not valid YAML.
    """
    key, separator, text = item.partition("=")
    key = key.strip()
    if not separator or not key:
        raise ConfigError(f"invalid override {item!r}: expected dotted.key=value, for example train.epochs=3")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        problem = str(error).splitlines()[0]
        raise ConfigError(f"invalid value {text!r} for {key}: not a YAML scalar or list ({problem})") from None
    return key, value


def config_from_dict(raw: Mapping[str, Any], *, resolve_paths: bool = True) -> ExperimentConfig:
    """Build a validated `ExperimentConfig` from nested plain dicts.

    Args:
        raw: Nested mapping as produced by `ExperimentConfig.to_dict` or a preset.
        resolve_paths: Make the storage path and a local tracking URI absolute
            and check that a local dataset root exists.

    Raises:
        ConfigError: On an unknown key or an invalid value.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"invalid config: expected a mapping of sections, got {type(raw).__name__}")
    allowed = ["name", "storage_path", *SECTIONS]
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"unknown config key {key!r}; allowed keys: {', '.join(allowed)}")

    sections = {name: _build_section(name, cls, raw.get(name)) for name, cls in SECTIONS.items()}
    name = _coerce("name", raw.get("name", "demo"), str)
    storage_path = _coerce("storage_path", raw.get("storage_path", "runs"), str)
    if not sections["grid"].variants:
        from stsep.variants import DEFAULT_VARIANTS

        sections["grid"] = dataclasses.replace(sections["grid"], variants=tuple(DEFAULT_VARIANTS))
    config = ExperimentConfig(name=name, storage_path=storage_path, **sections)

    _validate(config)
    if resolve_paths:
        config = _resolve_paths(config)
    return config


def resolve_tracking_uri(uri: str | None) -> str:
    """Resolve a tracking URI: explicit value, else ``MLFLOW_TRACKING_URI``, else local SQLite.

    A ``sqlite:///relative.db`` or a plain path is made absolute against the
    working directory, so every Ray worker writes to the same store.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        path = str(Path(path).expanduser().resolve())
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # An absolute path gives four slashes: sqlite:////abs/mlflow.db.
        return f"sqlite:///{path}"
    if uri.startswith("file:"):
        return uri
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


# ------------------------------------------------------------------- internals


def _read_preset(preset: str) -> dict[str, Any]:
    if preset in PRESETS:
        path = PRESET_DIR / f"{preset}.yaml"
    elif preset.endswith((".yaml", ".yml")):
        path = Path(preset)
    else:
        raise ConfigError(
            f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)} or a path to a .yaml file"
        )
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must contain a mapping of sections")
    raw.setdefault("name", path.stem)
    return raw


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``key = "a.b.c"``; keys under grid.sweep keep their dots."""
    parts = key.split(".")
    if parts[:2] == ["grid", "sweep"] and len(parts) > 2:
        parts = ["grid", "sweep", ".".join(parts[2:])]
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"invalid override {key}: {prefix} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build_section(name: str, cls: type, raw: Any) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"invalid value {raw!r} for {name}: expected a mapping of {cls.__name__} keys")
    hints = typing.get_type_hints(cls)
    allowed = [item.name for item in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(f"unknown config key {name}.{key}; allowed keys in {name}: {', '.join(allowed)}")
        if name == "grid" and key == "sweep":
            values[key] = _coerce_sweep(value)
        else:
            values[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**values)


def _coerce_sweep(value: Any) -> dict[str, tuple[Any, ...]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"invalid value {value!r} for grid.sweep: expected a mapping of dotted key -> list of values")
    sweep = {}
    for key, values in value.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"invalid value {values!r} for grid.sweep.{key}: expected a non-empty list of values")
        sweep[str(key)] = tuple(values)
    return sweep


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the type hint of `key`, converting ints to floats and lists to tuples."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError as error:
                errors.append(error)
        allowed = " or ".join(_type_name(option) for option in options)
        raise ConfigError(f"invalid value {value!r} for {key}: expected {allowed}")
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"invalid value {value!r} for {key}: expected a list of {_type_name(item_hint)}")
        return tuple(_coerce(key, item, item_hint) for item in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"invalid value {value!r} for {key}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"invalid value {value!r} for {key}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"invalid value {value!r} for {key}: expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"invalid value {value!r} for {key}: expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"invalid value {value!r} for {key}: expected a non-empty string")
        return value
    raise TypeError(f"config field {key} has an unsupported type {hint!r}")


def _type_name(hint: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return names.get(hint, str(hint))


def _check(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"invalid value {value!r} for {key}: {allowed}")


def _validate(config: ExperimentConfig) -> None:
    """Check ranges and choices that the types alone do not capture."""
    data, model, train = config.data, config.model, config.train
    resources, grid, tune = config.resources, config.grid, config.tune

    _check(data.dataset in DATASETS, "data.dataset", data.dataset, f"allowed: {', '.join(DATASETS)}")
    _check(data.split >= 1, "data.split", data.split, "expected a split number >= 1")
    if data.dataset in ("ucf101", "hmdb51"):
        _check(data.split <= 3, "data.split", data.split, "UCF101 and HMDB51 have splits 1, 2 and 3")
    if data.dataset in DATASETS_NEEDING_ROOT:
        _check(data.root is not None, "data.root", data.root, f"dataset {data.dataset} needs a root directory or s3:// URI")
    if data.dataset == "manifest":
        _check(data.manifest_path is not None, "data.manifest_path", None, "dataset manifest needs data.manifest_path")
    _check(data.num_frames >= 1, "data.num_frames", data.num_frames, "expected at least 1 frame")
    _check(data.crop_size >= 16, "data.crop_size", data.crop_size, "expected at least 16 pixels")
    _check(data.short_side >= data.crop_size, "data.short_side", data.short_side, f"expected >= data.crop_size ({data.crop_size})")
    if data.limit_per_class is not None:
        _check(data.limit_per_class >= 1, "data.limit_per_class", data.limit_per_class, "expected >= 1 or null")
    _check(data.decode_concurrency >= 1, "data.decode_concurrency", data.decode_concurrency, "expected >= 1")
    _check(data.decoder_cpus > 0, "data.decoder_cpus", data.decoder_cpus, "expected a CPU count > 0")
    _check(0.0 <= data.max_unreadable_fraction <= 1.0, "data.max_unreadable_fraction", data.max_unreadable_fraction, "expected a fraction in [0, 1]")
    _check(data.num_clips >= 1, "data.num_clips", data.num_clips, "expected >= 1")
    _check(data.num_crops in (1, 3), "data.num_crops", data.num_crops, "expected 1 (centre) or 3 (left, centre, right)")

    _check(model.depth in DEPTHS, "model.depth", model.depth, f"allowed: {', '.join(map(str, DEPTHS))}")
    _check(model.width > 0, "model.width", model.width, "expected a multiplier > 0")
    _check(model.tau > 1.0, "model.tau", model.tau, "expected a time constant > 1")
    _check(model.v_threshold > model.v_reset, "model.v_threshold", model.v_threshold, f"expected > model.v_reset ({model.v_reset})")
    _check(model.surrogate in SURROGATES, "model.surrogate", model.surrogate, f"allowed: {', '.join(SURROGATES)}")
    _check(model.surrogate_alpha > 0, "model.surrogate_alpha", model.surrogate_alpha, "expected > 0")
    _check(model.reset_mode in RESET_MODES, "model.reset_mode", model.reset_mode, f"allowed: {', '.join(RESET_MODES)}")
    _check(model.stsep_ds >= 1, "model.stsep_ds", model.stsep_ds, "expected >= 1")
    _check(model.stsep_dc >= 1, "model.stsep_dc", model.stsep_dc, "expected >= 1")
    _check(model.fusion in FUSIONS, "model.fusion", model.fusion, f"allowed: {', '.join(FUSIONS)}")

    _check(train.epochs >= 1, "train.epochs", train.epochs, "expected at least 1 epoch")
    _check(train.global_batch_size >= 1, "train.global_batch_size", train.global_batch_size, "expected >= 1")
    _check(train.optimizer in OPTIMIZERS, "train.optimizer", train.optimizer, f"allowed: {', '.join(OPTIMIZERS)}")
    _check(train.lr > 0, "train.lr", train.lr, "expected a learning rate > 0")
    _check(0.0 <= train.momentum < 1.0, "train.momentum", train.momentum, "expected a value in [0, 1)")
    _check(train.weight_decay >= 0, "train.weight_decay", train.weight_decay, "expected >= 0")
    _check(0 <= train.warmup_epochs < train.epochs or train.warmup_epochs == 0, "train.warmup_epochs", train.warmup_epochs,
           f"expected >= 0 and < train.epochs ({train.epochs})")
    _check(0.0 <= train.label_smoothing < 1.0, "train.label_smoothing", train.label_smoothing, "expected a value in [0, 1)")
    if train.grad_clip_norm is not None:
        _check(train.grad_clip_norm > 0, "train.grad_clip_norm", train.grad_clip_norm, "expected > 0 or null")
    _check(train.amp_dtype in AMP_DTYPES, "train.amp_dtype", train.amp_dtype, f"allowed: {', '.join(AMP_DTYPES)}")
    _check(train.log_every_steps >= 1, "train.log_every_steps", train.log_every_steps, "expected >= 1")

    _check(resources.num_workers >= 1, "resources.num_workers", resources.num_workers, "expected at least 1 worker")
    _check(resources.cpus_per_worker >= 1, "resources.cpus_per_worker", resources.cpus_per_worker, "expected at least 1 CPU")
    _check(resources.use_gpu in (True, False, "auto"), "resources.use_gpu", resources.use_gpu, "allowed: auto, true, false")
    _check(train.global_batch_size % resources.num_workers == 0, "train.global_batch_size", train.global_batch_size,
           f"expected a multiple of resources.num_workers ({resources.num_workers})")

    _validate_variants(grid.variants)
    _check(len(grid.seeds) >= 1, "grid.seeds", list(grid.seeds), "expected at least one seed")
    _check(len(set(grid.seeds)) == len(grid.seeds), "grid.seeds", list(grid.seeds), "expected distinct seeds")
    _check(all(seed >= 0 for seed in grid.seeds), "grid.seeds", list(grid.seeds), "expected seeds >= 0")
    for key, values in grid.sweep.items():
        _validate_sweep_key(config, key, values)

    _check(tune.scheduler in SCHEDULERS, "tune.scheduler", tune.scheduler, f"allowed: {', '.join(SCHEDULERS)}")
    if tune.max_concurrent_trials is not None:
        _check(tune.max_concurrent_trials >= 1, "tune.max_concurrent_trials", tune.max_concurrent_trials, "expected >= 1 or null")
    _check(tune.metric in ("val_top1", "val_top5", "val_loss"), "tune.metric", tune.metric, "allowed: val_top1, val_top5, val_loss")
    _check(tune.asha_grace_period >= 1, "tune.asha_grace_period", tune.asha_grace_period, "expected >= 1 epoch")
    _check(tune.asha_reduction_factor >= 2, "tune.asha_reduction_factor", tune.asha_reduction_factor, "expected >= 2")
    _check(tune.trial_max_failures >= 0, "tune.trial_max_failures", tune.trial_max_failures, "expected >= 0")
    _check(tune.worker_max_failures >= 0, "tune.worker_max_failures", tune.worker_max_failures, "expected >= 0")
    _validate_s3(config.s3)


def _validate_variants(variants: tuple[str, ...]) -> None:
    from stsep.variants import parse_variant

    for name in variants:
        try:
            parse_variant(name)
        except ValueError as error:
            reason = str(error).splitlines()[0] if str(error) else "malformed variant name"
            raise ConfigError(f"invalid value {name!r} for grid.variants: {reason}") from None
    _check(len(set(variants)) == len(variants), "grid.variants", list(variants), "expected distinct variant names")


def _validate_s3(s3: S3Config) -> None:
    from stsep.storage import ADDRESSING_STYLES, S3Settings

    if s3.addressing_style is not None:
        _check(s3.addressing_style in ADDRESSING_STYLES, "s3.addressing_style", s3.addressing_style,
               f"allowed: {', '.join(ADDRESSING_STYLES)}")
    # Validate the section alone, so an odd AWS variable does not reject the config.
    try:
        S3Settings(**{key: value for key, value in dataclasses.asdict(s3).items() if value is not None})
    except ValueError as error:
        raise ConfigError(f"invalid s3 section: {error}") from None


def _validate_sweep_key(config: ExperimentConfig, key: str, values: tuple[Any, ...]) -> None:
    section, _, name = key.partition(".")
    forbidden = {"grid", "tune", "tracking", "s3"}
    if section in forbidden or section not in SECTIONS or not name:
        raise ConfigError(
            f"invalid key {key!r} in grid.sweep: expected a dotted key in data, model, train or resources"
        )
    for value in values:
        # Each swept value must itself make a valid configuration.
        raw = config.to_dict()
        raw["grid"]["sweep"] = {}
        _set_dotted(raw, key, value)
        try:
            config_from_dict(raw, resolve_paths=False)
        except ConfigError as error:
            raise ConfigError(f"invalid value in grid.sweep.{key}: {error}") from None


def _resolve_paths(config: ExperimentConfig) -> ExperimentConfig:
    storage_path = config.storage_path
    if "://" not in storage_path:
        storage_path = str(Path(storage_path).expanduser().resolve())
    data = config.data
    if data.root is not None and "://" not in data.root:
        root = Path(data.root).expanduser()
        if not root.exists():
            raise ConfigError(f"invalid value {data.root!r} for data.root: directory not found")
        data = dataclasses.replace(data, root=str(root.resolve()))
    if data.manifest_path is not None and "://" not in data.manifest_path:
        manifest = Path(data.manifest_path).expanduser().resolve()
        if data.dataset == "manifest" and not manifest.is_file():
            raise ConfigError(f"invalid value {data.manifest_path!r} for data.manifest_path: file not found")
        data = dataclasses.replace(data, manifest_path=str(manifest))
    artifact_location = config.tracking.artifact_location
    if artifact_location is not None and "://" not in artifact_location:
        artifact_location = Path(artifact_location).expanduser().resolve().as_uri()
    tracking = dataclasses.replace(
        config.tracking,
        uri=resolve_tracking_uri(config.tracking.uri),
        artifact_location=artifact_location,
        experiment=config.tracking.experiment or f"stsep-{config.name}",
    )
    return dataclasses.replace(config, storage_path=storage_path, data=data, tracking=tracking)


def _join(base: str, *parts: str) -> str:
    if "://" in base:
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def _to_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    return value
