"""Where a run's time goes: seconds per client-round phase and the run's wall time.

SynGen's own time is split by its generate calls (the clients' private logs time each
one), which shows how much the retry rounds of failed responses cost. Read from a
finished run directory (``--run-dir``), or from the default ``fedpit run``
the benchmark starts itself (``--default-run``), alternated with variants of its settings
(``--default-run-vs``) or with the default job as an earlier commit ran it
(``--default-run-vs-commit``: the same machine, the same hour, the old code).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from bench.timing import alternate
from fedpit.data.sources import DATA_DIR_ENV, MEDQUAD_FILE, find_data_file

PHASES = ("synth", "train-local", "select", "train-public", "total")
"""Client-round phases, each a ``seconds-<phase>`` counter in ``metrics.jsonl``."""

REPO = Path(__file__).resolve().parents[1]
"""This project's checkout (the git repository ``--default-run-vs-commit`` reads)."""


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


def source_tree(rev: str, dest: Path, repo: Path = REPO) -> tuple[str, Path]:
    """The project's files at commit ``rev``, extracted into ``dest/commit-<hash>``.

    Args:
        rev: Any git revision (``83ee11f``, ``HEAD~3``, a tag).
        dest: Directory to extract into.
        repo: The git repository (this project's, by default).

    Returns:
        The commit's short hash and the tree's root (it has ``src/`` and ``pyproject.toml``).

    Raises:
        ValueError: ``rev`` names no commit of ``repo``.
    """
    git = ["git", "-C", str(repo)]
    found = subprocess.run(
        [*git, "rev-parse", "--short", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise ValueError(f"{rev!r} is not a commit of {repo}")
    short = found.stdout.strip()
    root = dest / f"commit-{short}"
    if not (root / "pyproject.toml").is_file():
        archive = subprocess.run(
            [*git, "archive", "--format=tar", short],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(root, filter="data")
    return short, root


def fedpit_command(tree: Path | None) -> list[str]:
    """Interpreter arguments that start ``fedpit``: this checkout's, or a source tree's.

    A tree's entry point is read from its ``pyproject.toml`` (it moved between commits).
    """
    if tree is None:
        return ["-m", "fedpit"]
    project = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
    module, func = project["scripts"]["fedpit"].split(":")
    return ["-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that runs a source tree's code: its ``src/`` first on the path.

    The data directory this checkout finds is passed on as ``$FEDPIT_DATA_DIR`` (an
    extracted tree has no ``../shared/data`` beside it).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tree / "src"), env.get("PYTHONPATH", "")) if p
    )
    if DATA_DIR_ENV not in env:
        medquad = find_data_file(MEDQUAD_FILE)
        if medquad is not None:
            env[DATA_DIR_ENV] = str(medquad.parent)
    return env


@dataclass(frozen=True)
class Job:
    """One arm of the default-job comparison.

    Attributes:
        overrides: ``key=value`` settings on top of the default job (none: the default).
        tree: The source tree whose code runs it (None: this checkout's).
    """

    overrides: tuple[str, ...] = ()
    tree: Path | None = None


def default_run(run_dir: Path, job: Job = Job()) -> float:
    """Run the default ``fedpit run`` (or a variant) into ``run_dir``; seconds to exit.

    Args:
        run_dir: The run directory to create.
        job: The variant's settings and the code that runs it.

    Returns:
        Wall seconds of the whole process (model load, Ray, federation, summary).

    Raises:
        subprocess.CalledProcessError: The run exited non-zero.
    """
    cmd = [
        sys.executable,
        *fedpit_command(job.tree),
        "run",
        *job.overrides,
        f"run-dir={run_dir}",
    ]
    env = tree_env(job.tree) if job.tree is not None else None
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def default_runs(
    work: Path,
    variants: Sequence[Sequence[str]] = (),
    repetitions: int = 1,
    commits: Mapping[str, Path] | None = None,
) -> dict[str, dict[str, Any]]:
    """The default job and its variants, alternated (A B, B A …), each read as it ran.

    Args:
        work: Scratch directory; run ``k`` goes to ``work/default-run-<k>``.
        variants: Per variant, its ``key=value`` overrides (the default job has none).
        repetitions: Runs of each (alternated, so every variant sees the same load).
        commits: Short hash → source tree (:func:`source_tree`): the default job as
            that commit ran it, named ``commit <hash>``.

    Returns:
        ``default`` and each variant (named by its overrides joined with spaces, or by
        its commit) → ``overrides``, ``commit`` (None for this checkout), ``end_to_end_s``
        and ``phases`` (:func:`phase_seconds`) per run.
    """
    jobs = {"default": Job(), **{" ".join(v): Job(tuple(v)) for v in variants}}
    jobs |= {f"commit {short}": Job(tree=tree) for short, tree in (commits or {}).items()}
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
            "overrides": list(jobs[name].overrides),
            "commit": name.removeprefix("commit ") if jobs[name].tree else None,
            "end_to_end_s": [seconds for _, seconds in timed[name]],
            "phases": [phase_seconds(d) for d in dirs[name]],
        }
        for name in jobs
    }
