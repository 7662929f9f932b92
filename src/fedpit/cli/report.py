"""``fedpit sweep`` and ``fedpit report``: the command-line entry points of this package."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedpit.errors import ConfigError

SWEEP_HELP = """\
Run a grid of `fedpit run` jobs (methods × arms × β × seeds), each in its own subprocess.

CONFIG.toml holds a [sweep] table (methods = [...], betas = [...], seeds = [...],
optional dir = "runs/sweep-NAME", optional post = ["attack {run} ...", ...]), optional
[sweep.arms.NAME] tables (keys of one study arm, applied to the self-generating methods
or to sweep.arm-methods = [...]) and any fixed configuration keys. β only varies for
fedpit, fedpit-v1 and fedavg-damped. Rerunning the command resumes: finished cells are
skipped, an interrupted federated cell continues from its last completed round (other
interrupted cells are removed and rerun), and post steps a cell has not done yet run.
Status: <dir>/sweep.json; logs: <dir>/logs/.

A short probe of some arms (one seed, two rounds, no attacks) in its own directory:

  fedpit sweep configs/study-syngen.toml fed.rounds=2 --dir runs/probe-syngen --no-post \
               --seeds 0 --methods fedpit --arms random-top-p,random-public-lr2
"""

REPORT_HELP = """\
Write report.html, report.md and PNG plots from run directories (or sweep directories,
whose run directories are read). Only the run directories' result files are read.

With --save-runs, the files the report read (configuration, summary, per-round metrics,
eval/attack summaries: numbers, no example texts, no adapters) are also copied to
OUT/runs/<run>/, so that `fedpit report OUT/runs --out OUT` rebuilds it later, e.g.:

  fedpit report runs/sweep-experiment-medquad --out results/experiment-medquad --save-runs
"""


def cmd_sweep(args: argparse.Namespace) -> int:
    """``fedpit sweep CONFIG.toml [key=value ...] [--dry-run]``."""
    from fedpit.config.load import parse_overrides
    from fedpit.runs.sweep import FAILED, elsewhere, load_sweep, print_plan, run_sweep, subset

    spec = subset(
        load_sweep(args.config, parse_overrides(args.overrides)),
        methods=_names(args.methods),
        seeds=_seeds(args.seeds),
        arms=_names(args.arms),
    )
    spec = elsewhere(spec, args.dir, post=not args.no_post)
    print_plan(spec)
    if args.dry_run:
        return 0
    cells = run_sweep(spec)
    failed = [c["name"] for c in cells if c["status"] == FAILED]
    post_failed = [c["name"] for c in cells if c.get("post_failed")]
    done = len(cells) - len(failed)
    print(f"[sweep] {done}/{len(cells)} cells done; status in {spec.root / 'sweep.json'}")
    if failed:
        print(f"[sweep] failed: {', '.join(failed)} (logs in {spec.root / 'logs'})")
    if post_failed:
        print(f"[sweep] post steps failed: {', '.join(post_failed)} (rerun the sweep to retry)")
    return 1 if failed or post_failed else 0


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def _seeds(text: str | None) -> list[int] | None:
    names = _names(text)
    if names is None:
        return None
    try:
        return [int(x) for x in names]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give integers, comma-separated, e.g. 1,2") from None


def cmd_report(args: argparse.Namespace) -> int:
    """``fedpit report RUN_DIR_OR_SWEEP_DIR ... --out DIR``."""
    from fedpit.errors import FedPITError
    from fedpit.report.collect import collect_runs
    from fedpit.report.render import render

    runs = collect_runs([Path(p) for p in args.paths])
    if args.finished_only:
        left_out = [r.name for r in runs if not r.finished]
        runs = [r for r in runs if r.finished]
        if left_out:
            print(f"left out (no summary.json yet): {', '.join(left_out)}")
        if not runs:
            raise FedPITError("no finished run to report (--finished-only)")
    html_path, md_path = render(runs, Path(args.out))
    print(f"report of {len(runs)} runs: {html_path} and {md_path}")
    if args.save_runs:
        from fedpit.report.archive import save_summaries

        saved = save_summaries(runs, Path(args.out) / "runs")
        print(f"summary files of {len(saved)} runs copied to {Path(args.out) / 'runs'}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``sweep`` and ``report`` to the ``fedpit`` command's subparsers."""
    sweep = subparsers.add_parser(
        "sweep",
        help="run a grid of jobs (methods × β × seeds), resumable",
        description=SWEEP_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("config", metavar="CONFIG.toml", help="sweep file with a [sweep] table")
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="fixed configuration keys")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    sweep.add_argument(
        "--methods", metavar="A,B", help="run only these of the file's methods (comma-separated)"
    )
    sweep.add_argument(
        "--arms", metavar="A,B", help="run only these of the file's arms (comma-separated)"
    )
    sweep.add_argument(
        "--seeds", metavar="0,1,2", help="run these seeds instead of the file's (comma-separated)"
    )
    sweep.add_argument(
        "--dir",
        metavar="DIR",
        help="run the cells in DIR instead of the file's sweep.dir (e.g. a short probe)",
    )
    sweep.add_argument(
        "--no-post", action="store_true", help="skip the file's post steps (attacks, evals)"
    )
    sweep.set_defaults(func=cmd_sweep)
    report = subparsers.add_parser(
        "report",
        help="HTML + Markdown report with plots from run directories",
        description=REPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_SWEEP_DIR")
    report.add_argument("--out", required=True, metavar="DIR", help="output directory")
    report.add_argument(
        "--finished-only",
        action="store_true",
        help="leave out runs without summary.json (still running or interrupted)",
    )
    report.add_argument(
        "--save-runs",
        action="store_true",
        help="also copy each run's summary files (no texts, no adapters) to OUT/runs/<run>/",
    )
    report.set_defaults(func=cmd_report)
