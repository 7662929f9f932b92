"""PNG plots of a set of runs (matplotlib, Agg, no global pyplot state).

Each function takes the collected runs and an output path, draws one figure and returns
the path, or None when the runs hold no data for it (the report then says so).
Lines are means over seeds; shaded bands and error bars are ± one standard deviation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedpit.config.schema import BETA_METHODS
from fedpit.report.collect import AttackResult, RunRecord, by_group, mean_std

DPI = 110
MARKERS = "osD^vP*Xh<>"
SYNTH_COUNTERS = ("synth-attempts", "synth-kept", "synth-selected")
REJECTED = "synth-rejected-"


def group_colors(runs: list[RunRecord]) -> dict[str, str]:
    """One colour per row, stable across every plot of a report."""
    palette = [f"C{i}" for i in range(10)]
    return {g: palette[i % len(palette)] for i, g in enumerate(by_group(runs))}


def _figure(
    width: float = 7.5, height: float = 4.5, ncols: int = 1, nrows: int = 1
) -> tuple[Figure, list[list[Axes]]]:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    # squeeze=False: an nrows × ncols object array of Axes, which numpy's tolist() keeps.
    axes: list[list[Axes]] = fig.subplots(nrows, ncols, squeeze=False).tolist()
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def _per_round(
    ax: Axes,
    runs: list[RunRecord],
    values: Callable[[RunRecord], dict[int, float]],
    colors: dict[str, str],
) -> bool:
    """Mean ± std over seeds of a per-round value, one line per row; whether anything drew."""
    drew = False
    for i, (group, members) in enumerate(by_group(runs).items()):
        per_run = [values(r) for r in members]
        rounds = sorted({k for v in per_run for k in v})
        if not rounds:
            continue
        stats = [mean_std([v[r] for v in per_run if r in v]) for r in rounds]
        mean = [m for m, _ in stats]
        std = [s for _, s in stats]
        color = colors[group]
        ax.plot(rounds, mean, marker=MARKERS[i % len(MARKERS)], color=color, label=group)
        if any(std):
            lo = [m - s for m, s in stats]
            hi = [m + s for m, s in stats]
            ax.fill_between(rounds, lo, hi, color=color, alpha=0.15, linewidth=0)
        drew = True
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return drew


def plot_test_loss(runs: list[RunRecord], path: Path) -> Path | None:
    """Held-out test loss of the global model per round, per row."""
    fig, axes = _figure()
    ax = axes[0][0]
    drew = _per_round(
        ax,
        runs,
        lambda r: {m.round: m.test_loss for m in r.rounds if m.test_loss is not None},
        group_colors(runs),
    )
    if not drew:
        return None
    ax.set_ylabel("held-out test loss (mean response NLL)")
    ax.set_title("Utility per round (lower is better; round 0 = base model)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def leakage_by_round(run: RunRecord, field: str) -> dict[int, float]:
    """A leakage number of the global model per round; round 0 is the base model.

    Empty for a run without per-round attacks (standalone baselines): a base point alone
    is no curve.
    """
    attacks: list[AttackResult] = run.round_attacks()
    if not attacks:
        return {}
    base = run.base_attack()
    found = {a.round or 0: getattr(a, field) for a in attacks}
    if base is not None:
        found[0] = getattr(base, field)
    return {r: v for r, v in found.items() if v is not None}


def round_frontier(run: RunRecord) -> list[tuple[int, float, float]]:
    """(round, test loss, MIA AUC) of the global model at every round both were measured."""
    losses = {m.round: m.test_loss for m in run.rounds if m.test_loss is not None}
    aucs = leakage_by_round(run, "mia_auc")
    return [(r, losses[r], aucs[r]) for r in sorted(losses) if r in aucs]


def plot_round_frontier(runs: list[RunRecord], path: Path) -> Path | None:
    """Privacy–utility frontier over rounds: one curve per row, base model to final model.

    Stopping a method after any round (or between rounds) gives a point on its curve, so
    a curve that lies left of another is the better trade at every utility.
    """
    colors = group_colors(runs)
    fig, axes = _figure(height=5.5)
    ax = axes[0][0]
    drew = False
    for i, (group, members) in enumerate(by_group(runs).items()):
        curves = [c for c in (round_frontier(r) for r in members) if c]
        if not curves:
            continue
        rounds = sorted(set.intersection(*({r for r, _, _ in c} for c in curves)))
        xs = [mean_std([a for c in curves for r, _, a in c if r == k])[0] for k in rounds]
        ys = [mean_std([u for c in curves for r, u, _ in c if r == k])[0] for k in rounds]
        ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], color=colors[group], label=group)
        ax.annotate(
            f"{rounds[-1]}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(5, 3), fontsize=7
        )
        drew = True
    if not drew:
        return None
    ax.axvline(0.5, color="black", ls=":", lw=0.8)
    ax.set_xlabel("leakage: MIA AUC of the global model (0.5 = chance)")
    ax.set_ylabel("held-out test loss (lower is better)")
    ax.set_title("Privacy–utility frontier over rounds (better: left and down)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_leakage(runs: list[RunRecord], path: Path) -> Path | None:
    """MIA AUC (and canary log-probability, if measured) of the global model per round."""
    colors = group_colors(runs)
    has_canary = any(leakage_by_round(r, "canary_logprob") for r in runs)
    fig, axes = _figure(width=12 if has_canary else 7.5, ncols=2 if has_canary else 1)
    ax = axes[0][0]
    if not _per_round(ax, runs, lambda r: leakage_by_round(r, "mia_auc"), colors):
        return None
    ax.axhline(0.5, color="black", ls=":", lw=0.8)
    ax.set_ylabel("loss-based MIA AUC (0.5 = chance)")
    ax.set_title("Leakage per round: membership inference (round 0 = base)")
    ax.legend(fontsize=8)
    if has_canary:
        ax2 = axes[0][1]
        _per_round(ax2, runs, lambda r: leakage_by_round(r, "canary_logprob"), colors)
        ax2.set_ylabel("canary mean log-probability (higher = more leaked)")
        ax2.set_title("Leakage per round: canaries (round 0 = base)")
        ax2.legend(fontsize=8)
    return _save(fig, path)


def utility_metric(runs: list[RunRecord], test_sets: list[str]) -> tuple[str, str | None]:
    """The frontier's utility axis: ROUGE-L on the first test set every attacked run has.

    Falls back to the held-out test loss when some attacked run has no such evaluation.
    Returns (label, test set or None for the test loss).
    """
    attacked = [r for r in runs if r.final_attack() is not None]
    for test_set in test_sets:
        if attacked and all(
            (e := r.final_eval(test_set)) and e.rouge_l is not None for r in attacked
        ):
            return f"utility: ROUGE-L on {test_set} (higher is better)", test_set
    return "utility: held-out test loss (lower is better)", None


def frontier_points(
    runs: list[RunRecord], test_set: str | None
) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """Per row: ((leakage mean, std), (utility mean, std)) over seeds of the final model."""
    points = {}
    for group, members in by_group(runs).items():
        xs, ys = [], []
        for run in members:
            attack = run.final_attack()
            if test_set is None:
                y = run.final_test_loss
            else:
                e = run.final_eval(test_set)
                y = e.rouge_l if e else None
            if attack is None or attack.mia_auc is None or y is None:
                continue
            xs.append(attack.mia_auc)
            ys.append(y)
        if xs:
            points[group] = (mean_std(xs), mean_std(ys))
    return points


def plot_frontier(runs: list[RunRecord], test_sets: list[str], path: Path) -> Path | None:
    """The privacy–utility frontier over β (the paper's Fig. 4b)."""
    label, test_set = utility_metric(runs, test_sets)
    points = frontier_points(runs, test_set)
    if not points:
        return None
    colors = group_colors(runs)
    groups = by_group(runs)
    fig, axes = _figure(height=5)
    ax = axes[0][0]
    for method in BETA_METHODS:  # one line through the β points of each β method
        line = sorted(
            (groups[g][0].beta or 0.0, p, g)
            for g, p in points.items()
            if groups[g][0].method == method
        )
        if not line:
            continue
        ax.plot([p[0][0] for _, p, _ in line], [p[1][0] for _, p, _ in line], color="gray", lw=1)
        for beta, ((x, xs), (y, ys)), g in line:
            ax.errorbar(x, y, xerr=xs, yerr=ys, fmt="o", color=colors[g], ms=8, capsize=3)
            ax.annotate(
                f"{method} β={beta:g}",
                (x, y),
                textcoords="offset points",
                xytext=(7, 6),
                fontsize=9,
            )
    others = [g for g in points if groups[g][0].method not in BETA_METHODS]
    for i, g in enumerate(others):
        (x, xs), (y, ys) = points[g]
        ax.errorbar(
            x,
            y,
            xerr=xs,
            yerr=ys,
            fmt=MARKERS[(i + 1) % len(MARKERS)],
            color=colors[g],
            ms=9,
            capsize=3,
            label=g,
        )
    ax.axvline(0.5, color="black", ls=":", lw=0.8)
    ax.set_xlabel("leakage: MIA AUC of the final global model (0.5 = chance)")
    ax.set_ylabel(label)
    better = "up" if test_set else "down"
    ax.set_title(f"Privacy–utility frontier over β (better: left and {better})")
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize=8, title="reference methods", title_fontsize=8)
    return _save(fig, path)


def _counter_mean(runs: list[RunRecord], key: str, rnd: int) -> float:
    """Mean over runs of a client counter (summed over clients) in one round."""
    vals = [m.counters.get(key, 0.0) for r in runs for m in r.rounds if m.round == rnd]
    return mean_std(vals)[0] if vals else 0.0


def plot_synthetic(runs: list[RunRecord], path: Path) -> Path | None:
    """SynGen per round: attempts / kept / selected and rejections by reason (all clients)."""
    rows = {
        g: members
        for g, members in by_group(runs).items()
        if any(m.counters.get("synth-attempts") for r in members for m in r.rounds)
    }
    if not rows:
        return None
    fig, axes = _figure(width=12, height=3.4 * len(rows), ncols=2, nrows=len(rows))
    for (group, members), (ax, ax_rej) in zip(rows.items(), axes, strict=True):
        rounds = sorted({m.round for r in members for m in r.rounds if m.counters})
        reasons = sorted(
            {
                k
                for r in members
                for m in r.rounds
                for k, v in m.counters.items()
                if k.startswith(REJECTED) and v
            }
        )

        width = 0.8 / len(SYNTH_COUNTERS)
        for j, key in enumerate(SYNTH_COUNTERS):
            xs = [rnd + (j - 1) * width for rnd in rounds]
            ax.bar(
                xs,
                [_counter_mean(members, key, rnd) for rnd in rounds],
                width,
                label=key.removeprefix("synth-"),
            )
        ax.set_title(f"{group}: synthetic candidates per round")
        ax.set_xticks(rounds)
        ax.set_xlabel("round")
        ax.set_ylabel("count (all clients)")
        ax.legend(fontsize=8)
        bottom = [0.0] * len(rounds)
        for key in reasons:
            vals = [_counter_mean(members, key, rnd) for rnd in rounds]
            ax_rej.bar(rounds, vals, 0.5, bottom=bottom, label=key.removeprefix(REJECTED))
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax_rej.set_title(f"{group}: rejected candidates by reason")
        ax_rej.set_xticks(rounds)
        ax_rej.set_xlabel("round")
        if reasons:
            ax_rej.legend(fontsize=8)
        else:
            ax_rej.text(0.5, 0.5, "no rejections", ha="center", transform=ax_rej.transAxes)
    return _save(fig, path)
