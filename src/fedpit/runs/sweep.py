"""``fedpit sweep``: a grid of runs (methods × β × seeds) that survives interruptions.

A sweep file is a TOML configuration with one extra table::

    [sweep]
    methods = ["fedavg", "fedpit"]
    betas = [0.0, 0.5, 1.0]      # for fedpit, fedpit-v1, fedavg-damped; others run once per seed
    seeds = [0, 1, 2]
    dir = "runs/sweep-paper"      # optional; default runs/sweep-<file stem>
    post = ["attack {run} --all-rounds"]  # optional: fedpit commands run on each finished cell

    [sweep.arms.sampled]          # optional: named study arms, each a set of keys
    "synth.do-sample" = true      # applied to the methods that self-generate (or to
    "synth.temperature" = 1.0     # sweep.arm-methods); the others run once per seed

    # every other key is a fixed configuration key of all cells
    fed.rounds = 5

An arm's cells are named ``<method>-<arm>[-b<beta>]-s<seed>`` and carry ``arm=<name>``,
so reports keep the arms apart.

Each cell runs ``fedpit run`` in its own subprocess (Ray and simulation state never leak
between cells) with ``run-dir=<dir>/<cell>``. A cell whose run directory holds
``summary.json`` is done and skipped; a cell directory without it is what an interrupted
run leaves: a federated run continues from its last completed round (``fedpit run
--resume``), anything else (or a failed resume) is removed and rerun. ``<dir>/sweep.json``
lists every cell and its status. One sweep at a time may run in a directory (a lock file,
``<dir>/.sweep.lock``): a second would rerun, and so delete, the cells the first is
running.

``fedpit sweep FILE --seeds 1,2 --arms NAME --methods a,b`` runs part of a file's grid in
the same directory (e.g. more seeds of the one arm that looked promising); ``--dir D
--no-post fed.rounds=2`` runs it elsewhere, shortened, without the post steps (a probe
that prunes arms before they cost three full seeds).
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpit.config.load import from_flat, load_toml, to_flat
from fedpit.config.schema import BETA_METHODS, METHODS
from fedpit.errors import ConfigError
from fedpit.runs.rundir import RunDir, write_json

GRID_KEYS = ("method", "seed", "fed.beta", "run-dir", "arm")
"""Keys the grid sets per cell; a sweep file may not fix them."""

ARM_METHODS = ("fedpit", "fedpit-v1", "fedmit", "local-selfgen")
"""Methods an arm applies to unless ``sweep.arm-methods`` says otherwise: those that
self-generate (the arms of a SynGen study)."""

NO_OP_BETAS = {"fedavg-damped": 0.0}
"""β values at which a method has nothing to learn, skipped by the grid: damped FedAvg at
β = 0 uploads the global adapter unchanged, so its every round is the base model (the
floor every report already shows)."""

ARM_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"

SERVER_STATE = RunDir(Path()).server_state.name
"""The file a federated run saves after every round (what ``--resume`` continues from)."""

Runner = Callable[[list[str], Path], int]
"""Runs one cell's command, logging to the given file; returns the exit code."""


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file."""

    methods: tuple[str, ...]
    betas: tuple[float, ...]
    seeds: tuple[int, ...]
    root: Path
    base: dict[str, Any] = field(default_factory=dict)
    post: tuple[str, ...] = ()
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    arm_methods: tuple[str, ...] = ARM_METHODS


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    method: str
    beta: float | None  # None: the method does not use β
    seed: int
    run_dir: Path
    arm: str = ""  # "": no arm (the fixed keys only)
    arm_keys: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """``<method>[-<arm>]-b<beta>-s<seed>`` (no ``-b…`` when β does not apply)."""
        arm = f"-{self.arm}" if self.arm else ""
        beta = "" if self.beta is None else f"-b{self.beta:g}"
        return f"{self.method}{arm}{beta}-s{self.seed}"

    def overrides(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """All configuration keys of this cell: the fixed ones, the arm's, then the grid's."""
        keys = dict(base)
        keys.update(self.arm_keys)
        keys.update({"method": self.method, "seed": self.seed, "run-dir": str(self.run_dir)})
        if self.arm:
            keys["arm"] = self.arm
        if self.beta is not None:
            keys["fed.beta"] = self.beta
        return keys


def load_sweep(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read a sweep file (and extra fixed ``key=value`` overrides) and validate every cell."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} does not exist")
    try:
        table = tomllib.loads(path.read_text()).get("sweep")
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    if not isinstance(table, dict):
        raise ConfigError(
            f"{path}: no [sweep] table (methods = [...], betas = [...], seeds = [...])"
        )
    base = {k: v for k, v in load_toml(path).items() if not k.startswith("sweep.")}
    base.update(overrides or {})
    for key in GRID_KEYS:
        if key in base:
            raise ConfigError(f"{path}: {key!r} is set by the sweep grid; remove it from the file")
    methods = tuple(_list(path, table, "methods", str))
    for method in methods:
        if method not in METHODS:
            raise ConfigError(
                f"{path}: sweep.methods has {method!r}; allowed: {', '.join(METHODS)}"
            )
    betas = tuple(float(b) for b in _list(path, table, "betas", (int, float), default=[0.5]))
    seeds = tuple(_list(path, table, "seeds", int, default=[0]))
    root = Path(table.get("dir") or Path("runs") / f"sweep-{path.stem}")
    post = tuple(_list(path, table, "post", str)) if "post" in table else ()
    arms = _arms(path, table)
    arm_methods = tuple(_list(path, table, "arm-methods", str, default=list(ARM_METHODS)))
    spec = SweepSpec(
        methods, betas, seeds, root.expanduser().resolve(), base, post, arms, arm_methods
    )
    for cell in plan(spec):  # fail now on a bad key, not hours into the sweep
        from_flat(cell.overrides(spec.base))
    return spec


def subset(
    spec: SweepSpec,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    arms: Sequence[str] | None = None,
) -> SweepSpec:
    """Part of a sweep's grid: some of its methods and arms, and any seeds.

    Args:
        spec: The sweep as its file defines it.
        methods: Methods to keep (each one of the file's), or None for all.
        seeds: Seeds to run instead of the file's, or None for the file's.
        arms: Arms to keep (each one of the file's), or None for all.

    Raises:
        ConfigError: A method or arm the file does not define, or an empty selection.
    """
    for name, wanted, have in (("method", methods, spec.methods), ("arm", arms, spec.arms)):
        unknown = [w for w in wanted or () if w not in have]
        if unknown:
            raise ConfigError(
                f"--{name}s has {unknown[0]!r}, which the sweep file does not define; "
                f"allowed: {', '.join(have) or '(none)'}"
            )
    selections: dict[str, Sequence[object] | None] = {
        "methods": methods,
        "seeds": seeds,
        "arms": arms,
    }
    for name, selection in selections.items():
        if selection is not None and not selection:
            raise ConfigError(f"--{name} is empty; give at least one, comma-separated")
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds has duplicates: {list(seeds)}")
    return dataclasses.replace(
        spec,
        methods=tuple(m for m in spec.methods if methods is None or m in methods),
        seeds=tuple(seeds) if seeds is not None else spec.seeds,
        arms={k: v for k, v in spec.arms.items() if arms is None or k in arms},
    )


def elsewhere(spec: SweepSpec, root: str | Path | None = None, post: bool = True) -> SweepSpec:
    """The same grid in another directory (``root``) and/or without its post steps.

    The cells' run directories follow the new root; a probe (fewer rounds, no attacks)
    must not share a directory with the full cells it prunes for.
    """
    new_root = spec.root if root is None else Path(root).expanduser().resolve()
    if new_root.exists() and not new_root.is_dir():
        raise ConfigError(f"--dir {root}: exists and is not a directory")
    return dataclasses.replace(spec, root=new_root, post=spec.post if post else ())


@contextmanager
def sweep_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/.sweep.lock`` for the sweep's duration; refuse if another sweep does."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".sweep.lock"
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise ConfigError(
                f"another sweep is running in {root} (pid {holder}); wait for it, or run "
                "this one with another sweep.dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _arms(path: Path, table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``[sweep.arms.<name>]`` tables as flat keys (nested tables and dotted keys alike)."""
    arms = table.get("arms", {})
    if not isinstance(arms, dict) or not all(isinstance(v, dict) for v in arms.values()):
        raise ConfigError(f"{path}: sweep.arms must hold one table per arm, [sweep.arms.NAME]")
    flat: dict[str, dict[str, Any]] = {}
    for name, keys in arms.items():
        if not ARM_NAME.fullmatch(name):
            raise ConfigError(
                f"{path}: arm name {name!r} is invalid; allowed: lower-case letters, digits, "
                "'-', '_' and '.', starting with a letter or digit (it names directories)"
            )
        flat[name] = {}

        def walk(prefix: str, node: Mapping[str, Any], arm: str = name) -> None:
            for k, v in node.items():
                if isinstance(v, Mapping):
                    walk(f"{prefix}{k}.", v)
                else:
                    flat[arm][f"{prefix}{k}"] = v

        walk("", keys)
        for key in flat[name]:
            if key in GRID_KEYS:
                raise ConfigError(f"{path}: sweep.arms.{name} sets {key!r}, which the grid sets")
    return flat


def _list(path: Path, table: dict[str, Any], key: str, tp: Any, default: Any = None) -> list[Any]:
    values = table.get(key, default)
    if not isinstance(values, list) or not values or not all(isinstance(v, tp) for v in values):
        raise ConfigError(f"{path}: sweep.{key} must be a non-empty list, got {values!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{path}: sweep.{key} has duplicates: {values!r}")
    return values


def plan(spec: SweepSpec) -> list[Cell]:
    """Every cell of the grid but the no-op β cells (``NO_OP_BETAS``).

    Seed-major (then method, then arm, then β) so that an interrupted sweep already holds
    one complete comparison of all methods before it starts on the next seed.
    """
    cells = []
    no_arm: dict[str, dict[str, Any]] = {"": {}}
    for seed in spec.seeds:
        for method in spec.methods:
            betas: Sequence[float | None] = spec.betas if method in BETA_METHODS else (None,)
            arms = spec.arms if spec.arms and method in spec.arm_methods else no_arm
            for arm, keys in arms.items():
                for beta in betas:
                    if beta is not None and NO_OP_BETAS.get(method) == beta:
                        continue
                    cell = Cell(method, beta, seed, Path(), arm, tuple(keys.items()))
                    cells.append(dataclasses.replace(cell, run_dir=spec.root / cell.name))
    return cells


def command(cell: Cell, base: Mapping[str, Any]) -> list[str]:
    """The ``fedpit run`` command line of a cell."""
    items = [f"{k}={_value(v)}" for k, v in cell.overrides(base).items()]
    return [sys.executable, "-m", "fedpit", "run", *items]


def _value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def subprocess_runner(cmd: list[str], log: Path) -> int:
    """Run ``cmd``, echoing its output and copying it to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            fh.write(line)
            fh.flush()
        return proc.wait()


def cell_state(cell: Cell) -> str:
    """``done`` (summary.json exists), ``partial`` (an interrupted run) or ``pending``."""
    if (cell.run_dir / "summary.json").is_file():
        return DONE
    if cell.run_dir.exists():
        return "partial"
    return PENDING


def check_done_config(cell: Cell, base: Mapping[str, Any]) -> None:
    """Refuse to count a finished cell that was run with a different configuration."""
    config = cell.run_dir / "config.toml"
    if not config.is_file():
        return
    want = to_flat(from_flat(cell.overrides(base)))
    have = load_toml(config)
    diff = [k for k in want if k != "run-dir" and k in have and have[k] != want[k]]
    if diff:
        changes = ", ".join(f"{k}: {have[k]!r} → {want[k]!r}" for k in diff)
        raise ConfigError(
            f"{cell.run_dir} was run with a different configuration ({changes}); "
            "use another sweep dir or remove that cell"
        )


def resumable(cell: Cell, base: Mapping[str, Any]) -> bool:
    """Whether an interrupted cell can continue from its last completed round.

    It can when it saved a server state (federated methods do, after every round) and was
    run with this sweep's configuration.
    """
    if not (cell.run_dir / SERVER_STATE).is_file():
        return False
    try:
        check_done_config(cell, base)
    except ConfigError:
        return False
    return True


def resume_command(cell: Cell) -> list[str]:
    """``fedpit run --resume`` on the cell's run directory (its saved config.toml)."""
    return [sys.executable, "-m", "fedpit", "run", "--resume", str(cell.run_dir)]


def _remove_partial(cell: Cell) -> None:
    """Remove what an interrupted run left (only if it looks like a run directory)."""
    d = cell.run_dir
    if any(d.iterdir()) and not (d / "config.toml").is_file():
        raise ConfigError(f"{d} exists but is not a run directory; move it out of the sweep dir")
    shutil.rmtree(d)


def group_of(cell: Cell) -> str:
    """The cell's name without its seed: cells of one group take about as long."""
    return cell.name.rsplit("-s", 1)[0]


def remaining_seconds(measured: Mapping[str, Sequence[float]], pending: Sequence[Cell]) -> float:
    """Estimated wall time of the ``pending`` cells (run and post steps).

    Each pending cell counts the mean time measured for its group (:func:`group_of`),
    else the mean over every measured cell. ``nan`` when nothing was measured yet.
    """
    every = [t for times in measured.values() for t in times]
    if not every:
        return float("nan")
    overall = statistics.fmean(every)
    return sum(
        statistics.fmean(measured[g]) if measured.get(g) else overall
        for g in map(group_of, pending)
    )


def _progress(
    cells: list[Cell], status: dict[str, dict[str, Any]], measured: Mapping[str, list[float]]
) -> str:
    pending = [c for c in cells if status[c.name]["status"] != DONE]
    done = len(cells) - len(pending)
    left = remaining_seconds(measured, pending)
    eta = "" if math.isnan(left) or not pending else f", about {left / 60:.0f} min left"
    return f"[sweep] {done}/{len(cells)} cells done{eta}"


def run_sweep(spec: SweepSpec, runner: Runner = subprocess_runner) -> list[dict[str, Any]]:
    """Run every cell not yet done; write ``sweep.json`` after each change of status.

    Raises:
        ConfigError: Another sweep is running in the same directory.
    """
    with sweep_lock(spec.root):
        return _run_cells(spec, runner)


def _run_cells(spec: SweepSpec, runner: Runner) -> list[dict[str, Any]]:
    cells = plan(spec)
    status: dict[str, dict[str, Any]] = {
        c.name: {"status": cell_state(c), "returncode": None, "seconds": None, "post_failed": None}
        for c in cells
    }
    for cell in cells:
        if status[cell.name]["status"] == DONE:
            check_done_config(cell, spec.base)
    measured: dict[str, list[float]] = {}  # wall seconds (run + post) of cells run here
    for cell in cells:
        entry = status[cell.name]
        if entry["status"] != DONE and cell_state(cell) == DONE:  # finished since the start
            check_done_config(cell, spec.base)
            entry["status"] = DONE
        if entry["status"] == DONE:
            print(f"[sweep] {cell.name}: done, skipped", flush=True)
            entry["post_failed"] = run_post(spec, cell, runner)
            _write_status(spec, cells, status)
            continue
        interrupted = entry["status"] == "partial"
        entry["status"] = RUNNING
        _write_status(spec, cells, status)
        t0 = time.perf_counter()
        rc, finished = 0, False
        if interrupted and resumable(cell, spec.base):
            print(f"[sweep] {cell.name}: interrupted earlier, resuming", flush=True)
            rc = runner(resume_command(cell), spec.root / "logs" / f"{cell.name}.resume.log")
            finished = rc == 0 and cell_state(cell) == DONE
            if not finished:
                print(f"[sweep] {cell.name}: resume failed (exit {rc}), rerunning", flush=True)
        if not finished:
            if cell.run_dir.exists():
                _remove_partial(cell)
            print(f"[sweep] {cell.name}: running", flush=True)
            rc = runner(command(cell, spec.base), spec.root / "logs" / f"{cell.name}.log")
            finished = rc == 0 and cell_state(cell) == DONE
        entry.update(
            status=DONE if finished else FAILED,
            returncode=rc,
            seconds=round(time.perf_counter() - t0, 1),
        )
        _write_status(spec, cells, status)
        print(f"[sweep] {cell.name}: {entry['status']} (exit {rc})", flush=True)
        if finished:
            entry["post_failed"] = run_post(spec, cell, runner)
            _write_status(spec, cells, status)
            measured.setdefault(group_of(cell), []).append(time.perf_counter() - t0)
        print(_progress(cells, status, measured), flush=True)
    return _write_status(spec, cells, status)


def post_commands(spec: SweepSpec, cell: Cell) -> list[list[str]]:
    """The ``fedpit`` commands to run on a finished cell (``{run}`` = its run directory)."""
    return [
        [sys.executable, "-m", "fedpit", *shlex.split(step.replace("{run}", str(cell.run_dir)))]
        for step in spec.post
    ]


def run_post(spec: SweepSpec, cell: Cell, runner: Runner) -> str | None:
    """Run the post steps a finished cell has not done yet (each leaves a marker file).

    Returns:
        None when every step is done, else the failed step's log (later steps wait).
    """
    for i, cmd in enumerate(post_commands(spec, cell)):
        marker = cell.run_dir / f".sweep-post-{i}.done"
        if marker.exists():
            continue
        print(f"[sweep] {cell.name}: {' '.join(cmd[3:])}", flush=True)
        log = spec.root / "logs" / f"{cell.name}.post-{i}.log"
        rc = runner(cmd, log)
        if rc != 0:
            print(f"[sweep] {cell.name}: post step {i} failed (exit {rc}), see {log}", flush=True)
            return str(log)
        marker.write_text(" ".join(cmd[3:]) + "\n")
    return None


def _write_status(
    spec: SweepSpec, cells: list[Cell], status: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = [
        {
            "name": c.name,
            "method": c.method,
            "beta": c.beta,
            "seed": c.seed,
            "run_dir": str(c.run_dir),
            **status[c.name],
        }
        for c in cells
    ]
    spec.root.mkdir(parents=True, exist_ok=True)
    write_json(spec.root / "sweep.json", {"dir": str(spec.root), "base": spec.base, "cells": rows})
    return rows


def print_plan(spec: SweepSpec) -> None:
    """What a sweep would do, one line per cell, with the exact command."""
    cells = plan(spec)
    print(f"sweep dir: {spec.root} ({len(cells)} cells)")
    for cell in cells:
        state = cell_state(cell)
        action = {DONE: "skip (done)", "partial": "rerun (interrupted)", PENDING: "run"}[state]
        print(f"{cell.name:<24} {action:<20} {' '.join(command(cell, spec.base)[1:])}")
