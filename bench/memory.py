"""Peak memory of simulation runs: summed PSS and RSS of a `fedpit run` process tree.

``fedpit run`` (FedAvg, one round, every client training) runs as a subprocess with 1
and with N clients, under each worker arrangement; a background thread samples the
memory of the whole process tree (driver, Ray, every worker) and keeps the peaks.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.units import GB


def tree_memory(pid: int) -> tuple[int, int]:
    """Summed RSS and PSS in bytes of process ``pid`` and all its descendants.

    RSS counts a page shared by several processes (mmap'd weights, libraries) once per
    process; PSS splits it among them, so summed PSS is the memory the tree really uses.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = pss = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = proc.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return rss, pss


def tree_rss(pid: int) -> int:
    """Summed resident set size in bytes of process ``pid`` and all its descendants."""
    return tree_memory(pid)[0]


class RssSampler:
    """Samples the summed RSS and PSS of a process tree on a background thread.

    Use as a context manager around the process's lifetime; ``peak`` / ``peak_pss`` are
    the largest samples (bytes).
    """

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            rss, pss = tree_memory(self.pid)
            self.peak = max(self.peak, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def simulation_peak(
    num_clients: int, overrides: Sequence[str], work: Path, interval: float = 0.5
) -> dict[str, Any]:
    """Run ``fedpit run`` (FedAvg, 1 round, all clients training) and sample its RSS.

    Args:
        num_clients: ``data.num-clients`` (IID split; every client trains).
        overrides: Further ``key=value`` overrides of the run.
        work: Directory for the run directory and its log (``mem-<N>`` / ``mem-<N>.log``).
        interval: Seconds between memory samples.

    Returns:
        ``clients``, ``peak_rss_gb``, ``peak_pss_gb``, ``samples``, ``seconds`` and the
        ``command`` that ran.

    Raises:
        RuntimeError: The run exited non-zero (the message ends with its log's tail).
    """
    run_dir = work / f"mem-{num_clients}"
    log = work / f"mem-{num_clients}.log"
    cmd = [
        sys.executable,
        "-m",
        "fedpit",
        "run",
        "method=fedavg",
        "fed.rounds=1",
        f"data.num-clients={num_clients}",
        "data.partition=iid",
        f"run-dir={run_dir}",
        *overrides,
    ]
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        with RssSampler(proc.pid, interval) as sampler:
            code = proc.wait()
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{tail}")
    return {
        "clients": num_clients,
        "peak_rss_gb": sampler.peak / GB,
        "peak_pss_gb": sampler.peak_pss / GB,
        "samples": sampler.samples,
        "seconds": time.perf_counter() - t0,
        "command": " ".join(cmd[1:]),
    }


MEMORY_ARRANGEMENTS = {
    "default": [],  # workers = fed.parallel-clients auto: min(clients, CPUs + 1, memory)
    "one worker": ["fed.parallel-clients=1"],  # every client in one process, one base model
}


QUICK_OVERRIDES = [
    "data.examples-per-client=4",
    "data.test-size=4",
    "eval.client-test-size=0",
    "model.max-length=64",
    "train.batch-size=4",
    "train.micro-batch-size=0",
]
"""Overrides of every memory run under ``--quick``: tiny data, short sequences, no eval."""


def bench_memory(counts: Sequence[int], overrides: Sequence[str], work: Path) -> dict[str, Any]:
    """Peak summed RSS/PSS per client count, for each worker arrangement.

    The ratio is the last count's peak over the first's (PSS: memory really used).

    Args:
        counts: Client counts to run, smallest first (the benchmark uses ``[1, N]``).
        overrides: ``key=value`` overrides of every run (``QUICK_OVERRIDES`` under
            ``--quick``).
        work: Scratch directory; each arrangement gets a subdirectory.

    Returns:
        The ``memory`` section of ``results.json``.
    """
    out: dict[str, Any] = {"overrides": list(overrides), "arrangements": {}}
    for name, extra in MEMORY_ARRANGEMENTS.items():
        sub = work / name.replace(" ", "-")
        sub.mkdir(parents=True, exist_ok=True)
        runs = [simulation_peak(n, [*overrides, *extra], sub) for n in counts]
        out["arrangements"][name] = {
            "runs": runs,
            "ratio": runs[-1]["peak_pss_gb"] / runs[0]["peak_pss_gb"],
            "ratio_rss": runs[-1]["peak_rss_gb"] / runs[0]["peak_rss_gb"],
        }
    return out
