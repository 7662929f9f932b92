"""The server's resumable state, written atomically after every completed round.

One safetensors file holds everything a resumed run needs: the global adapter, the
server optimiser's state (FedAdam's moments), and, as JSON in the file's metadata, the
last completed round, Python's ``random`` state (Flower samples nodes with it), the
elapsed time and the per-round metrics rows so far. It is written to a temporary file,
flushed to disk and renamed over the previous one, so a killed server leaves either the
old state or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from fedpit import jsonio
from fedpit.errors import FedPITError

GLOBAL = "global/"
OPTIMIZER = "optimizer/"
META_KEY = "fedpit-server-state"
VERSION = 1


@dataclass
class ServerState:
    """Everything after ``round`` completed rounds (round 0: before any training)."""

    round: int
    arrays: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    rng: list[Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


def rng_state() -> list[Any]:
    """Python's ``random`` state as JSON-compatible data."""
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_rng_state(state: list[Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


def save_server_state(path: Path, state: ServerState) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    tensors = {GLOBAL + k: np.ascontiguousarray(v) for k, v in state.arrays.items()}
    tensors.update({OPTIMIZER + k: np.ascontiguousarray(v) for k, v in state.optimizer.items()})
    meta = {
        "version": VERSION,
        "round": state.round,
        "rng": state.rng,
        "metrics": state.metrics,
        "elapsed_s": state.elapsed_s,
    }
    payload = save(tensors, metadata={META_KEY: jsonio.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_server_state(path: Path) -> ServerState | None:
    """Read the state at ``path``; ``None`` when the server never completed round 0."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="np") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
            meta = json.loads((fh.metadata() or {})[META_KEY])
    except (OSError, SafetensorError, ValueError, KeyError) as err:
        raise FedPITError(f"{path}: unreadable server state ({err})") from None
    if meta.get("version") != VERSION:
        raise FedPITError(
            f"{path}: server state version {meta.get('version')!r}; this FedPIT reads {VERSION}"
        )
    return ServerState(
        round=int(meta["round"]),
        arrays={k[len(GLOBAL) :]: v for k, v in tensors.items() if k.startswith(GLOBAL)},
        optimizer={k[len(OPTIMIZER) :]: v for k, v in tensors.items() if k.startswith(OPTIMIZER)},
        rng=meta.get("rng"),
        metrics=list(meta.get("metrics", [])),
        elapsed_s=float(meta.get("elapsed_s", 0.0)),
    )
