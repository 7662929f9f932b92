"""``fedpit compare-leakage RUN_A RUN_B``: is one run's leakage really lower than another's?

Both runs must have been attacked on the same examples (same data split, ``--limit`` and
``--seed``: the cells of one sweep are). The per-example rows of ``attack/<target>.jsonl``
give, for each membership attack (raw loss, calibrated), the AUC difference A − B with a
paired bootstrap interval over the attacked examples, and the loss-gap difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from fedpit.errors import DataError

COMPARE_HELP = """\
Compare the membership-inference leakage of two attacked runs on the same examples:
AUC(A) − AUC(B) with a 95% paired bootstrap interval (resampling the attacked members
and non-members), raw and calibrated against the base model, and the difference of
their member/non-member loss gaps. An interval that contains 0 means the attacked
examples cannot tell the two apart. Needs `fedpit attack` rows of both runs, e.g.:

  fedpit compare-leakage runs/sweep/fedavg-s0 runs/sweep/fedpit-b0.5-s0
"""

Rows = dict[tuple[str, str], dict[str, Any]]


def load_rows(run_dir: Path, target: str) -> Rows:
    """Member and non-member rows of ``attack/<target>.jsonl`` by (kind, example id)."""
    from fedpit.eval.attack import result_path  # the model stack: only when comparing

    path = result_path(run_dir, target).with_suffix(".jsonl")
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: run `fedpit attack {run_dir} --target {target}` first"
        )
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


def scores(rows: Rows, keys: list[tuple[str, str]], calibrated: bool) -> list[float]:
    """Attack scores of ``keys``: ``-loss``, or ``-(loss - base_loss)`` if calibrated."""
    return [-(rows[k]["loss"] - (rows[k]["base_loss"] if calibrated else 0.0)) for k in keys]


def compare(a: Rows, b: Rows, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Paired comparison of two runs' attack rows (same examples required)."""
    from fedpit.eval import mia

    if set(a) != set(b):
        raise DataError(
            f"the runs were attacked on different examples ({len(set(a) ^ set(b))} differ); "
            "attack both with the same --limit and --seed on the same data split"
        )
    members = sorted(k for k in a if k[0] == "member")
    non_members = sorted(k for k in a if k[0] == "non_member")
    if not members or not non_members:
        raise DataError("comparing needs attacked members and non-members in both runs")
    out: dict[str, Any] = {"n_members": len(members), "n_non_members": len(non_members)}
    for name, calibrated in (("auc", False), ("auc_calibrated", True)):
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


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compare-leakage`` to the ``fedpit`` command line."""
    cmd = subparsers.add_parser(
        "compare-leakage",
        help="paired comparison of two runs' membership-inference leakage",
        description=COMPARE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("run_a", metavar="RUN_A", type=Path)
    cmd.add_argument("run_b", metavar="RUN_B", type=Path)
    cmd.add_argument("--target", default="global", help="attacked target of both (default: global)")
    cmd.add_argument("--resamples", type=int, default=2000, metavar="N")
    cmd.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    cmd.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    """Print the comparison; ``--target`` names the attacked model in both runs."""
    if args.resamples < 100:
        raise DataError("--resamples must be at least 100")
    result = compare(
        load_rows(args.run_a, args.target),
        load_rows(args.run_b, args.target),
        args.resamples,
        args.seed,
    )
    print(f"A = {args.run_a}\nB = {args.run_b}")
    print(f"{result['n_members']} members vs {result['n_non_members']} non-members, both runs")
    for name, label in (("auc", "MIA AUC"), ("auc_calibrated", "MIA AUC calibrated")):
        r = result[name]
        lo, hi = r["interval"]
        print(
            f"{label:<19} A {r['a']:.3f}  B {r['b']:.3f}  A−B {r['difference']:+.3f}  "
            f"95% interval [{lo:+.3f}, {hi:+.3f}]"
        )
    g = result["loss_gap"]
    print(f"{'loss gap (nats)':<19} A {g['a']:.3f}  B {g['b']:.3f}  A−B {g['difference']:+.3f}")
    return 0
