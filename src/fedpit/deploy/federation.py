"""A SuperLink (TLS + SuperNode authentication) and SuperNodes on one machine.

:class:`LocalFederation` starts a ``flower-superlink`` (a single HTTPS port serving the
Fleet, Control and Runtime APIs), registers and starts one ``flower-supernode`` per node,
submits a run with ``flwr run`` and waits for its end, then ends every process it
started and everything they started.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fedpit.deploy.credentials import TlsFiles, make_node_keys
from fedpit.deploy.errors import DeployError
from fedpit.deploy.flwr_cli import CONNECTION, FlwrCli
from fedpit.deploy.nodes import NodeSpec, find_app_dir
from fedpit.deploy.processes import (
    Started,
    _alive,
    _signal,
    descendants,
    flower_bin,
    free_port,
    https_open,
)


@dataclass(frozen=True)
class RunResult:
    """How a submitted run ended.

    Attributes:
        run_id: Flower's run id.
        status: Flower's status, e.g. ``finished:completed`` or ``finished:failed``.
        details: Flower's status details (the exception of a failed ServerApp).
    """

    run_id: int
    status: str
    details: str

    @property
    def ok(self) -> bool:
        """Whether the ServerApp completed."""
        return self.status == "finished:completed"


class LocalFederation(FlwrCli):
    """A SuperLink (TLS + SuperNode authentication) and SuperNodes on one machine.

    Every process gets its own ``FLWR_HOME`` under ``work_dir`` (so the user's
    ``~/.flwr`` is never touched), a log file under ``work_dir/logs`` and a port chosen
    free at runtime. ``stop()`` (also on leaving a ``with`` block) ends them all and every
    process they started. Its ``flwr`` CLI commands come from :class:`FlwrCli`.

    Args:
        work_dir: Where certificates, keys, logs and Flower homes go.
        app_dir: The Flower app to run (FedPIT's project directory).
        host: The loopback address to bind and connect to.
        echo: Where progress lines go (``None``: nowhere).
    """

    def __init__(
        self,
        work_dir: str | Path,
        app_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        echo: IO[str] | None = sys.stdout,
    ) -> None:
        self.work_dir = Path(work_dir).expanduser().resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.app_dir = Path(app_dir).resolve() if app_dir else find_app_dir()
        self.host = host
        self.echo = echo
        self.logs = self.work_dir / "logs"
        self.cli_home = self.work_dir / "cli-home"
        self.processes: list[Started] = []
        self.superlink: Started | None = None
        self.address = ""
        self.tls: TlsFiles | None = None

    # -- plumbing

    def say(self, text: str) -> None:
        """Print a progress line."""
        if self.echo is not None:
            print(f"[federation] {text}", file=self.echo, flush=True)

    def env(self, flwr_home: Path) -> dict[str, str]:
        """The environment of a Flower process: this venv first on ``PATH``, offline."""
        env = dict(os.environ)
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env["FLWR_HOME"] = str(flwr_home)
        # The app's dependencies are this environment's; Flower would otherwise create a
        # fresh uv environment per run (and download PyTorch into it).
        env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
        env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
        env["PYTHONUNBUFFERED"] = "1"
        for var in ("NO_PROXY", "no_proxy"):  # loopback traffic must not go to a proxy
            env[var] = ",".join(filter(None, [env.get(var, ""), self.host, "localhost"]))
        return env

    def start(self, name: str, command: list[str], flwr_home: Path) -> Started:
        """Start ``command`` in its own session, logging to ``logs/<name>.log``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        flwr_home.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        log_file = log_path.open("wb")
        log_file.write(("$ " + shlex.join(command) + "\n").encode())
        log_file.flush()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=self.env(flwr_home),
            cwd=self.work_dir,
            start_new_session=True,
        )
        started = Started(name, proc, log_path, log_file)
        self.processes.append(started)
        return started

    # -- SuperLink

    def start_superlink(self, tls: TlsFiles, timeout: float = 120.0) -> None:
        """Start ``flower-superlink`` with TLS and SuperNode authentication; wait for it.

        Also writes the CLI's SuperLink connection (address + root certificate) to the
        federation's own ``FLWR_HOME/config.toml``.
        """
        self.tls = tls
        port = free_port(self.host)
        self.address = f"{self.host}:{port}"
        command = [
            flower_bin("flower-superlink"),
            "--ssl-ca-certfile", str(tls.ca_cert),
            "--ssl-certfile", str(tls.server_cert),
            "--ssl-keyfile", str(tls.server_key),
            "--enable-supernode-auth",
            "--host", self.host,
            "--port", str(port),
            "--disable-runtime-dependency-installation",
        ]  # fmt: skip
        self.superlink = self.start("superlink", command, self.work_dir / "superlink-home")
        self.write_cli_connection()
        self.say(f"SuperLink (TLS, SuperNode authentication) on {self.address}")
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        """Poll the SuperLink's ``/health`` over TLS (verifying its certificate)."""
        assert self.superlink is not None and self.tls is not None
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.superlink.proc.poll() is not None:
                raise DeployError(
                    f"flower-superlink exited with {self.superlink.proc.returncode}:\n"
                    + self.superlink.tail()
                )
            try:
                with https_open(f"https://{self.address}/health", context, 5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise DeployError(f"the SuperLink did not become ready in {timeout:.0f} s")

    # -- SuperNodes

    def start_supernode(
        self, name: str, node: NodeSpec, private_key: Path | None, trust_ca: bool = True
    ) -> Started:
        """Start ``flower-supernode`` for ``node`` (connecting over TLS).

        Args:
            name: Process and log name.
            node: Its data, state directory and client id (node configuration).
            private_key: Its authentication key (``None``: start without one).
            trust_ca: Pass the CA certificate as ``--root-certificates``.
        """
        node.state_dir.mkdir(parents=True, exist_ok=True)
        command = [
            flower_bin("flower-supernode"),
            "--superlink", self.address,
            "--node-config", node.node_config(),
            "--host", self.host,
            "--port", str(free_port(self.host)),  # its local Runtime API (ClientApp I/O)
        ]  # fmt: skip
        if trust_ca:
            assert self.tls is not None
            command += ["--root-certificates", str(self.tls.ca_cert)]
        if private_key is not None:
            command += ["--auth-supernode-private-key", str(private_key)]
        return self.start(name, command, self.work_dir / "homes" / name)

    def wait_online(
        self, node_ids: Iterable[int], nodes: Sequence[Started], timeout: float
    ) -> None:
        """Wait until every id in ``node_ids`` is online; fail early if a node exits."""
        wanted = {str(i) for i in node_ids}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for started in nodes:
                if started.proc.poll() is not None:
                    raise DeployError(
                        f"{started.name} exited with {started.proc.returncode}:\n" + started.tail()
                    )
            online = {n["node-id"] for n in self.list_nodes() if n["status"] == "online"}
            if wanted <= online:
                return
            time.sleep(1.0)
        raise DeployError(f"SuperNodes not online after {timeout:.0f} s")

    def up(self, nodes: Sequence[NodeSpec], tls: TlsFiles, timeout: float = 180.0) -> list[int]:
        """Start the SuperLink, register one key pair per node, start the SuperNodes.

        Each node's key pair is created under ``work_dir/keys`` (``node-<client id>``);
        only its public half is registered. Returns the SuperLink's node ids, once every
        node is online.
        """
        self.start_superlink(tls, timeout)
        ids, started = [], []
        for node in nodes:
            keys = make_node_keys(self.work_dir / "keys", f"node-{node.client_id}")
            ids.append(self.register(keys.public_key))
            started.append(
                self.start_supernode(f"supernode-{node.client_id}", node, keys.private_key)
            )
            self.say(f"SuperNode {ids[-1]} (client {node.client_id}): {node.node_config()}")
        self.wait_online(ids, started, timeout)
        self.say(f"{len(ids)} SuperNodes online")
        return ids

    # -- runs

    def submit(
        self,
        run_config: Mapping[str, Any],
        stream: IO[str] | None = sys.stdout,
        timeout: float | None = None,
    ) -> RunResult:
        """Submit the app (``flwr run APP fedpit-local --stream``) and wait for the end.

        Args:
            run_config: Run configuration (flat dotted keys), written to a TOML file.
            stream: Where the run's streamed log goes (also ``logs/flwr-run.log``).
            timeout: Seconds to wait for the run (``None``: no limit).

        Returns:
            The run's final status as the SuperLink reports it.
        """
        import re
        import threading

        import tomli_w

        config_file = self.work_dir / "run-config.toml"
        config_file.write_text(tomli_w.dumps(dict(run_config)), encoding="utf-8")
        command = [
            flower_bin("flwr"), "run", str(self.app_dir), CONNECTION,
            "--stream", "--run-config", str(config_file),
        ]  # fmt: skip
        self.say("submitting: " + shlex.join(command))
        self.logs.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        run_ids: list[int] = []
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env(self.cli_home),
            cwd=self.work_dir,
            text=True,
            errors="replace",
            start_new_session=True,
        )

        def pump() -> None:  # copy the streamed log; note the run id
            assert proc.stdout is not None
            with (self.logs / "flwr-run.log").open("w", encoding="utf-8") as log:
                for line in proc.stdout:
                    log.write(line)
                    log.flush()
                    if stream is not None:
                        stream.write(line)
                        stream.flush()
                    if match := re.search(r"Successfully started run (\d+)", line):
                        run_ids.append(int(match.group(1)))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            while proc.poll() is None:
                if deadline is not None and time.monotonic() > deadline:
                    raise DeployError(f"the run did not finish in {timeout:.0f} s")
                time.sleep(0.5)
            reader.join(timeout=10)
            if not run_ids:
                raise DeployError(
                    f"flwr run did not start a run (exit {proc.returncode}); see "
                    f"{self.logs / 'flwr-run.log'}"
                )
            return self.wait_run(run_ids[0], deadline)
        except BaseException:
            if run_ids:
                self.say(f"stopping run {run_ids[0]}")
                with contextlib.suppress(subprocess.SubprocessError, OSError, DeployError):
                    self.flwr("stop", str(run_ids[0]), CONNECTION, timeout=30)
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)

    def wait_run(self, run_id: int, deadline: float | None = None) -> RunResult:
        """Poll the run's status until it is ``finished:*``."""
        while True:
            info = self.run_status(run_id)
            status = str(info.get("status", ""))
            if status.startswith("finished"):
                return RunResult(run_id, status, str(info.get("status-details", "")))
            if deadline is not None and time.monotonic() > deadline:
                raise DeployError(f"run {run_id} still {status!r} at the deadline")
            time.sleep(2.0)

    # -- shutdown

    def stop(self, grace: float = 15.0) -> None:
        """End every started process (SuperNodes first) and everything they started.

        SIGTERM, then SIGKILL after ``grace`` seconds; processes the Flower processes
        started (SuperExec, ServerApp/ClientApp runners) are found through ``/proc``
        before the parents go, and ended the same way if they outlive them.
        """
        order = [p for p in self.processes if p is not self.superlink]
        if self.superlink is not None:
            order.append(self.superlink)
        spawned = [d for p in order if p.proc.poll() is None for d in descendants(p.proc.pid)]
        for started in order:
            if started.proc.poll() is None:
                started.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for started in order:
            try:
                started.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                started.proc.kill()
                started.proc.wait()
            started.log_file.close()
        leftover = [pid for pid in spawned if _alive(pid)]
        for pid in leftover:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while leftover and time.monotonic() < deadline:
            leftover = [pid for pid in leftover if _alive(pid)]
            time.sleep(0.2)
        for pid in leftover:
            _signal(pid, signal.SIGKILL)
        self.processes.clear()
        self.superlink = None

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
