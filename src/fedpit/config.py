"""Run configuration: typed, validated dataclasses built once from flat dotted keys.

Every key has one default, here. The same flat keys (``fed.beta``, ``model.name`` …) are
used by ``pyproject.toml`` ``[tool.flwr.app.config]`` (kept equal to these defaults by a
test), by ``flwr run --run-config`` and by ``fedpit run --config FILE key=value``.
Below this module, components take plain typed arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpit.errors import ConfigError
from fedpit.synth.pipeline import SynthSettings

FEDERATED_METHODS = (
    "fedpit",
    "fedpit-v1",
    "fedavg",
    "fedavg-damped",
    "fedprox",
    "fedadam",
    "fedmit",
)
STANDALONE_METHODS = ("local", "local-selfgen", "centralized")
METHODS = FEDERATED_METHODS + STANDALONE_METHODS
PARTITIONS = ("natural", "iid", "dirichlet", "kmeans")
MIX_MODES = ("factors",)
AGGREGATIONS = ("mean", "trimmed-mean", "median", "krum", "multi-krum", "bulyan")
POISONS = ("none", "scale", "flip")
DP_MODES = ("off", "central-fixed", "client-fixed")
DP_METHODS = ("fedpit", "fedpit-v1", "fedavg", "fedavg-damped", "fedprox", "fedmit")
"""Methods whose server aggregates with FedAvg's maths, as Flower's DP accounting requires."""
BETA_METHODS = ("fedpit", "fedpit-v1", "fedavg-damped")
"""Methods whose upload depends on ``fed.beta``."""
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

Scalar = str | int | float | bool


@dataclass(frozen=True)
class ModelConfig:
    """The frozen base model."""

    name: str = "smollm2"
    template: str = "auto"
    max_length: int = 256
    device: str = "auto"
    dtype: str = "float32"


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split into clients and a held-out test set."""

    name: str = "auto"
    seed: int = 0
    partition: str = "natural"
    partition_column: str = ""
    num_clients: int = 3
    examples_per_client: int = 16
    test_size: int = 32
    dirichlet_alpha: float = 1.0
    num_clusters: int = 100
    non_members_per_client: int = 0


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter shape (Decision: alpha = 2·rank, dropout 0.05, q/v projections)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str = "q_proj,v_proj"

    @property
    def modules(self) -> list[str]:
        """Target module names as a list."""
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]


@dataclass(frozen=True)
class TrainConfig:
    """Local supervised fine-tuning."""

    lr: float = 2e-3
    lr_min: float = 0.0
    batch_size: int = 8
    micro_batch_size: int = 4
    local_epochs: int = 1
    centralized_epochs: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    threads: int = 0
    public_lr: float = 0.0
    """Learning rate of W_s on the synthetic data (0 = ``lr``), with the same cosine decay."""
    public_epochs: int = 0
    """Epochs of W_s on the synthetic data per round (0 = ``local-epochs``)."""


@dataclass(frozen=True)
class FedConfig:
    """Federation: rounds, sampling, mixing and the server optimiser."""

    rounds: int = 2
    clients_per_round: int = 0
    beta: float = 0.5
    mix: str = "factors"
    proximal_mu: float = 0.01
    server_lr: float = 0.001
    server_tau: float = 1e-3
    cpus_per_client: int = 1
    gpus_per_client: float = 0.0
    parallel_clients: int = 0
    min_clients: int = 1
    round_timeout: float = 0.0
    aggregation: str = "mean"
    """``mean`` (FedAvg weighted by n_k), or a robust aggregator of Flower's: ``trimmed-mean``
    (``fed.trim-fraction`` cut at each end), ``median``, ``krum``, ``multi-krum``, ``bulyan``
    (these two assume at most ``fed.malicious-clients``)."""
    trim_fraction: float = 0.2
    malicious_clients: int = 1
    norm_bound: float = 0.0
    """Cap each update's distance from the global model at this multiple of the round's
    median distance (0 = off)."""


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation during a run."""

    client_test_size: int = 8
    with_dp: bool = False
    """Ask for federated evaluation also when ``dp.mode`` is on (off by default: its reply
    carries an un-noised loss on the node's private data); nodes still apply their policy."""


@dataclass(frozen=True)
class AttackConfig:
    """Privacy auditing: canaries planted in one client's private data."""

    canaries: int = 0
    canary_client: int = 0
    poison: str = "none"
    """Robustness experiments in simulation: client ``attack.poison-client`` uploads its
    update ``scale``-d by ``attack.poison-factor`` or sign-``flip``-ped (a node refuses it)."""
    poison_client: int = 0
    poison_factor: float = 100.0


@dataclass(frozen=True)
class DPConfig:
    """Client-level differential privacy on the upload (see :mod:`fedpit.dp`)."""

    mode: str = "off"
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5
    max_epsilon: float = 0.0

    @property
    def enabled(self) -> bool:
        """Whether uploads are clipped and the aggregate noised."""
        return self.mode != "off"


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, parsed once from the flat keys."""

    method: str = "fedpit"
    seed: int = 0
    run_dir: str = ""
    arm: str = ""
    """A label naming the study arm a run belongs to (set by ``fedpit sweep``); it changes
    nothing in the run, and reports group runs by method, arm and β."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    synth: SynthSettings = field(default_factory=SynthSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    dp: DPConfig = field(default_factory=DPConfig)

    @property
    def uses_synthetic(self) -> bool:
        """Whether the method self-generates data."""
        return self.method in ("fedpit", "fedpit-v1", "fedmit", "local-selfgen")

    @property
    def is_federated(self) -> bool:
        """Whether the method runs under Flower."""
        return self.method in FEDERATED_METHODS


def _key(name: str) -> str:
    return name.replace("_", "-")


def _scalar_type(tp: Any) -> type:
    if isinstance(tp, str):
        tp = eval(tp, vars(typing), {})  # annotations are strings under __future__
    if isinstance(tp, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def default_flat() -> dict[str, Scalar]:
    """All keys with their default values, flat and dotted."""
    return to_flat(RunConfig())


def to_flat(cfg: RunConfig) -> dict[str, Scalar]:
    """Flatten a config to dotted keys (the inverse of :func:`from_flat`)."""
    flat: dict[str, Scalar] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                flat[f"{_key(f.name)}.{_key(sub.name)}"] = getattr(value, sub.name)
        else:
            flat[_key(f.name)] = value
    return flat


def _coerce(key: str, raw: Any, tp: type) -> Scalar:
    """Convert a TOML or command-line value to the field's type, or fail clearly."""
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "1", "yes"):
                return True
            if str(raw).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if tp is float:
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        return str(raw)
    except ValueError:
        raise ConfigError(f"{key} = {raw!r}: expected {tp.__name__}") from None


def from_flat(values: Mapping[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from flat dotted keys over the defaults.

    Unknown keys are errors (with the closest known key suggested), never ignored.
    """
    known = default_flat()
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown configuration key {key!r}{hint}")
    top_hints = _hints(RunConfig)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        tp = top_hints[f.name]
        if _is_section(tp):
            sub_hints = _hints(tp)
            sub_kwargs = {}
            for sub in dataclasses.fields(tp):
                key = f"{_key(f.name)}.{_key(sub.name)}"
                if key in values:
                    sub_kwargs[sub.name] = _coerce(
                        key, values[key], _scalar_type(sub_hints[sub.name])
                    )
            kwargs[f.name] = tp(**sub_kwargs)
        elif _key(f.name) in values:
            key = _key(f.name)
            kwargs[f.name] = _coerce(key, values[key], _scalar_type(tp))
    cfg = RunConfig(**kwargs)
    from fedpit.config_checks import validate  # imports this module: import when called

    validate(cfg)
    return cfg


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into flat dotted keys (nested tables are flattened)."""
    import tomllib

    p = Path(path)
    try:
        with p.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: invalid TOML: {err}") from None
    if "tool" in doc:  # a pyproject.toml: take its Flower app config
        doc = doc.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping):
                walk(key + ".", v)
            else:
                flat[key] = v

    walk("", doc)
    return flat


def parse_overrides(items: list[str]) -> dict[str, str]:
    """Parse ``key=value`` command-line items."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value, e.g. fed.beta=0.5")
        out[key.strip()] = value.strip().strip('"').strip("'")
    return out
