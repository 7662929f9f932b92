"""Membership-inference AUC and exposure against hand-computed values."""

from __future__ import annotations

import itertools
import math

import pytest

from fedpit.eval.attack import mia
from fedpit.eval.attack.mia import auc, calibrated_scores, canary_rank, exposure, loss_scores


def mann_whitney(members: list[float], non_members: list[float]) -> float:
    """The reference: fraction of (member, non-member) pairs ordered right, ties ½."""
    pairs = list(itertools.product(members, non_members))
    wins = sum(1.0 if m > n else 0.5 if m == n else 0.0 for m, n in pairs)
    return wins / len(pairs)


def test_auc_counts_pairs_with_ties_as_half() -> None:
    # Pairs: 0.9 beats both; each 0.5 ties the 0.5 (½) and beats 0.1 → (2 + 1.5 + 1.5) / 6.
    assert auc([0.9, 0.5, 0.5], [0.5, 0.1]) == pytest.approx(5 / 6)


@pytest.mark.parametrize(
    ("members", "non_members", "expected"),
    [
        ([3.0, 4.0], [1.0, 2.0], 1.0),
        ([1.0, 2.0], [3.0, 4.0], 0.0),
        ([1.0, 1.0], [1.0, 1.0, 1.0], 0.5),
        ([2.0, 0.0], [1.0], 0.5),
    ],
)
def test_auc_extremes_and_chance(
    members: list[float], non_members: list[float], expected: float
) -> None:
    assert auc(members, non_members) == pytest.approx(expected)
    assert mann_whitney(members, non_members) == pytest.approx(expected)


def test_auc_matches_mann_whitney_reference_on_random_scores() -> None:
    import random

    rng = random.Random(3)
    members = [round(rng.gauss(0.3, 1), 1) for _ in range(40)]  # rounding makes ties
    non_members = [round(rng.gauss(0.0, 1), 1) for _ in range(30)]
    assert auc(members, non_members) == pytest.approx(mann_whitney(members, non_members))


def test_auc_needs_both_groups() -> None:
    with pytest.raises(ValueError, match="at least one"):
        auc([], [1.0])


def test_loss_attack_scores_low_loss_as_member() -> None:
    assert loss_scores([1.0, 2.5]) == [-1.0, -2.5]
    # Members with lower loss than every non-member: perfect attack.
    assert auc(loss_scores([0.5, 0.7]), loss_scores([1.0, 2.0])) == 1.0


def test_calibrated_scores_subtract_the_reference_loss() -> None:
    assert calibrated_scores([1.0, 2.0], [3.0, 2.5]) == pytest.approx([2.0, 0.5])
    # An example easy for every model (low loss, no drop) ranks below one whose loss dropped.
    member = calibrated_scores([1.5], [3.0])  # dropped by 1.5
    easy_non_member = calibrated_scores([1.0], [1.1])  # dropped by 0.1
    assert auc(member, easy_non_member) == 1.0
    assert auc(loss_scores([1.5]), loss_scores([1.0])) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        calibrated_scores([1.0], [])


def test_exposure_by_rank() -> None:
    refs = [-5.0, -12.0, -20.0]  # N = 3, log2(N + 1) = 2
    assert canary_rank(-10.0, refs) == 2
    assert exposure(-10.0, refs) == pytest.approx(1.0)  # 2 - log2(2)
    assert exposure(-1.0, refs) == pytest.approx(2.0)  # most likely: rank 1
    assert exposure(-30.0, refs) == pytest.approx(0.0)  # least likely: rank 4
    assert exposure(-10.0, [-10.0, -20.0, -30.0]) == pytest.approx(2.0)  # ties rank behind
    refs200 = [-float(i) for i in range(1, 201)]
    assert exposure(-3.5, refs200) == pytest.approx(math.log2(201) - math.log2(4))
    with pytest.raises(ValueError, match="reference"):
        exposure(-1.0, [])


def test_auc_standard_error_hand_computed() -> None:
    # A = 0.74, 24 vs 24: Q1 = 0.74 / 1.26, Q2 = 2 · 0.5476 / 1.74,
    # SE² = (0.74 · 0.26 + 23 (Q1 − 0.5476) + 23 (Q2 − 0.5476)) / 576
    q1, q2 = 0.74 / 1.26, 2 * 0.5476 / 1.74
    expected = math.sqrt((0.74 * 0.26 + 23 * (q1 - 0.5476) + 23 * (q2 - 0.5476)) / 576)
    assert mia.auc_standard_error(0.74, 24, 24) == pytest.approx(expected)
    assert mia.auc_standard_error(0.74, 24, 24) == pytest.approx(0.0720, abs=1e-4)
    # Perfect separation has no sampling error; chance with 1 vs 1 is ± 0.5.
    assert mia.auc_standard_error(1.0, 10, 10) == 0.0
    assert mia.auc_standard_error(0.5, 1, 1) == pytest.approx(0.5)
    # Four times the examples, half the error (asymptotically).
    ratio = mia.auc_standard_error(0.7, 400, 400) / mia.auc_standard_error(0.7, 1600, 1600)
    assert ratio == pytest.approx(2.0, rel=1e-3)
    with pytest.raises(ValueError):
        mia.auc_standard_error(0.7, 0, 5)


def test_paired_auc_difference() -> None:
    import random

    rng = random.Random(3)
    members = [rng.gauss(1.0, 1.0) for _ in range(20)]
    non_members = [rng.gauss(0.0, 1.0) for _ in range(25)]
    weaker = ([m * 0.3 for m in members], [n * 0.3 + 0.2 for n in non_members])
    diff, low, high = mia.paired_auc_difference((members, non_members), weaker, resamples=500)
    assert diff == pytest.approx(auc(members, non_members) - auc(*weaker))
    assert low <= diff <= high and high - low > 0
    # The same attack twice: no difference in any resample.
    assert mia.paired_auc_difference((members, non_members), (members, non_members)) == (
        0.0,
        0.0,
        0.0,
    )
    # The vectorised Mann–Whitney AUC equals sklearn's on the examples as given.
    import numpy as np

    got = mia.mw_auc(np.array([members]), np.array([non_members]))[0]
    assert got == pytest.approx(auc(members, non_members))
    # Seeded; a different seed moves the interval, not the difference.
    again = mia.paired_auc_difference((members, non_members), weaker, resamples=500)
    assert again == (diff, low, high)
    with pytest.raises(ValueError, match="same"):
        mia.paired_auc_difference((members, non_members), (members[:-1], non_members))


def test_mean_paired_auc_difference() -> None:
    import random

    rng = random.Random(5)
    members = [rng.gauss(1.0, 1.0) for _ in range(12)]
    non_members = [rng.gauss(0.0, 1.0) for _ in range(10)]
    strong = (members, non_members)
    weak = ([m * 0.5 for m in members], [n * 0.5 + 0.3 for n in non_members])
    # One pair: exactly the paired difference.
    one = mia.mean_paired_auc_difference([(strong, weak)], resamples=300)
    assert one == mia.paired_auc_difference(strong, weak, resamples=300)
    # The same pair twice on the same examples: each resample averages two equal
    # differences, so nothing changes.
    twice = mia.mean_paired_auc_difference([(strong, weak), (strong, weak)], [0, 0], 300)
    assert twice == pytest.approx(one)
    # The mean of two different pairs, by hand; the interval holds it.
    other = ([m + 0.2 for m in members], non_members)
    mean, low, high = mia.mean_paired_auc_difference([(strong, weak), (other, strong)], [0, 0])
    by_hand = (auc(*strong) - auc(*weak) + auc(*other) - auc(*strong)) / 2
    assert mean == pytest.approx(by_hand)
    assert low <= mean <= high
    # Independent examples: the same pair twice now averages two independent
    # resamplings, which narrows the interval.
    apart = mia.mean_paired_auc_difference([(strong, weak), (strong, weak)], [0, 1], 2000)
    alike = mia.mean_paired_auc_difference([(strong, weak), (strong, weak)], [0, 0], 2000)
    assert apart[0] == alike[0]
    assert apart[2] - apart[1] < alike[2] - alike[1]
    with pytest.raises(ValueError, match="at least one pair"):
        mia.mean_paired_auc_difference([])
    with pytest.raises(ValueError, match="labels"):
        mia.mean_paired_auc_difference([(strong, weak)], [0, 1])
    short = (members[:-1], non_members)
    with pytest.raises(ValueError, match="differ in size"):
        mia.mean_paired_auc_difference([(strong, weak), (short, short)], [0, 0])
