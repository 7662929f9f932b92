"""The report's headline: leakage at matched utility, against FedAvg and the damped control.

A method that leaks less may simply train less. For each method and each reference —
FedAvg, and ``fedavg-damped`` at the same β (FedPIT's upload without any synthetic data)
— this table pairs the runs of the same seed and gives, averaged over the paired seeds,
the final test-loss difference (paired on the held-out examples) and the MIA AUC
difference *at matched utility*: the method's final AUC minus the reference's AUC where
the reference's per-round curve reaches the method's final test loss
(:mod:`fedpit.eval.frontier`). Both directions are listed: a row "A vs B" reads B's
curve at A's final utility.

Needs per-example test losses in ``metrics.jsonl`` (runs from this version on) and the
per-example attack rows of every round (``fedpit attack --all-rounds``; the numbers-only
copies an archive keeps do). Pairs lacking either are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedpit.eval.compare import load_curves
from fedpit.eval.frontier import Curve, leakage_at, matched_difference
from fedpit.report.collect import RunRecord, by_group

Interval = tuple[float, float, float]


@dataclass(frozen=True)
class RunCurves:
    """One run's per-round curves: raw and calibrated attack scores, canary log-probs."""

    raw: Curve
    calibrated: Curve
    canary: list[float | None]  # mean canary log-probability per round (None: none planted)


@dataclass(frozen=True)
class MatchedRow:
    """A method against a reference, over the paired seeds."""

    method: str
    reference: str
    seeds: list[int]
    test_loss: Interval
    auc: Interval | None  # None: the reference's curve never reaches the method's utility
    auc_calibrated: Interval | None
    canary: float | None  # canary log-prob difference at matched utility (nan: no canaries)


def run_curves(run: RunRecord) -> RunCurves | None:
    """The per-round curves of a finished federated run, or None if something is missing."""
    curves = load_curves(run.path)
    if curves is None:
        return None
    raw, calibrated = curves
    rounds = range(raw.test_losses.shape[0])
    by_round = {a.round: a for a in run.attacks if a.round is not None}
    base = next((a for a in run.attacks if a.target == "base"), None)
    canary = [
        (base.canary_logprob if base else None)
        if r == 0
        else (by_round[r].canary_logprob if r in by_round else None)
        for r in rounds
    ]
    return RunCurves(raw, calibrated, canary)


def _references(run: RunRecord) -> list[str]:
    """The groups a run is compared against: FedAvg, and the damped control at its β."""
    control = run.control_group
    return ["fedavg"] if control is None else ["fedavg", control]


def _canary_difference(a: RunCurves, b: RunCurves) -> float | None:
    """B's final canary log-probability minus A's at B's utility (a point estimate).

    nan when the runs have no canary scores; None when A's curve never reaches B's utility.
    """
    if any(c is None for c in a.canary) or b.canary[-1] is None:
        return math.nan
    u_a = list(a.raw.test_losses.mean(axis=1))
    u_b = float(b.raw.test_losses[-1].mean())
    matched = leakage_at(u_a, [float(c) for c in a.canary if c is not None], u_b)
    return None if matched is None else float(b.canary[-1]) - matched


def matched_rows(runs: list[RunRecord], resamples: int = 1000) -> list[MatchedRow]:
    """Every method against FedAvg and the damped control at its β, both directions."""
    groups = by_group([r for r in runs if r.finished and r.config.is_federated])
    curves: dict[str, dict[int, RunCurves]] = {}
    for group, members in groups.items():
        curves[group] = {r.seed: c for r in members if (c := run_curves(r)) is not None}
    out: list[MatchedRow] = []
    for group, members in groups.items():
        for ref in _references(members[0]):
            if ref == group or ref not in curves:
                continue
            for method, reference in ((group, ref), (ref, group)):
                row = _row(method, reference, curves[method], curves[reference], resamples)
                if row is not None and row not in out:
                    out.append(row)
    return out


def _row(
    method: str,
    reference: str,
    mine: dict[int, RunCurves],
    theirs: dict[int, RunCurves],
    resamples: int,
) -> MatchedRow | None:
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    try:
        raw = matched_difference([(theirs[s].raw, mine[s].raw) for s in seeds], resamples=resamples)
        cal = matched_difference(
            [(theirs[s].calibrated, mine[s].calibrated) for s in seeds], resamples=resamples
        )
    except ValueError:  # attacked or tested on other examples
        return None
    canaries = [_canary_difference(theirs[s], mine[s]) for s in seeds]
    reached = [c for c in canaries if c is not None]
    canary = float(np.mean(reached)) if len(reached) == len(canaries) else None
    return MatchedRow(method, reference, seeds, raw.test_loss, raw.leakage, cal.leakage, canary)


HEADER = [
    "method",
    "vs (curve read at the method's test loss)",
    "seeds",
    "Δ test loss [95%]",
    "Δ MIA AUC at matched utility [95%]",
    "calibrated [95%]",
    "Δ canary log-prob at matched utility",
]


def table(rows: list[MatchedRow]) -> list[list[str]]:
    """The cells of the matched-utility table, in :data:`HEADER` order."""

    def cell(value: Interval | None) -> str:
        if value is None:
            return "not reached"
        diff, low, high = value
        return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]"

    return [
        [
            r.method,
            r.reference,
            ", ".join(map(str, r.seeds)),
            cell(r.test_loss),
            cell(r.auc),
            cell(r.auc_calibrated),
            "not reached"
            if r.canary is None
            else ("—" if math.isnan(r.canary) else f"{r.canary:+.1f}"),
        ]
        for r in rows
    ]


NOTE = (
    "Δ test loss = the method's final held-out test loss minus the reference's (below 0: "
    "more useful). Δ MIA AUC at matched utility = the method's final MIA AUC minus the "
    "reference's AUC where the reference's per-round curve (base model, then each round) "
    "first reaches the method's final test loss, linearly interpolated between rounds — "
    "the reference stopped early to be exactly as useful. Below 0: the method leaks less "
    "than the reference would at the same utility. 'not reached': the reference is never "
    "that useful (or always more). Means over the seeds both ran; 95% bootstrap intervals "
    "resample the held-out test examples and the attacked members and non-members, alike in "
    "every seed. The canary column is a point estimate (4 canaries)."
)
