"""Where a run's time goes: seconds per client-round phase and the run's wall time.

Read from a finished run directory (``--run-dir``), or from the default ``fedpit run``
the benchmark starts itself (``--default-run``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PHASES = ("synth", "train-local", "select", "train-public", "total")
"""Client-round phases, each a ``seconds-<phase>`` counter in ``metrics.jsonl``."""


def phase_seconds(run_dir: Path) -> dict[str, Any]:
    """Seconds per client-round phase and the run's wall time, from a run directory.

    Reads ``clients/*/metrics.jsonl`` (the ``seconds-*`` counters of every client
    round) and ``summary.json`` (``seconds``, ``method``).

    Args:
        run_dir: A finished run directory.

    Returns:
        ``client_rounds``, ``mean`` and ``max`` seconds per phase, ``run_seconds``,
        ``method``.
    """
    values: dict[str, list[float]] = {p: [] for p in PHASES}
    rounds = 0
    for path in sorted(run_dir.glob("clients/*/metrics.jsonl")):
        for text in path.read_text().splitlines():
            if not text.strip():
                continue
            counters = json.loads(text).get("counters", {})
            rounds += 1
            for p in PHASES:
                values[p].append(float(counters.get(f"seconds-{p}", 0.0)))
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {
        "run_dir": str(run_dir),
        "method": summary.get("method"),
        "client_rounds": rounds,
        "mean": {p: statistics.fmean(v) if v else None for p, v in values.items()},
        "max": {p: max(v) if v else None for p, v in values.items()},
        "run_seconds": summary.get("seconds"),
    }


def default_run(run_dir: Path) -> float:
    """Run the default ``fedpit run`` into ``run_dir``; its seconds from start to exit.

    Args:
        run_dir: The run directory to create.

    Returns:
        Wall seconds of the whole process (model load, Ray, federation, summary).

    Raises:
        subprocess.CalledProcessError: The run exited non-zero.
    """
    cmd = [sys.executable, "-m", "fedpit", "run", f"run-dir={run_dir}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0
