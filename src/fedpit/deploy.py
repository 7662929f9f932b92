"""Flower Deployment Engine: TLS material, SuperNode keys, a local loopback federation.

Flower 1.41's deployment runtime is one ``flower-superlink`` (a single HTTPS port serving
the Fleet, Control and Runtime APIs) and one ``flower-supernode`` per data owner. This
module provides what a trial of it needs:

- :func:`make_test_certificates` — a throw-away CA and a server certificate for the
  SuperLink (testing only: a real deployment uses the hospital's own PKI);
- :func:`make_node_keys` — a SuperNode's EC key pair (OpenSSH format, what
  ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read);
- :class:`LocalFederation` / :func:`run_local_federation` — a SuperLink with TLS and
  SuperNode authentication, N registered SuperNodes each with its own private data file
  and state directory, and ``flwr run`` submitting FedPIT, all on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fedpit.errors import FedPITError

KEY_MODE = 0o600
LOOPBACK = ("127.0.0.1", "localhost")
CONNECTION = "fedpit-local"
"""Name of the SuperLink connection written to the federation's private ``FLWR_HOME``."""


class DeployError(FedPITError):
    """A deployment step failed (a process did not start, a run did not finish)."""


# --------------------------------------------------------------------------- files


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable and writable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE)
    try:
        os.fchmod(fd, KEY_MODE)  # also when the file existed with wider permissions
        os.write(fd, data)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of a test CA and the SuperLink's server certificate.

    Attributes:
        ca_cert: The CA certificate: SuperNodes (``--root-certificates``) and the
            ``flwr`` CLI (``root-certificates``) trust it; the SuperLink also takes it
            as ``--ssl-ca-certfile``.
        ca_key: The CA's private key (0600). Keep it offline; it is only needed to
            issue more certificates.
        server_cert: The SuperLink's certificate (``--ssl-certfile``).
        server_key: The SuperLink's private key (``--ssl-keyfile``, 0600).
    """

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _san(hosts: Iterable[str]) -> list[Any]:
    from cryptography import x509

    names: list[Any] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_test_certificates(
    directory: str | Path,
    hosts: Sequence[str] = LOOPBACK,
    days: int = 30,
) -> TlsFiles:
    """Create a local CA and a SuperLink server certificate signed by it (for testing).

    The server certificate names every entry of ``hosts`` (IP addresses and DNS names)
    as a subject alternative name, which is what TLS clients verify. Include 127.0.0.1
    when the SuperLink listens on 0.0.0.0: Flower 1.41's SuperLink then starts its
    SuperExec against ``127.0.0.1:PORT`` over TLS (and a run stays pending if that
    handshake fails). Private keys are written with mode 0600.

    Args:
        directory: Where to write ``ca.pem``, ``ca.key``, ``server.pem``, ``server.key``.
        hosts: Names and addresses under which SuperNodes and the CLI reach the SuperLink.
        days: Validity of both certificates.

    Returns:
        The paths of the four files.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise DeployError("make_test_certificates: name at least one host")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FedPIT test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    files = TlsFiles(
        ca_cert=out / "ca.pem",
        ca_key=out / "ca.key",
        server_cert=out / "server.pem",
        server_key=out / "server.key",
    )
    write_private(files.ca_key, key_pem(ca_key))
    write_private(files.server_key, key_pem(server_key))
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return files


@dataclass(frozen=True)
class NodeKeys:
    """A SuperNode's authentication key pair.

    Attributes:
        private_key: OpenSSH private key (0600); stays on the node
            (``flower-supernode --auth-supernode-private-key``).
        public_key: OpenSSH public key; given to the SuperLink operator, who registers
            it (``flwr supernode register``).
    """

    private_key: Path
    public_key: Path


def make_node_keys(directory: str | Path, name: str) -> NodeKeys:
    """Create a SuperNode's EC (NIST P-384) key pair in OpenSSH format.

    Equivalent to ``ssh-keygen -t ecdsa -b 384 -N "" -f DIRECTORY/NAME``.

    Args:
        directory: Where to write ``NAME`` (private, 0600) and ``NAME.pub``.
        name: File name of the pair, e.g. the hospital's name.

    Returns:
        The paths of the two files.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not name or "/" in name or name.startswith("."):
        raise DeployError(f"node key name {name!r}: use a plain file name, e.g. hospital-a")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    keys = NodeKeys(out / name, out / f"{name}.pub")
    write_private(keys.private_key, private)
    keys.public_key.write_bytes(public + f" {name}\n".encode())
    return keys


# --------------------------------------------------------------------------- node data


@dataclass(frozen=True)
class NodeSpec:
    """What one SuperNode is given through its node configuration.

    Attributes:
        client_id: The client's id (``client-id``): names it in the logs and seeds it.
        data_path: Its private training examples (``data-path``; JSON/JSONL/CSV).
        state_dir: Where it keeps its private state (``state-dir``): its adapters,
            synthetic data and metrics. Never sent anywhere.
        test_path: Its private held-out examples for federated evaluation
            (``test-path``), or ``None``.
    """

    client_id: int
    data_path: Path
    state_dir: Path
    test_path: Path | None = None

    def node_config(self) -> str:
        """The ``flower-supernode --node-config`` value (TOML literal strings)."""
        items = {"data-path": self.data_path, "state-dir": self.state_dir}
        if self.test_path is not None:
            items["test-path"] = self.test_path
        parts = []
        for key, path in items.items():
            text = str(Path(path).expanduser().resolve())
            if "'" in text:
                raise DeployError(f"{key} {text!r}: a path with a single quote is not supported")
            parts.append(f"{key}='{text}'")
        return " ".join([*parts, f"client-id={self.client_id}"])


def write_examples(path: Path, examples: Iterable[Any]) -> Path:
    """Write :class:`~fedpit.data.example.Example` records as JSONL ``load_examples`` reads.

    The ``meta`` fields become top-level fields again, so a reload gives equal examples.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for ex in examples:
        record = {k: v for k, v in ex.meta.items() if k not in ("instruction", "input", "output")}
        record.update(id=ex.id, instruction=ex.instruction, input=ex.input, output=ex.output)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE)  # private data: 0600
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(lines)
    return path


def split_to_nodes(cfg: Any, directory: Path) -> list[NodeSpec]:
    """Write each client's share of the run's data split to its own node directory.

    ``directory/<i>/data.jsonl`` (and ``test.jsonl`` when ``eval.client-test-size`` > 0)
    hold exactly what simulated client ``i`` would train (and evaluate) on; each node's
    state goes to ``directory/<i>/state``. For trying a deployment on one machine: real
    data owners bring their own files.
    """
    from fedpit.run_data import run_data_for

    split = run_data_for(cfg).split
    nodes = []
    for i, examples in enumerate(split.clients):
        node_dir = directory / str(i)
        test = None
        if split.client_tests and split.client_tests[i]:
            test = write_examples(node_dir / "test.jsonl", split.client_tests[i])
        data = write_examples(node_dir / "data.jsonl", examples)
        nodes.append(NodeSpec(i, data, node_dir / "state", test))
    return nodes


# --------------------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def https_open(url: str, context: ssl.SSLContext, timeout: float) -> Any:
    """Open ``url`` directly (never through a proxy from the environment)."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    return opener.open(url, timeout=timeout)


def flower_bin(name: str) -> str:
    """The path of a Flower executable: next to this Python first, then on ``PATH``."""
    import shutil

    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise DeployError(f"{name} not found; install flwr (pip install 'flwr==1.41.0')")
    return found


def find_app_dir() -> Path:
    """The FedPIT Flower app directory (the ``pyproject.toml`` with ``[tool.flwr.app]``)."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and "[tool.flwr.app]" in pyproject.read_text(encoding="utf-8"):
        return root
    raise DeployError(
        "cannot find FedPIT's pyproject.toml (the Flower app); pass --app DIR with the "
        "directory of a FedPIT checkout"
    )


def check_not_packed(path: Path, app_dir: Path) -> None:
    """Refuse a private path that ``flwr run`` would pack into the app it ships.

    ``flwr run APP`` builds a FAB from every file of ``APP`` that ``.gitignore`` does not
    exclude and whose name ends in .py, .toml, .md, .json, .jsonl, .yaml or .yml, and
    sends it to the SuperLink and every SuperNode. ``runs/`` is git-ignored.
    """
    path = Path(path).expanduser().resolve()
    if path.is_relative_to(app_dir) and not path.is_relative_to(app_dir / "runs"):
        raise DeployError(
            f"{path} is inside the Flower app {app_dir}: `flwr run` would pack its data "
            "files into the app it sends to every node; use a path outside it or under runs/"
        )


def _children_map() -> dict[int, list[int]]:
    """Parent pid → child pids, from ``/proc`` (empty where there is no ``/proc``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def descendants(pid: int) -> list[int]:
    """All processes started (directly or not) by ``pid``."""
    children, out, stack = _children_map(), [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


@dataclass
class Started:
    """A process this module started, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def log_text(self) -> str:
        """Everything the process has written so far."""
        self.log_file.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of its log."""
        return "\n".join(self.log_text().splitlines()[-lines:])


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


class LocalFederation:
    """A SuperLink (TLS + SuperNode authentication) and SuperNodes on one machine.

    Every process gets its own ``FLWR_HOME`` under ``work_dir`` (so the user's
    ``~/.flwr`` is never touched), a log file under ``work_dir/logs`` and a port chosen
    free at runtime. ``stop()`` (also on leaving a ``with`` block) ends them all and every
    process they started.

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

    def register(self, public_key: Path, name: str | None = None) -> int:
        """Register a SuperNode's public key (``flwr supernode register``); its node id."""
        args = ["supernode", "register", str(public_key), CONNECTION]
        if name:
            args += ["--name", name]
        return int(self.flwr_json(*args)["node-id"])

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

    def list_nodes(self) -> list[dict[str, Any]]:
        """The SuperLink's nodes (``flwr supernode list``)."""
        return list(self.flwr_json("supernode", "list", CONNECTION)["nodes"])

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

    def run_status(self, run_id: int) -> dict[str, Any]:
        """The SuperLink's record of a run (``flwr ls --run-id``)."""
        runs = self.flwr_json("ls", CONNECTION, "--run-id", str(run_id))["runs"]
        return dict(runs[0])

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


# --------------------------------------------------------------------------- one call


def run_config_for(cfg: Any) -> dict[str, Any]:
    """The Flower run configuration of ``cfg``: the keys that differ from the defaults."""
    from fedpit.config import default_flat, to_flat

    defaults = default_flat()
    return {k: v for k, v in to_flat(cfg).items() if v != defaults.get(k) or k == "run-dir"}


def default_work_dir() -> Path:
    """``runs/federation-<timestamp>`` under the current directory."""
    return Path("runs") / f"federation-{time.strftime('%Y%m%d-%H%M%S')}"


def run_local_federation(
    cfg: Any,
    work_dir: str | Path | None = None,
    nodes: Sequence[NodeSpec] | None = None,
    app_dir: str | Path | None = None,
    timeout: float | None = None,
    startup_timeout: float = 180.0,
    echo: IO[str] | None = sys.stdout,
) -> tuple[RunResult, dict[str, Any]]:
    """Run ``cfg`` on a loopback deployment: SuperLink, one SuperNode per client, ``flwr run``.

    Args:
        cfg: The run's :class:`~fedpit.config.RunConfig` (a federated method).
        work_dir: Where certificates, keys, node directories, logs and (unless
            ``run-dir`` is set) the server's run directory ``server/`` go.
        nodes: The nodes' data; by default each client's share of the run's data split
            is written to ``work_dir/nodes/<i>/``.
        app_dir: The Flower app directory (default: this FedPIT checkout).
        timeout: Seconds the run may take (``None``: no limit).
        startup_timeout: Seconds the SuperLink and SuperNodes may take to come up.
        echo: Where progress and the streamed run log go.

    Returns:
        The run's final status and its ``summary.json``.

    Raises:
        DeployError: A process did not start, a node was refused, or the run failed.
    """
    import dataclasses

    if not cfg.is_federated:
        raise DeployError(
            f"method {cfg.method!r} has no server; a federation needs a federated one"
        )
    work = Path(work_dir or default_work_dir()).expanduser().resolve()
    run_dir = Path(cfg.run_dir).expanduser().resolve() if cfg.run_dir else work / "server"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise DeployError(f"run-dir {run_dir} exists and is not empty; choose another")
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
    app = Path(app_dir).expanduser().resolve() if app_dir else find_app_dir()
    check_not_packed(work, app)
    work.mkdir(parents=True, exist_ok=True)
    nodes = list(nodes) if nodes is not None else split_to_nodes(cfg, work / "nodes")
    for node in nodes:
        for path in filter(None, (node.data_path, node.test_path)):
            check_not_packed(path, app)
    if len(nodes) != cfg.data.num_clients:
        raise DeployError(
            f"{len(nodes)} nodes but data.num-clients = {cfg.data.num_clients}; make them equal"
        )
    if cfg.eval.client_test_size > 0 and all(n.test_path is None for n in nodes):
        raise DeployError(
            "federated evaluation is on (eval.client-test-size > 0) but no node has a "
            "held-out file; give nodes test files or set eval.client-test-size=0"
        )
    tls = make_test_certificates(work / "tls")
    with LocalFederation(work, app, echo=echo) as fed:
        fed.up(nodes, tls, startup_timeout)
        result = fed.submit(run_config_for(cfg), stream=echo, timeout=timeout)
        fed.say(f"run {result.run_id}: {result.status}")
    if not result.ok:
        raise DeployError(
            f"run {result.run_id} ended {result.status}: {result.details or 'no details'}; "
            f"logs in {work / 'logs'}"
        )
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise DeployError(f"run {result.run_id} completed but wrote no {summary_path}")
    return result, json.loads(summary_path.read_text())


# --------------------------------------------------------------------------- commands

FEDERATION_HELP = """\
Try FedPIT on Flower's Deployment Engine on this machine: a flower-superlink with TLS
(a throw-away CA from `fedpit certs`) and SuperNode authentication, one
flower-supernode per client (its own key pair, registered with `flwr supernode
register`; its own data-path, test-path, state-dir and client-id as node
configuration), and `flwr run` submitting the job. Ports are picked free at run time;
everything listens on 127.0.0.1. Ctrl-C stops the run and every process.

Configuration as for `fedpit run` (--config FILE, key=value). By default each client's
share of the run's data split is written to WORK_DIR/nodes/<i>/data.jsonl; --node-data
gives the nodes' own files instead (one per node, in client-id order).

Layout of WORK_DIR: tls/ (CA + server certificate), keys/ (node key pairs), nodes/<i>/
(data and private state of node i), logs/ (superlink, supernode-<i>, flwr-run),
server/ (the server's run directory, unless run-dir is set).
"""


def _parse_node_data(items: Sequence[str], work: Path) -> list[NodeSpec]:
    nodes = []
    for i, item in enumerate(items):
        data, _, test = item.partition(",")
        for path in filter(None, (data, test)):
            if not Path(path).expanduser().is_file():
                raise DeployError(f"--node-data {item!r}: {path} is not a file")
        nodes.append(
            NodeSpec(
                client_id=i,
                data_path=Path(data).expanduser().resolve(),
                state_dir=work / "nodes" / str(i) / "state",
                test_path=Path(test).expanduser().resolve() if test else None,
            )
        )
    return nodes


def cmd_certs(args: Any) -> int:
    """``fedpit certs DIR``: a test CA and a SuperLink certificate."""
    hosts = list(dict.fromkeys([*(args.host or []), *LOOPBACK]))
    files = make_test_certificates(args.dir, hosts, args.days)
    print(f"names in the server certificate: {', '.join(hosts)}")
    print(f"CA certificate     {files.ca_cert}   (SuperNodes: --root-certificates)")
    print(f"CA private key     {files.ca_key}   (0600; keep offline)")
    print(f"server certificate {files.server_cert}   (SuperLink: --ssl-certfile)")
    print(f"server private key {files.server_key}   (0600; SuperLink: --ssl-keyfile)")
    print("For testing only: a real deployment uses certificates from your own CA.")
    return 0


def cmd_node_key(args: Any) -> int:
    """``fedpit node-key DIR NAME ...``: SuperNode authentication key pairs."""
    for name in args.names:
        keys = make_node_keys(args.dir, name)
        print(f"{name}: private {keys.private_key} (0600, stays on the node)")
        print(f"{' ' * len(name)}  public  {keys.public_key} (register it on the SuperLink)")
    return 0


def cmd_federation_local(args: Any) -> int:
    """``fedpit federation local``: a loopback deployment running one job."""
    from fedpit.cli import build_config, print_summary

    cfg = build_config(args.config, args.overrides)
    work = Path(args.work_dir or default_work_dir()).expanduser().resolve()
    nodes = _parse_node_data(args.node_data, work) if args.node_data else None

    def terminate(signum: int, frame: object) -> None:
        del signum, frame
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        print(f"Work directory: {work}", flush=True)
        _, summary = run_local_federation(
            cfg, work, nodes, app_dir=args.app, timeout=args.timeout or None
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_summary(summary)
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``certs``, ``node-key`` and ``federation`` to the ``fedpit`` command."""
    import argparse

    certs = subparsers.add_parser(
        "certs",
        help="create a test CA and a SuperLink TLS certificate",
        description="Create a throw-away CA (ca.pem, ca.key) and a SuperLink certificate "
        "(server.pem, server.key) signed by it, for trying TLS. Private keys are 0600.",
    )
    certs.add_argument("dir", help="output directory")
    certs.add_argument(
        "--host",
        action="append",
        help="a name or IP address SuperNodes use to reach the SuperLink (repeatable); "
        "127.0.0.1 and localhost are always added: the SuperLink's own SuperExec connects "
        "to it on 127.0.0.1 when it listens on 0.0.0.0",
    )
    certs.add_argument("--days", type=int, default=30, help="validity (default 30)")
    certs.set_defaults(func=cmd_certs)

    node_key = subparsers.add_parser(
        "node-key",
        help="create SuperNode authentication key pairs",
        description="Create an EC P-384 key pair per NAME in OpenSSH format: NAME (private, "
        "0600, for flower-supernode --auth-supernode-private-key) and NAME.pub (for "
        "flwr supernode register).",
    )
    node_key.add_argument("dir", help="output directory")
    node_key.add_argument("names", nargs="+", metavar="NAME", help="e.g. hospital-a")
    node_key.set_defaults(func=cmd_node_key)

    federation = subparsers.add_parser("federation", help="Flower Deployment Engine helpers")
    fed_sub = federation.add_subparsers(dest="federation_command", required=True)
    local = fed_sub.add_parser(
        "local",
        help="run a job on a local multi-process federation (TLS + node authentication)",
        description=FEDERATION_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    local.add_argument("--config", metavar="FILE", help="TOML file of configuration keys")
    local.add_argument("--work-dir", metavar="DIR", help="default runs/federation-<time>")
    local.add_argument(
        "--node-data",
        action="append",
        metavar="DATA[,TEST]",
        help="a node's private training file and optional held-out file (repeat per node)",
    )
    local.add_argument("--timeout", type=float, default=0, help="seconds (default: none)")
    local.add_argument("--app", metavar="DIR", help="the Flower app (default: this checkout)")
    local.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")
    local.set_defaults(func=cmd_federation_local)
