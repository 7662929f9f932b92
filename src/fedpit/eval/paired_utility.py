"""``fedpit compare-utility RUN_A RUN_B``: is one run more useful than another, round by round?

Every federated run records each held-out test example's loss after every round
(``test_losses`` in ``metrics.jsonl``, round 0 = the base model). Two runs of one sweep are
tested on the same examples, so their difference is paired: this command gives, per
round, B's mean test loss minus A's with a 95% paired bootstrap interval over the test
examples, beside each run's SynGen yield (kept / attempts, selected) and SynGen seconds.
Several pairs (one per seed) give the mean difference over the pairs, resampling the
shared test examples alike, and a Student-t interval over the seeds: the examples'
interval leaves out how much a rerun varies (two runs differing only in what SynGen
sampled differ by more than it says). It needs no attack, so it is what a short probe of
a study arm reports (``fedpit sweep … fed.rounds=2 --no-post``).

:func:`paired_loss_difference` is the pure part: arrays in, numbers out.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpit.errors import DataError
from fedpit.eval.compare import add_paired_command

HELP = """\
Compare the held-out test loss of two runs of one sweep on the same test examples, round
by round: B − A with a 95% paired bootstrap interval (an interval below 0 says B is more
useful), and each run's SynGen counts per round. More pairs, given as A1 B1 A2 B2 ...
(one per seed), are averaged, e.g.:

  fedpit compare-utility runs/probe/fedpit-sampled-random-b0.5-s0 \\
                         runs/probe/fedpit-random-top-p-b0.5-s0
"""

Interval = tuple[float, float, float]


def paired_loss_difference(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Mean over ``pairs`` of mean(B − A) over the test examples, with a bootstrap interval.

    Args:
        pairs: ``(A, B)`` per seed: each a 1-d array of per-example test losses, all on
            the same test examples in the same order (one resampling serves all pairs).
        resamples: Bootstrap resamples of the test examples.
        seed: Seed of the resampling.
        level: Coverage of the percentile interval.

    Returns:
        (mean difference, low, high).
    """
    if not pairs:
        raise ValueError("a paired comparison needs at least one pair of runs")
    shapes = {np.shape(x) for pair in pairs for x in pair}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1 or not next(iter(shapes))[0]:
        raise ValueError("every run of the pairs needs losses on the same, non-empty test set")
    diffs = np.array([np.asarray(b, float) - np.asarray(a, float) for a, b in pairs])
    per_example = diffs.mean(axis=0)  # the mean over pairs, example by example
    rng = np.random.default_rng(seed)
    n = per_example.shape[0]
    draws = per_example[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(per_example.mean()), float(low), float(high)


def seed_interval(differences: Sequence[float], level: float = 0.95) -> Interval | None:
    """Mean of per-seed differences with a Student-t interval over the seeds (pure).

    The bootstrap of :func:`paired_loss_difference` resamples test examples only: two
    runs of one configuration that differ only in what SynGen sampled already differ by
    more than its interval says. Seeds are the runs' replicates; this interval treats
    them as such. None for fewer than two seeds.
    """
    from scipy.stats import t

    if len(differences) < 2:
        return None
    x = np.asarray(differences, float)
    half = float(t.ppf(0.5 + level / 2, len(x) - 1)) * float(x.std(ddof=1)) / np.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


@dataclass(frozen=True)
class RoundRecord:
    """What one round of a run left in ``metrics.jsonl``."""

    test_losses: np.ndarray
    attempts: float | None  # SynGen counters summed over the round's clients (None: none)
    kept: float | None
    selected: float | None
    synth_seconds: float | None  # mean over the round's clients


def load_rounds(run_dir: Path) -> dict[int, RoundRecord]:
    """Each round with per-example test losses in ``run_dir/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{run_dir}: no metrics.jsonl (is it a run directory of fedpit run?)")
    out: dict[int, RoundRecord] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{line_no}: not JSON") from None
        if "test_losses" not in row:
            continue
        clients = row.get("clients") or {}
        out[int(row["round"])] = RoundRecord(
            np.asarray(row["test_losses"], float),
            clients.get("synth-attempts"),
            clients.get("synth-kept"),
            clients.get("synth-selected"),
            clients.get("seconds-synth"),
        )
    if not out:
        raise DataError(f"{path}: no per-example test losses (a run of an older version?)")
    return out


def _count(values: list[float | None], digits: int = 0) -> str:
    if any(v is None for v in values):
        return "—"
    return f"{float(np.mean([v for v in values if v is not None])):.{digits}f}"


def cmd_compare_utility(args: argparse.Namespace) -> int:
    """Print B − A per round common to every run, and the SynGen counts of both sides."""
    if len(args.runs) < 2 or len(args.runs) % 2:
        raise DataError(
            f"compare-utility takes runs in pairs (RUN_A RUN_B, or A1 B1 A2 B2 ...); "
            f"got {len(args.runs)}"
        )
    if args.resamples < 100:
        raise DataError("--resamples must be at least 100")
    loaded = [load_rounds(r) for r in args.runs]
    rounds = sorted(set.intersection(*(set(x) for x in loaded)))
    sizes = {x[r].test_losses.shape for x in loaded for r in rounds}
    if len(sizes) != 1:
        raise DataError(
            "the runs were tested on different test sets "
            f"({', '.join(str(s[0]) for s in sorted(sizes))} examples): not comparable"
        )
    side_a, side_b = loaded[::2], loaded[1::2]
    print(f"A = {', '.join(str(r) for r in args.runs[::2])}")
    print(f"B = {', '.join(str(r) for r in args.runs[1::2])}")
    over = "" if len(side_a) == 1 else f" (means over the {len(side_a)} pairs)"
    print(f"held-out test loss, {sizes.pop()[0]} examples{over}; SynGen kept/attempts, selected")
    print(f"{'round':>5}  {'A':>6}  {'B':>6}  {'B − A [95%]':<26} {'A synth':<20} B synth")
    for r in rounds:
        pairs = [(a[r].test_losses, b[r].test_losses) for a, b in zip(side_a, side_b, strict=True)]
        diff, low, high = paired_loss_difference(pairs, args.resamples, args.seed)

        def synth(side: list[dict[int, RoundRecord]], rnd: int = r) -> str:
            recs = [x[rnd] for x in side]
            if all(not x.attempts for x in recs):  # no SynGen (a baseline, or round 0)
                return "—"
            kept = _count([x.kept for x in recs])
            return (
                f"{kept}/{_count([x.attempts for x in recs])}, {_count([x.selected for x in recs])}"
                f" ({_count([x.synth_seconds for x in recs])} s)"
            )

        mean_a = np.mean([a[r].test_losses.mean() for a in side_a])
        mean_b = np.mean([b[r].test_losses.mean() for b in side_b])
        cell = f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"
        per_seed = seed_interval([float((b - a).mean()) for a, b in pairs])
        row = f"{r:>5}  {mean_a:6.3f}  {mean_b:6.3f}  {cell:<26} {synth(side_a):<20}"
        tail = (
            "" if per_seed is None else f" [{per_seed[1]:+.4f}, {per_seed[2]:+.4f}] over seeds (t)"
        )
        print(f"{row} {synth(side_b):<20}{tail}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``compare-utility`` to the ``fedpit`` command line."""
    add_paired_command(
        subparsers,
        "compare-utility",
        "paired comparison of two runs' held-out test loss, round by round",
        HELP,
        "two runs of one sweep, or more pairs A1 B1 A2 B2 ... (one per seed)",
    ).set_defaults(func=cmd_compare_utility)
