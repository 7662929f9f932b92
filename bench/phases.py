"""Where a run's time goes: seconds per client-round phase and the run's wall time.

SynGen's own time is split by its generate calls (the clients' private logs time each
one), which shows how much the retry rounds of failed responses cost. Read from a
finished run directory (``--run-dir``), or from the default ``fedpit run``
the benchmark starts itself (``--default-run``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from itertools import count
from pathlib import Path
from typing import Any

from bench.timing import alternate

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
        ``method``, ``synth_calls`` (:func:`synth_calls`; empty for runs before it).
    """
    values: dict[str, list[float]] = {p: [] for p in PHASES}
    calls: list[list[dict[str, Any]]] = []
    rounds = 0
    for path in sorted(run_dir.glob("clients/*/metrics.jsonl")):
        for text in path.read_text().splitlines():
            if not text.strip():
                continue
            line = json.loads(text)
            counters = line.get("counters", {})
            if "synth-calls" in line:
                calls.append(line["synth-calls"])
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
        "synth_calls": synth_calls(calls),
        **_outcome(summary),
    }


def _outcome(summary: dict[str, Any]) -> dict[str, Any]:
    """The final test loss and the synthetic yield a run's ``summary.json`` states."""
    losses = summary.get("test_loss") or {}
    synthetic = summary.get("synthetic") or {}
    return {
        "test_loss": losses[max(losses, key=int)] if losses else None,
        "synth_kept": synthetic.get("synth-kept"),
        "synth_attempts": synthetic.get("synth-attempts"),
    }


def call_name(phase: str, index: int) -> str:
    """A call's name: ``instruction``, or ``response 1``, ``response 2`` … by retry round."""
    return phase if phase == "instruction" else f"{phase} {index}"


def synth_calls(rounds: list[list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Where SynGen's time goes: its generate calls, by position, over client rounds (pure).

    Args:
        rounds: Per client round, its ``synth-calls`` (``phase``, ``prompts``, ``seconds``
            of each batched call, in order: the instruction call, then one response call
            per retry round).

    Returns:
        Call name (:func:`call_name`) → ``rounds`` (client rounds that made it),
        ``prompts_mean``, ``seconds_mean`` (over those rounds) and ``share`` (its seconds
        over all calls' seconds, every round summed).
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for calls in rounds:
        seen: dict[str, int] = {}
        for c in calls:
            seen[c["phase"]] = seen.get(c["phase"], 0) + 1
            by_name.setdefault(call_name(c["phase"], seen[c["phase"]]), []).append(c)
    total = sum(float(c["seconds"]) for calls in rounds for c in calls)
    return {
        name: {
            "rounds": len(made),
            "prompts_mean": statistics.fmean(float(c["prompts"]) for c in made),
            "seconds_mean": statistics.fmean(float(c["seconds"]) for c in made),
            "share": sum(float(c["seconds"]) for c in made) / total if total else 0.0,
        }
        for name, made in by_name.items()
    }


def default_run(run_dir: Path, overrides: Sequence[str] = ()) -> float:
    """Run the default ``fedpit run`` into ``run_dir``; its seconds from start to exit.

    Args:
        run_dir: The run directory to create.
        overrides: ``key=value`` settings for a variant of the default job.

    Returns:
        Wall seconds of the whole process (model load, Ray, federation, summary).

    Raises:
        subprocess.CalledProcessError: The run exited non-zero.
    """
    cmd = [sys.executable, "-m", "fedpit", "run", *overrides, f"run-dir={run_dir}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def default_runs(
    work: Path, variants: Sequence[Sequence[str]] = (), repetitions: int = 1
) -> dict[str, dict[str, Any]]:
    """The default job and its variants, alternated (A B, B A …), each read as it ran.

    Args:
        work: Scratch directory; run ``k`` goes to ``work/default-run-<k>``.
        variants: Per variant, its ``key=value`` overrides (the default job has none).
        repetitions: Runs of each (alternated, so every variant sees the same load).

    Returns:
        ``default`` and each variant (named by its overrides joined with spaces) →
        ``overrides``, ``end_to_end_s`` and ``phases`` (:func:`phase_seconds`) per run.
    """
    jobs = {"default": [], **{" ".join(v): list(v) for v in variants}}
    made = count()
    dirs: dict[str, list[Path]] = {name: [] for name in jobs}

    def job(name: str) -> Callable[[], float]:
        def one() -> float:
            run_dir = work / f"default-run-{next(made)}"
            dirs[name].append(run_dir)
            return default_run(run_dir, jobs[name])

        return one

    timed = alternate({name: job(name) for name in jobs}, repetitions)
    return {
        name: {
            "overrides": jobs[name],
            "end_to_end_s": [seconds for _, seconds in timed[name]],
            "phases": [phase_seconds(d) for d in dirs[name]],
        }
        for name in jobs
    }
