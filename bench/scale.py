"""Scale: peak memory and seconds per round as the federation grows, the sample fixed.

``fedpit run`` with 10, 50 and 100 clients (MedQuAD split by k-means + Dirichlet, the
paper's recipe), 10 clients sampled per round, 3 rounds, FedAvg and a small per-client
budget: what grows from 10 to 100 clients is what the server, Flower or the data layer
does per client of the federation rather than per sampled client.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.memory import simulation_peak

SCALE_OVERRIDES = [
    "data.partition=kmeans",
    "fed.clients-per-round=10",
    "fed.rounds=3",
    "data.examples-per-client=4",
    "data.test-size=16",
    "eval.client-test-size=2",
    "model.max-length=128",
    "train.batch-size=4",
]
"""The scale runs' settings (FedAvg and the client count come from ``simulation_peak``)."""


def round_seconds(run_dir: Path) -> list[float]:
    """Seconds each round took, from the ``elapsed_s`` of ``metrics.jsonl`` (pure I/O).

    Round 0 (the base model's evaluation) is the starting point, not a round.
    """
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    elapsed = [float(r["elapsed_s"]) for r in sorted(rows, key=lambda r: r["round"])]
    return [b - a for a, b in itertools.pairwise(elapsed)]


def warm_split(overrides: Sequence[str], num_clients: int) -> None:
    """Build the scale runs' split once, before any run.

    Its one-off k-means (cached per machine) then falls into no run's rounds.
    """
    from fedpit.config.load import from_flat, parse_overrides
    from fedpit.data.prepare import run_data_for

    values: dict[str, object] = {**parse_overrides(list(overrides))}
    values["data.num-clients"] = str(num_clients)
    run_data_for(from_flat(values))


def bench_scale(counts: Sequence[int], overrides: Sequence[str], work: Path) -> dict[str, Any]:
    """Peak summed PSS and mean seconds per round for each client count.

    Args:
        counts: Client counts, smallest first (the benchmark uses 10, 50, 100).
        overrides: Overrides of every run (``SCALE_OVERRIDES``, then the caller's).
        work: Scratch directory (run directories ``mem-<N>`` and their logs).

    Returns:
        The ``scale`` section of ``results.json``: per count the memory run's record
        plus ``round_seconds`` and their mean; ratios of the last count over the first.
    """
    work.mkdir(parents=True, exist_ok=True)
    warm_split([*SCALE_OVERRIDES, *overrides], max(counts))
    runs = []
    for n in counts:
        run = simulation_peak(n, [*SCALE_OVERRIDES, *overrides], work)
        seconds = round_seconds(work / f"mem-{n}")
        runs.append({**run, "round_seconds": seconds, "mean_round_s": statistics.fmean(seconds)})
    first, last = runs[0], runs[-1]
    return {
        "overrides": [*SCALE_OVERRIDES, *overrides],
        "runs": runs,
        "pss_ratio": last["peak_pss_gb"] / first["peak_pss_gb"],
        "round_seconds_ratio": last["mean_round_s"] / first["mean_round_s"],
    }
