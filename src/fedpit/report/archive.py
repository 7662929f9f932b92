"""Keep the small result files of runs beside their report, so it can be rebuilt later.

A run directory holds adapters (megabytes each) and text: synthetic examples and the
per-example ``.jsonl`` rows of ``eval``/``attack``, which quote private training examples.
The report reads neither. :func:`save_summaries` copies exactly what it reads — the
configuration, the summary, the per-round metrics and the ``eval``/``attack`` summaries
(numbers only) — into ``DEST/<run>/``, fit to be committed next to the report. Of the
attack rows it keeps a numbers-only copy (``attack/<target>.scores.jsonl``: example ids
and losses), so ``fedpit compare-leakage`` can compare archived runs too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedpit.eval.compare import SCORES, numbers_only
from fedpit.report.collect import RunRecord
from fedpit.runs.rundir import write_atomic

TOP_FILES = ("config.toml", "summary.json", "metrics.jsonl")
SUMMARY_DIRS = ("eval", "attack")  # only their *.json summaries, never the .jsonl rows


def summary_files(run_dir: Path) -> list[Path]:
    """The files of ``run_dir`` the report reads (paths relative to it)."""
    files = [Path(name) for name in TOP_FILES if (run_dir / name).is_file()]
    for folder in SUMMARY_DIRS:
        files += sorted(p.relative_to(run_dir) for p in (run_dir / folder).glob("*.json"))
    return files


def save_summaries(runs: Sequence[RunRecord], dest: Path) -> list[Path]:
    """Copy each run's summary files to ``dest/<run name>/``; return the directories written.

    A run that already lives at its destination (a report rebuilt from its own archive)
    is left as it is. Files the run no longer has are not deleted from the archive.
    """
    written = []
    for run in runs:
        target = Path(dest) / run.name
        if target.resolve() == Path(run.path).resolve():
            continue
        for rel in summary_files(run.path):
            write_atomic(target / rel, (run.path / rel).read_text())
        for rows in sorted((run.path / "attack").glob("*.jsonl")):
            copy = rows if rows.name.endswith(SCORES) else rows.with_suffix(SCORES)
            text = numbers_only(rows)  # of full rows or of an archive's copy: the same
            if text:
                write_atomic(target / "attack" / copy.name, text)
        written.append(target)
    return written
