"""The run directory: where every run writes its configuration, metrics and adapters.

Layout::

    RUN_DIR/config.toml            resolved configuration (all keys)
    RUN_DIR/data.json              which data, clients and held-out test ids
    RUN_DIR/metrics.jsonl          server-side metrics, one JSON object per round
    RUN_DIR/failures.jsonl         every dropped client: round, node, kind, reason
    RUN_DIR/rounds/round-NNN/      global adapter after round NNN (PEFT format)
    RUN_DIR/global/                the final global adapter (PEFT format)
    RUN_DIR/summary.json           the run's summary
    RUN_DIR/server-state.safetensors  the server's resumable state (last completed round)
    RUN_DIR/clients/<id>/          each client's private record (never uploaded)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from fedpit import jsonio
from fedpit.config.load import from_flat, load_toml, to_flat
from fedpit.config.schema import RunConfig
from fedpit.errors import ConfigError


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        """Resolved configuration (TOML, flat keys)."""
        return self.root / "config.toml"

    @property
    def metrics(self) -> Path:
        """Server-side per-round metrics (JSONL)."""
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        """Run summary (JSON)."""
        return self.root / "summary.json"

    @property
    def data(self) -> Path:
        """Data provenance (JSON)."""
        return self.root / "data.json"

    @property
    def failures(self) -> Path:
        """Clients dropped from a round (failed, timed out, or rejected), JSONL."""
        return self.root / "failures.jsonl"

    @property
    def server_state(self) -> Path:
        """The server's resumable state after the last completed round."""
        return self.root / "server-state.safetensors"

    @property
    def final_adapter(self) -> Path:
        """The final global adapter."""
        return self.root / "global"

    def round_adapter(self, server_round: int) -> Path:
        """The global adapter after ``server_round``."""
        return self.root / "rounds" / f"round-{server_round:03d}"

    def client_dir(self, client_id: int | str) -> Path:
        """A client's private state directory (simulation)."""
        return self.root / "clients" / str(client_id)


def default_run_dir(method: str) -> Path:
    """``runs/<timestamp>-<method>`` under the current directory."""
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{method}"


def create_run_dir(cfg: RunConfig) -> RunDir:
    """Create the run directory and write the resolved configuration.

    An existing non-empty directory is refused: runs never overwrite each other.
    """
    root = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg.method)
    root = root.expanduser().resolve()
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"run-dir {root} exists and is not empty; choose another run-dir")
    root.mkdir(parents=True, exist_ok=True)
    rd = RunDir(root)
    flat = to_flat(cfg)
    flat["run-dir"] = str(root)
    write_atomic(rd.config, tomli_w.dumps(flat))
    return rd


def open_run_dir(path: str | Path) -> tuple[RunConfig, RunDir]:
    """An existing run directory and the configuration saved in it (for ``--resume``)."""
    root = Path(path).expanduser().resolve()
    rd = RunDir(root)
    if not rd.config.is_file():
        raise ConfigError(
            f"{root} is not a run directory (it has no config.toml); --resume takes the "
            "run-dir of an earlier `fedpit run`"
        )
    cfg = from_flat(load_toml(rd.config))
    return dataclasses.replace(cfg, run_dir=str(root)), rd


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename (no half-written files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_atomic(path, jsonio.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON record as a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(jsonio.dumps(record) + "\n")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``records``, one JSON object a line, atomically."""
    write_atomic(path, "".join(jsonio.dumps(r) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read every record of a JSONL file."""
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]
