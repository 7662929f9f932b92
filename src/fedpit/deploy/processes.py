"""Process helpers: free ports, Flower executables, direct HTTPS, process trees.

Flower's processes start processes of their own (SuperExec, ServerApp and ClientApp
runners, some in new sessions); :func:`descendants` finds them through ``/proc`` so that
a federation can end them all.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fedpit.deploy.errors import DeployError


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
    """A process a :class:`~fedpit.deploy.federation.LocalFederation` started, with its log file."""

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
