"""``fedpit compare-leakage RUN_A RUN_B``: is one run's leakage really lower than another's?

Both runs must have been attacked on the same examples (same data split, ``--limit`` and
``--seed``: the cells of one sweep are). The per-example rows of ``attack/<target>.jsonl``
give, for each membership attack (raw loss, calibrated), the AUC difference A − B with a
paired bootstrap interval over the attacked examples, and the loss-gap difference.
Several pairs (one per seed) also give the mean difference over the pairs.

The rows quote generations, so ``fedpit report --save-runs`` archives a numbers-only
copy of them, ``attack/<target>.scores.jsonl`` (kind, example id, losses), which this
command reads when the full rows are absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedpit import jsonio
from fedpit.errors import DataError

if TYPE_CHECKING:
    from fedpit.eval.frontier import Curve

COMPARE_HELP = """\
Compare the membership-inference leakage of two attacked runs on the same examples:
AUC(A) − AUC(B) with a 95% paired bootstrap interval (resampling the attacked members
and non-members), raw and calibrated against the base model, and the difference of
their member/non-member loss gaps. An interval that contains 0 means the attacked
examples cannot tell the two apart. Needs `fedpit attack` rows of both runs (or the
numbers-only copies `fedpit report --save-runs` archives), e.g.:

  fedpit compare-leakage runs/sweep/fedavg-s0 runs/sweep/fedpit-b0.5-s0

More pairs, given as A1 B1 A2 B2 ..., are compared one by one and then together: the
mean of A − B over the pairs, with one bootstrap in which pairs attacked on the same
examples (the seeds of a sweep) are resampled alike:

  fedpit compare-leakage runs/sweep/fedavg-s0 runs/sweep/fedpit-b0.5-s0 \\
                         runs/sweep/fedavg-s1 runs/sweep/fedpit-b0.5-s1
"""

ROW_FIELDS = ("kind", "id", "loss", "base_loss")  # what a numbers-only copy keeps
SCORES = ".scores.jsonl"  # the suffix of a numbers-only copy of attack rows

Rows = dict[tuple[str, str], dict[str, Any]]


def rows_path(run_dir: Path, target: str) -> Path:
    """The attack rows of ``target``: the full ones, else their numbers-only copy."""
    from fedpit.eval.attack.runner import result_path  # the model stack: only when comparing

    full = result_path(run_dir, target).with_suffix(".jsonl")
    numbers = full.with_suffix(SCORES)
    return full if full.is_file() or not numbers.is_file() else numbers


def load_rows(run_dir: Path, target: str) -> Rows:
    """Member and non-member rows of ``attack/<target>.jsonl`` by (kind, example id)."""
    path = rows_path(run_dir, target)
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: run `fedpit attack {run_dir} --target {target}` first"
        )
    return parse_rows(path)


def parse_rows(path: Path) -> Rows:
    """The member and non-member rows with a loss in the JSONL file ``path``."""
    rows: Rows = {}
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: invalid JSON: {err.msg}") from None
            if row.get("kind") in ("member", "non_member") and row.get("loss") is not None:
                rows[(row["kind"], row["id"])] = row
    return rows


def numbers_only(path: Path) -> str:
    """The membership rows of attack rows ``path`` without text, as JSONL ("" if none).

    Keeps :data:`ROW_FIELDS`: the example ids are the dataset's row ids, no text.
    """
    rows = parse_rows(path)
    return "".join(
        jsonio.dumps({k: row[k] for k in ROW_FIELDS if k in row}) + "\n" for row in rows.values()
    )


def scores(rows: Rows, keys: list[tuple[str, str]], calibrated: bool) -> list[float]:
    """Attack scores of ``keys``: ``-loss``, or ``-(loss - base_loss)`` if calibrated."""
    return [-(rows[k]["loss"] - (rows[k]["base_loss"] if calibrated else 0.0)) for k in keys]


def example_keys(a: Rows, b: Rows) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (members, non-members) both runs were attacked on, in a fixed order."""
    if set(a) != set(b):
        raise DataError(
            f"the runs were attacked on different examples ({len(set(a) ^ set(b))} differ); "
            "attack both with the same --limit and --seed on the same data split"
        )
    members = sorted(k for k in a if k[0] == "member")
    non_members = sorted(k for k in a if k[0] == "non_member")
    if not members or not non_members:
        raise DataError("comparing needs attacked members and non-members in both runs")
    return members, non_members


# The two membership attacks: (result key, calibrated against the base?, printed label).
ATTACKS = (("auc", False, "MIA AUC"), ("auc_calibrated", True, "MIA AUC calibrated"))


def compare(a: Rows, b: Rows, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Paired comparison of two runs' attack rows (same examples required)."""
    from fedpit.eval.attack import mia

    members, non_members = example_keys(a, b)
    out: dict[str, Any] = {"n_members": len(members), "n_non_members": len(non_members)}
    for name, calibrated, _ in ATTACKS:
        pair = [
            (scores(r, members, calibrated), scores(r, non_members, calibrated)) for r in (a, b)
        ]
        diff, low, high = mia.paired_auc_difference(pair[0], pair[1], resamples, seed)
        out[name] = {
            "a": mia.auc(*pair[0]),
            "b": mia.auc(*pair[1]),
            "difference": diff,
            "interval": [low, high],
        }

    def gap(rows: Rows) -> float:
        return statistics.fmean(rows[k]["loss"] for k in non_members) - statistics.fmean(
            rows[k]["loss"] for k in members
        )

    out["loss_gap"] = {"a": gap(a), "b": gap(b), "difference": gap(a) - gap(b)}
    return out


def compare_mean(
    pairs: list[tuple[Rows, Rows]], resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Mean AUC difference A − B over ``pairs`` of runs, each pair on its own examples.

    Pairs attacked on the same examples share the bootstrap's resampling (see
    :func:`fedpit.eval.attack.mia.mean_paired_auc_difference`).
    """
    from fedpit.eval.attack import mia

    keys = [example_keys(a, b) for a, b in pairs]
    distinct: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]] = []
    for k in keys:
        if k not in distinct:
            distinct.append(k)
    labels = [distinct.index(k) for k in keys]
    out: dict[str, Any] = {"pairs": len(pairs), "example_sets": len(distinct)}
    for name, calibrated, _ in ATTACKS:
        attacks = [
            (
                (scores(a, m, calibrated), scores(a, n, calibrated)),
                (scores(b, m, calibrated), scores(b, n, calibrated)),
            )
            for (a, b), (m, n) in zip(pairs, keys, strict=True)
        ]
        diff, low, high = mia.mean_paired_auc_difference(attacks, labels, resamples, seed)
        out[name] = {"difference": diff, "interval": [low, high]}
    return out


def add_paired_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    description: str,
    runs_help: str,
) -> argparse.ArgumentParser:
    """A ``fedpit`` subcommand over run pairs (A B, or A1 B1 A2 B2 ...) with a bootstrap."""
    cmd = subparsers.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("runs", metavar="RUN_A RUN_B", nargs="+", type=Path, help=runs_help)
    cmd.add_argument("--resamples", type=int, default=2000, metavar="N")
    cmd.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    return cmd


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``compare-leakage`` to the ``fedpit`` command line."""
    cmd = add_paired_command(
        subparsers,
        "compare-leakage",
        "paired comparison of two runs' membership-inference leakage",
        COMPARE_HELP,
        "two attacked runs, or more pairs A1 B1 A2 B2 ... (one per seed)",
    )
    cmd.add_argument("--target", default="global", help="attacked target of both (default: global)")
    cmd.set_defaults(func=cmd_compare)


def load_curves(run_dir: Path) -> tuple[Curve, Curve] | None:
    """A finished federated run's per-round curves (raw, calibrated scores), or None.

    Round 0 is the base model. Needs the per-example test losses of every round in
    ``metrics.jsonl`` and the attack rows of the base model and of every round
    (``fedpit attack --all-rounds``); None when any is missing or the rounds were
    attacked on different examples.
    """
    import numpy as np

    from fedpit.eval.frontier import Curve
    from fedpit.runs.rundir import RunDir, read_jsonl

    def curve(calibrated: bool) -> Curve:
        return Curve(
            test,
            np.array([scores(x, members, calibrated) for x in rows]),
            np.array([scores(x, non_members, calibrated) for x in rows]),
        )

    rd = RunDir(Path(run_dir))
    if not rd.summary.is_file() or not rd.metrics.is_file():
        return None
    summary = json.loads(rd.summary.read_text())
    final = int(summary.get("rounds", 0))
    metrics = {int(row["round"]): row for row in read_jsonl(rd.metrics)}
    rounds = range(final + 1)
    if not final or any("test_losses" not in metrics.get(r, {}) for r in rounds):
        return None

    def target(r: int) -> str:
        if r == 0:
            return "base"
        last = r == final and not rows_path(rd.root, f"round:{r}").is_file()
        return "global" if last else f"round:{r}"

    try:
        rows = [load_rows(rd.root, target(r)) for r in rounds]
        members, non_members = example_keys(rows[0], rows[0])
        for other in rows[1:]:
            example_keys(rows[0], other)
    except DataError:
        return None
    test = np.array([metrics[r]["test_losses"] for r in rounds], dtype=float)
    return curve(False), curve(True)


def print_matched(runs: list[Path], resamples: int, seed: int) -> None:
    """B against A at matched utility, when both runs have per-round curves."""
    from fedpit.eval.frontier import matched_difference

    def fmt(value: tuple[float, float, float] | None) -> str:
        if value is None:
            return "not reached (A's curve never has B's test loss)"
        return f"{value[0]:+.3f}  95% interval [{value[1]:+.3f}, {value[2]:+.3f}]"

    loaded = [load_curves(r) for r in runs]  # each run's files read once
    if any(c is None for c in loaded):
        print("\nMatched utility: needs per-example test losses and `fedpit attack --all-rounds`")
        return
    curves = [c for c in loaded if c is not None]
    results = {}
    for calibrated in (False, True):
        pairs = [
            (a[calibrated], b[calibrated]) for a, b in zip(curves[::2], curves[1::2], strict=True)
        ]
        try:
            results[calibrated] = matched_difference(pairs, resamples=resamples, seed=seed)
        except ValueError as err:
            print(f"\nMatched utility: {err}")
            return
    over = "" if len(runs) == 2 else f" (mean over the {len(runs) // 2} pairs)"
    print(f"\nAt matched utility{over}: B's final model against A's per-round curve")
    print(f"{'test loss':<19} B−A {fmt(results[False].test_loss)}")
    print(f"{'MIA AUC':<19} B−A(at B's loss) {fmt(results[False].leakage)}")
    print(f"{'MIA AUC calibrated':<19} B−A(at B's loss) {fmt(results[True].leakage)}")


def cmd_compare(args: argparse.Namespace) -> int:
    """Print each pair's comparison, then the mean over the pairs if there are several."""
    if args.resamples < 100:
        raise DataError("--resamples must be at least 100")
    if len(args.runs) % 2:
        raise DataError(
            f"compare-leakage takes runs in pairs (RUN_A RUN_B, or A1 B1 A2 B2 ...); "
            f"got {len(args.runs)} runs"
        )
    runs = [load_rows(run, args.target) for run in args.runs]
    pairs = list(zip(runs[::2], runs[1::2], strict=True))
    for i, (a, b) in enumerate(pairs):
        if i:
            print()
        print(f"A = {args.runs[2 * i]}\nB = {args.runs[2 * i + 1]}")
        print_comparison(compare(a, b, args.resamples, args.seed))
    if len(pairs) > 1:
        mean = compare_mean(pairs, args.resamples, args.seed)
        shared = "the same examples" if mean["example_sets"] == 1 else "their own examples"
        print(f"\nMean over the {len(pairs)} pairs (each attacked on {shared}):")
        for name, _, label in ATTACKS:
            r = mean[name]
            lo, hi = r["interval"]
            print(f"{label:<19} A−B {r['difference']:+.3f}  95% interval [{lo:+.3f}, {hi:+.3f}]")
    if args.target == "global":
        print_matched(args.runs, args.resamples, args.seed)
    return 0


def print_comparison(result: dict[str, Any]) -> None:
    """Print one pair's :func:`compare` result."""
    print(f"{result['n_members']} members vs {result['n_non_members']} non-members, both runs")
    for name, _, label in ATTACKS:
        r = result[name]
        lo, hi = r["interval"]
        print(
            f"{label:<19} A {r['a']:.3f}  B {r['b']:.3f}  A−B {r['difference']:+.3f}  "
            f"95% interval [{lo:+.3f}, {hi:+.3f}]"
        )
    g = result["loss_gap"]
    print(f"{'loss gap (nats)':<19} A {g['a']:.3f}  B {g['b']:.3f}  A−B {g['difference']:+.3f}")
