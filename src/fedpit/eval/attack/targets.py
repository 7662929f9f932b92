"""Which model to evaluate: the base, a run's global adapter of any round, a client's own.

A target string names it:

- ``base``: the base model alone (the floor every attack is compared against);
- ``global``: the run's final global adapter; ``round:N``: the global adapter after round N;
- ``client:ID``: client ID's personalised model (its local adapter W_l), or, for the
  standalone baselines, its own model;
- ``upload:ID``: what client ID last sent to the server (W_a for FedPIT) — the model an
  honest-but-curious server holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from fedpit.adapters import PUBLIC, get_state, set_state
from fedpit.config.load import from_flat, load_toml
from fedpit.config.schema import RunConfig
from fedpit.errors import ConfigError
from fedpit.lm.runtime import Runtime, get_runtime
from fedpit.runs.rundir import RunDir

BASE = "base"
GLOBAL = "global"
ADAPTER_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class Target:
    """A resolved evaluation target."""

    name: str
    adapter_dir: Path | None  # None: the base model


def run_config(run_dir: Path) -> RunConfig:
    """The configuration a run was made with (from its ``config.toml``)."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a FedPIT run directory (no config.toml)")
    return from_flat(load_toml(path))


def resolve_target(run_dir: Path, name: str) -> Target:
    """Map a target string to an adapter directory of the run, or fail clearly."""
    rd = RunDir(Path(run_dir))
    if name == BASE:
        return Target(name, None)
    if name == GLOBAL:
        path = rd.final_adapter
    elif name.startswith("round:"):
        path = rd.round_adapter(_int(name, "round:"))
    elif name.startswith("upload:"):
        path = rd.client_dir(_int(name, "upload:")) / "adapters" / "upload"
    elif name.startswith("client:"):
        client = rd.client_dir(_int(name, "client:")) / "adapters"
        path = client / "local" if (client / "local").exists() else client / "model"
    else:
        raise ConfigError(f"target {name!r}; allowed: base, global, round:N, client:ID, upload:ID")
    if not (path / ADAPTER_FILE).is_file():
        raise ConfigError(f"target {name!r}: no adapter at {path}")
    return Target(name, path)


def final_targets(run_dir: Path) -> list[str]:
    """The run's final model(s).

    ``global``, or, for a standalone baseline that has none (``local``: every client
    trains alone), each client's own model ``client:ID``.
    """
    rd = RunDir(Path(run_dir))
    if (rd.final_adapter / ADAPTER_FILE).is_file():
        return [GLOBAL]
    clients = rd.root / "clients"
    ids = sorted(
        int(p.name)
        for p in (clients.iterdir() if clients.is_dir() else [])
        if p.name.isdigit() and (p / "adapters" / "model" / ADAPTER_FILE).is_file()
    )
    # With neither, ``global`` stays the answer and resolving it says what is missing.
    return [f"client:{i}" for i in ids] or [GLOBAL]


def default_targets(run_dir: Path) -> list[str]:
    """What ``eval`` and ``attack`` look at unless told.

    The base model (the floor) and the run's final model(s) (:func:`final_targets`).
    """
    return [BASE, *final_targets(run_dir)]


def _int(name: str, prefix: str) -> int:
    try:
        return int(name[len(prefix) :])
    except ValueError:
        raise ConfigError(f"target {name!r}: expected {prefix}<integer>") from None


def activate(rt: Runtime, target: Target) -> None:
    """Load ``target`` into the runtime's ``public`` slot and make it active.

    The base model is the zero adapter (LoRA B = 0), so every target runs through the
    same code path.
    """
    if target.adapter_dir is None:
        state = {k: torch.zeros_like(v) for k, v in get_state(rt.model, PUBLIC).items()}
    else:
        state = load_file(str(target.adapter_dir / "adapter_model.safetensors"))
    set_state(rt.model, PUBLIC, state)
    rt.model.set_adapter(PUBLIC)


def load_runtime(run_dir: Path) -> tuple[RunConfig, Runtime]:
    """The run's configuration and a runtime with its base model and adapter shape."""
    cfg = run_config(run_dir)
    return cfg, get_runtime(cfg.model, cfg.lora)
