"""A quiet console for ``fedpit run``: Flower's and Ray's logs go to ``RUN_DIR/logs/``.

By default the console shows FedPIT's own lines (DATA / MODEL / METHOD, one line per
round, the summary, and FedPIT's warnings); Flower's INFO records (which print the whole
run configuration every round), library warnings and the Ray actors' output (a progress
bar per actor per phase) are written in full to ``RUN_DIR/logs/`` instead.
``fedpit run --verbose`` shows them live, as before.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FLOWER_LOG = "flower.log"
RAY_LOGS = "ray"


@contextmanager
def quiet(logs: Path) -> Iterator[None]:
    """Send Flower's log records and Python warnings to ``logs/flower.log`` meanwhile."""
    logs.mkdir(parents=True, exist_ok=True)
    flwr = logging.getLogger("flwr")
    consoles = [h for h in flwr.handlers if isinstance(h, logging.StreamHandler)]
    levels = [h.level for h in consoles]
    file = logging.FileHandler(logs / FLOWER_LOG, encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_warnings = logging.getLogger("py.warnings")
    for h in consoles:
        h.setLevel(logging.ERROR)  # Flower's errors still reach the console
    flwr.addHandler(file)
    root_warnings.addHandler(file)
    root_warnings.propagate = False
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        logging.captureWarnings(False)
        root_warnings.propagate = True
        root_warnings.removeHandler(file)
        flwr.removeHandler(file)
        for h, level in zip(consoles, levels, strict=True):
            h.setLevel(level)
        file.close()


def copy_ray_logs(logs: Path, session: Path = Path("/tmp/ray/session_latest/logs")) -> int:
    """Copy the Ray workers' output of the latest session into ``logs/ray/``; how many."""
    if not session.is_dir():
        return 0
    target = logs / RAY_LOGS
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for path in session.glob("worker-*"):
        if path.suffix in (".out", ".err") and path.stat().st_size:
            shutil.copyfile(path, target / path.name)
            copied += 1
    return copied


def print_summary(summary: dict[str, object]) -> None:
    """A short human summary of a finished run."""
    losses = summary.get("test_loss", {})
    print("\n=== FedPIT run finished ===")
    print(f"method {summary['method']} | rounds {summary['rounds']} | {summary['seconds']:.0f} s")
    if isinstance(losses, dict) and losses:
        print("test loss by round: " + ", ".join(f"{k}: {v:.4f}" for k, v in losses.items()))
    synth = summary.get("synthetic") or {}
    if isinstance(synth, dict) and synth.get("synth-attempts"):
        print(
            f"synthetic: {synth['synth-kept']:.0f} kept of {synth['synth-attempts']:.0f} attempts, "
            f"{synth['synth-selected']:.0f} selected for training "
            f"({summary.get('selected_per_client_round', 0):.1f} per client and round)"
        )
    print(f"run directory: {summary['run_dir']}")
    print(f"final global adapter: {summary['final_adapter']}")
