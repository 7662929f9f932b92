"""Conversions between FedPIT values and Flower records, with named keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flwr.app import ArrayRecord, ConfigRecord

from fedpit.adapters import State
from fedpit.config.load import from_flat, to_flat
from fedpit.config.schema import RunConfig
from fedpit.lm.fingerprint import COMPONENTS, BaseFingerprint

if TYPE_CHECKING:
    from flwr.app.typing import MetricRecordValues

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
CFG_PREFIX = "fedpit."
"""Run-config keys travel in the ConfigRecord under this prefix, apart from Flower's own
keys (``server-round``, ``proximal-mu``)."""
NUM_ROUNDS = "num-rounds"
RUN_DIR = "run-dir"
FINGERPRINT = "base-fingerprint"
"""The server's base-model fingerprint: ``base-fingerprint`` holds the combined digest,
``base-fingerprint.<component>`` each component (weights, tokenizer, template)."""


def metric_number(value: MetricRecordValues) -> float:
    """A scalar metric as a float; FedPIT's metrics are all scalars (a list is refused)."""
    if isinstance(value, list):
        raise TypeError(f"expected a number, got a list metric {value!r}")
    return float(value)


def state_to_record(state: State) -> ArrayRecord:
    """An adapter state as an ArrayRecord (keys unchanged)."""
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def record_to_state(record: ArrayRecord) -> State:
    """An ArrayRecord back to an adapter state."""
    return dict(record.to_torch_state_dict())


def config_to_record(cfg: RunConfig, run_dir: str, fingerprint: BaseFingerprint) -> ConfigRecord:
    """The run configuration for clients, plus the run directory and the base fingerprint."""
    values: dict[str, Any] = {CFG_PREFIX + k: v for k, v in to_flat(cfg).items()}
    values[CFG_PREFIX + RUN_DIR] = run_dir
    values[NUM_ROUNDS] = cfg.fed.rounds
    values[FINGERPRINT] = fingerprint.digest
    for component in COMPONENTS:
        values[f"{FINGERPRINT}.{component}"] = getattr(fingerprint, component)
    return ConfigRecord(values)


def record_to_fingerprint(record: Mapping[str, Any]) -> BaseFingerprint | None:
    """The server's base fingerprint from a received config (None when it sent none)."""
    keys = [f"{FINGERPRINT}.{c}" for c in COMPONENTS]
    if not all(k in record for k in keys):
        return None
    return BaseFingerprint(*(str(record[k]) for k in keys))


def record_to_config(record: Mapping[str, Any]) -> RunConfig:
    """Parse the run configuration a client received."""
    flat = {k[len(CFG_PREFIX) :]: v for k, v in record.items() if k.startswith(CFG_PREFIX)}
    return from_flat(flat)
