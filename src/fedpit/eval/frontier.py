"""Leakage at matched utility: compare two methods where they are equally useful.

A method that leaks less may simply train less. Each federated run leaves a curve, one
point per round: (utility, leakage) = (held-out test loss, MIA AUC or canary
log-probability), from the base model at round 0 to the final model. Method B's final
leakage is compared with A's leakage *at B's utility*, read off A's curve by linear
interpolation between the two rounds whose test losses bracket it (A stopped early, or
between rounds). Δ = leak_B − leak_A(u_B) < 0 says B leaks less than A would at the
same utility.

Everything here is pure: numbers in, numbers out. :func:`matched_difference` resamples
the held-out test examples (utility) and the attacked members and non-members (AUC),
each with the same indices in every pair that shares them (the seeds of a sweep).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedpit.eval.attack.mia import mw_auc


def leakage_at(
    utilities: Sequence[float], leakages: Sequence[float], utility: float
) -> float | None:
    """The leakage of a per-round curve at ``utility``, linearly interpolated.

    Args:
        utilities: Test loss after each round (round 0 first), lower is more useful.
        leakages: Leakage after each round, the same rounds.
        utility: The test loss to match.

    Returns:
        The leakage where the curve first reaches ``utility`` (between the first two
        consecutive rounds whose test losses bracket it), or None when no round of the
        curve reaches it (the curve's method is never that useful, or always more).
    """
    if len(utilities) != len(leakages):
        raise ValueError(f"{len(utilities)} utilities but {len(leakages)} leakages")
    for r in range(len(utilities) - 1):
        u0, u1 = utilities[r], utilities[r + 1]
        if min(u0, u1) <= utility <= max(u0, u1):
            if u0 == u1:
                return float(leakages[r])
            t = (utility - u0) / (u1 - u0)
            return float(leakages[r] + t * (leakages[r + 1] - leakages[r]))
    if len(utilities) == 1 and utilities[0] == utility:
        return float(leakages[0])
    return None


@dataclass(frozen=True)
class Curve:
    """One run's per-example numbers at each round (round 0 = the base model).

    Attributes:
        test_losses: ``(rounds + 1, test examples)``: each test example's loss per round.
        members: ``(rounds + 1, members)``: each member's attack score per round.
        non_members: ``(rounds + 1, non-members)``: the same for the non-members.
    """

    test_losses: np.ndarray
    members: np.ndarray
    non_members: np.ndarray

    def __post_init__(self) -> None:
        rounds = {a.shape[0] for a in (self.test_losses, self.members, self.non_members)}
        if len(rounds) != 1 or any(
            a.ndim != 2 or not a.shape[1]
            for a in (self.test_losses, self.members, self.non_members)
        ):
            raise ValueError("a curve needs the same rounds, and examples, in all three arrays")


@dataclass(frozen=True)
class MatchedDifference:
    """B minus A, mean over the pairs, each with its 95% bootstrap interval.

    Attributes:
        test_loss: Final test loss of B minus that of A (paired on the test examples).
        leakage: B's final AUC minus A's AUC at B's final test loss (None: A never
            reaches it).
        reached: Share of bootstrap resamples in which every pair's A curve reached B's
            utility (the interval of ``leakage`` is over those).
    """

    test_loss: tuple[float, float, float]
    leakage: tuple[float, float, float] | None
    reached: float


def _sizes(curve: Curve) -> tuple[int, int, int]:
    return curve.test_losses.shape[1], curve.members.shape[1], curve.non_members.shape[1]


def _point(
    a: Curve, b: Curve, t_idx: np.ndarray, m_idx: np.ndarray, n_idx: np.ndarray
) -> tuple[float, float | None]:
    """(u_B − u_A at the last round, AUC_B − AUC_A(u_B)) on the indexed examples."""
    u_a = a.test_losses[:, t_idx].mean(axis=1)
    u_b = float(b.test_losses[-1, t_idx].mean())
    auc_a = mw_auc(a.members[:, m_idx], a.non_members[:, n_idx])  # one AUC per round
    auc_b = float(mw_auc(b.members[-1:, m_idx], b.non_members[-1:, n_idx])[0])
    matched = leakage_at(list(u_a), list(auc_a), u_b)
    return u_b - float(u_a[-1]), None if matched is None else auc_b - matched


def matched_difference(
    pairs: Sequence[tuple[Curve, Curve]],
    example_sets: Sequence[int] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> MatchedDifference:
    """B − A in test loss, and in MIA AUC at B's test loss along A's curve, over pairs.

    Args:
        pairs: ``(A, B)`` per seed; A and B of a pair share the test examples and the
            attacked examples (in the same order).
        example_sets: Pairs with the same label share their examples and are resampled
            with the same indices (default: all pairs share them, as in one sweep).
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        level: Coverage of the intervals.

    Returns:
        The means over the pairs on the examples as given, and percentile intervals.
    """
    if not pairs:
        raise ValueError("a matched comparison needs at least one pair of runs")
    labels = [0] * len(pairs) if example_sets is None else list(example_sets)
    if len(labels) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs but {len(labels)} example-set labels")
    sizes: dict[int, tuple[int, int, int]] = {}
    for (a, b), label in zip(pairs, labels, strict=True):
        if _sizes(a) != _sizes(b) or sizes.setdefault(label, _sizes(a)) != _sizes(a):
            raise ValueError("the runs compared on the same examples differ in their examples")
    whole = [_point(a, b, *(np.arange(n) for n in _sizes(a))) for a, b in pairs]
    mean_u = float(np.mean([u for u, _ in whole]))
    leaks = [d for _, d in whole if d is not None]
    mean_d = float(np.mean(leaks)) if len(leaks) == len(whole) else None
    rng = np.random.default_rng(seed)
    du: list[float] = []
    dl: list[float] = []
    for _ in range(resamples):
        drawn = {
            label: tuple(rng.integers(0, n, size=n) for n in shape)
            for label, shape in sizes.items()
        }
        points = [_point(a, b, *drawn[label]) for (a, b), label in zip(pairs, labels, strict=True)]
        du.append(float(np.mean([u for u, _ in points])))
        reached = [d for _, d in points if d is not None]
        if len(reached) == len(points):
            dl.append(float(np.mean(reached)))
    tail = (1 - level) / 2 * 100

    def interval(values: list[float], point: float) -> tuple[float, float, float]:
        low, high = np.percentile(values, [tail, 100 - tail])
        return point, float(low), float(high)

    leakage = interval(dl, mean_d) if mean_d is not None and dl else None
    return MatchedDifference(interval(du, mean_u), leakage, len(dl) / resamples)
