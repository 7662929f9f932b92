"""The ``flwr`` CLI against a federation's SuperLink: its connection and its commands.

The federation's CLI has its own ``FLWR_HOME`` (the user's ``~/.flwr`` is never
touched), whose ``config.toml`` names one SuperLink connection, :data:`CONNECTION`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from fedpit.deploy.credentials import TlsFiles
from fedpit.deploy.errors import DeployError
from fedpit.deploy.processes import flower_bin

CONNECTION = "fedpit-local"
"""Name of the SuperLink connection written to the federation's private ``FLWR_HOME``."""


class FlwrCli:
    """``flwr`` CLI commands against a federation's SuperLink (a mixin).

    :class:`~fedpit.deploy.federation.LocalFederation` provides the attributes below and
    :meth:`env`.
    """

    work_dir: Path
    cli_home: Path
    address: str
    tls: TlsFiles | None

    def env(self, flwr_home: Path) -> dict[str, str]:
        """The environment of a Flower process (defined by the federation)."""
        raise NotImplementedError

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run one ``flwr`` CLI command against this federation's SuperLink."""
        return subprocess.run(
            [flower_bin("flwr"), *args],
            capture_output=True,
            text=True,
            env=self.env(self.cli_home),
            cwd=self.work_dir,
            timeout=timeout,
            check=False,
        )

    def flwr_json(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        """Run a ``flwr`` command with ``--format json`` and parse its answer."""
        done = self.flwr(*args, "--format", "json", timeout=timeout)
        start = done.stdout.find("{")
        try:
            answer = json.loads(done.stdout[start:]) if start >= 0 else {}
        except json.JSONDecodeError:
            answer = {}
        if done.returncode != 0 or not answer.get("success"):
            raise DeployError(
                f"flwr {' '.join(args)} failed (exit {done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-2000:]}"
            )
        return answer

    def write_cli_connection(self) -> Path:
        """Write the ``flwr`` CLI's connection ``[superlink.fedpit-local]``."""
        import tomli_w

        assert self.tls is not None
        self.cli_home.mkdir(parents=True, exist_ok=True)
        doc = {
            "superlink": {
                "default": CONNECTION,
                CONNECTION: {
                    "address": self.address,
                    "root-certificates": str(Path(self.tls.ca_cert).resolve()),
                },
            }
        }
        path = self.cli_home / "config.toml"
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
        return path

    def register(self, public_key: Path, name: str | None = None) -> int:
        """Register a SuperNode's public key (``flwr supernode register``); its node id."""
        args = ["supernode", "register", str(public_key), CONNECTION]
        if name:
            args += ["--name", name]
        return int(self.flwr_json(*args)["node-id"])

    def list_nodes(self) -> list[dict[str, Any]]:
        """The SuperLink's nodes (``flwr supernode list``)."""
        return list(self.flwr_json("supernode", "list", CONNECTION)["nodes"])

    def run_status(self, run_id: int) -> dict[str, Any]:
        """The SuperLink's record of a run (``flwr ls --run-id``)."""
        runs = self.flwr_json("ls", CONNECTION, "--run-id", str(run_id))["runs"]
        return dict(runs[0])
