"""The report's paired leakage table: each method's MIA AUC minus a reference's, same examples.

The references are FedAvg and, for the β methods, the damped control at the same β.

The main table's ± over seeds cannot say whether two methods differ on the attacked
examples: every seed attacks the same examples, so example-to-example noise is shared.
This table pairs each method's final global model with FedAvg's of the same seed, reads
both runs' per-example attack rows (full, or the numbers-only copy an archive keeps) and
gives the mean difference over the paired seeds with a paired bootstrap interval
(:func:`fedpit.eval.compare.compare_mean`). Runs without rows, or attacked on other
examples than their FedAvg partner, are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedpit.errors import DataError
from fedpit.eval.compare import Rows, compare_mean, example_keys, load_rows
from fedpit.report.collect import CONTROL, RunRecord, by_group

REFERENCE = "fedavg"
TARGET = "global"  # the final global model


@dataclass(frozen=True)
class PairedRow:
    """One method's leakage relative to the reference, over ``seeds`` paired seeds."""

    group: str
    reference: str
    seeds: list[int]
    auc: tuple[float, float, float]  # (mean difference, low, high)
    auc_calibrated: tuple[float, float, float]


def _rows(run: RunRecord) -> Rows | None:
    try:
        return load_rows(run.path, TARGET)
    except DataError:
        return None


def _comparable(a: Rows, b: Rows) -> bool:
    """Whether compare-leakage can pair the two (same examples, members and non-members)."""
    try:
        example_keys(a, b)
    except DataError:
        return False
    return True


def paired_rows(
    runs: list[RunRecord], reference: str = REFERENCE, resamples: int = 2000
) -> list[PairedRow]:
    """Every other group's MIA AUC minus the ``reference`` group's, paired by seed."""
    groups = by_group([r for r in runs if r.finished])
    ref_rows = {r.seed: rows for r in groups.get(reference, []) if (rows := _rows(r))}
    out = []
    for group, members in groups.items():
        if group == reference:
            continue
        seeds, pairs = [], []
        for run in members:
            partner = ref_rows.get(run.seed)
            rows = _rows(run) if partner is not None else None
            if partner is not None and rows is not None and _comparable(rows, partner):
                seeds.append(run.seed)
                pairs.append((rows, partner))
        if not pairs:
            continue
        result = compare_mean(pairs, resamples)
        auc, cal = result["auc"], result["auc_calibrated"]
        out.append(
            PairedRow(
                group,
                reference,
                seeds,
                (auc["difference"], *auc["interval"]),
                (cal["difference"], *cal["interval"]),
            )
        )
    return out


def control_rows(runs: list[RunRecord], resamples: int = 2000) -> list[PairedRow]:
    """Each β method's AUC minus that of its control (``fedavg-damped`` at the same β)."""
    out = []
    for control in sorted({r.group for r in runs if r.finished and r.method == CONTROL}):
        controlled = {r.group for r in runs if r.control_group == control}
        out += [row for row in paired_rows(runs, control, resamples) if row.group in controlled]
    return out


HEADER = ["method", "vs", "seeds", "Δ MIA AUC [95%]", "Δ MIA AUC calibrated [95%]"]


def table(rows: list[PairedRow]) -> list[list[str]]:
    """The cells of the paired table, in :data:`HEADER` order."""

    def cell(value: tuple[float, float, float]) -> str:
        diff, low, high = value
        return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]"

    return [
        [r.group, r.reference, ", ".join(map(str, r.seeds)), cell(r.auc), cell(r.auc_calibrated)]
        for r in rows
    ]


NOTE = (
    "Δ = the method's MIA AUC minus the reference's (vs: FedAvg, or fedavg-damped at the same "
    "β: FedPIT's upload without synthetic data), final global models, on the same attacked "
    "members and non-members, averaged over the seeds both were run with. Interval: 95% "
    "paired bootstrap over the attacked examples, the seeds resampled alike (they share the "
    "examples). Below 0: the method leaks less than the reference on these examples; an "
    "interval containing 0 cannot tell them apart. Leakage alone can reward training less: "
    "see the matched-utility table."
)
