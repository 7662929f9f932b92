"""Leakage at matched utility, against hand-made curves."""

import numpy as np
import pytest

from fedpit.eval.frontier import Curve, leakage_at, matched_difference


def test_leakage_at_interpolates_between_the_bracketing_rounds():
    # Test loss falls 2.4 → 2.0 → 1.8 while the AUC rises 0.5 → 0.6 → 0.8.
    u, leak = [2.4, 2.0, 1.8], [0.5, 0.6, 0.8]
    assert leakage_at(u, leak, 2.0) == pytest.approx(0.6)
    assert leakage_at(u, leak, 2.2) == pytest.approx(0.55)  # halfway between rounds 0 and 1
    assert leakage_at(u, leak, 1.9) == pytest.approx(0.7)
    assert leakage_at(u, leak, 2.4) == pytest.approx(0.5)
    assert leakage_at(u, leak, 1.7) is None  # never that useful
    assert leakage_at(u, leak, 2.5) is None  # less useful than the base model
    # A curve that turns back: its first crossing counts.
    assert leakage_at([2.4, 2.0, 2.2], [0.5, 0.7, 0.9], 2.1) == pytest.approx(0.65)
    with pytest.raises(ValueError, match="2 leakages"):
        leakage_at([1.0, 2.0, 3.0], [0.1, 0.2], 1.5)


def _curve(test_means, aucs_exact, n=8):
    """Per-example arrays realising given mean test losses and AUCs (0, 0.5 or 1)."""
    test = np.array([[m] * n for m in test_means], dtype=float)
    members, non_members = [], []
    for a in aucs_exact:
        if a == 1.0:
            members.append([1.0] * n)
            non_members.append([0.0] * n)
        elif a == 0.5:
            members.append([0.0] * n)
            non_members.append([0.0] * n)
        else:
            raise ValueError(a)
    return Curve(test, np.array(members), np.array(non_members))


def test_matched_difference_by_hand():
    # A: base (loss 2.4, AUC 0.5) → round 1 (2.0, 1.0). B ends at loss 2.2 with AUC 0.5.
    # A at loss 2.2 is halfway: AUC 0.75, so B leaks 0.25 less at matched utility,
    # and is 0.2 nats less useful than A's final model.
    a = _curve([2.4, 2.0], [0.5, 1.0])
    b = _curve([2.4, 2.2], [0.5, 0.5])
    got = matched_difference([(a, b)], resamples=200)
    assert got.test_loss[0] == pytest.approx(0.2)
    assert got.test_loss[1:] == pytest.approx((0.2, 0.2))  # constant per example: no spread
    assert got.leakage is not None
    assert got.leakage[0] == pytest.approx(-0.25)
    assert got.reached == 1.0
    # Two seeds: the mean of the pairs.
    b2 = _curve([2.4, 2.0], [0.5, 0.5])  # as useful as A's final model: A's AUC 1.0 there
    two = matched_difference([(a, b), (a, b2)], resamples=50)
    assert two.leakage is not None and two.leakage[0] == pytest.approx((-0.25 - 0.5) / 2)
    assert two.test_loss[0] == pytest.approx(0.1)


def test_matched_difference_when_a_never_reaches_b():
    a = _curve([2.4, 2.2], [0.5, 1.0])
    b = _curve([2.4, 2.0], [0.5, 0.5])  # more useful than A ever is
    got = matched_difference([(a, b)], resamples=50)
    assert got.leakage is None and got.reached == 0.0
    assert got.test_loss[0] == pytest.approx(-0.2)


def test_the_interval_reflects_example_noise_and_excludes_zero_when_resolved():
    rng = np.random.default_rng(0)
    n = 64
    test_a = np.stack([2.4 + rng.normal(0, 0.3, n), 2.0 + rng.normal(0, 0.3, n)])
    test_b = np.stack([test_a[0], test_a[1] + 0.05 + rng.normal(0, 0.01, n)])
    members = np.stack([rng.normal(0, 1, n), rng.normal(1.5, 1, n)])
    non_members = np.stack([rng.normal(0, 1, n), rng.normal(0, 1, n)])
    a = Curve(test_a, members, non_members)
    b = Curve(test_b, np.stack([members[0], members[0]]), non_members)
    got = matched_difference([(a, b)], resamples=300)
    low, high = got.test_loss[1:]
    assert 0 < low < 0.05 < high  # the paired difference is resolved despite the spread
    assert got.leakage is not None and got.leakage[2] < 0


def test_pairs_must_share_their_examples():
    a = _curve([2.4, 2.0], [0.5, 1.0], n=8)
    b = _curve([2.4, 2.2], [0.5, 0.5], n=6)
    with pytest.raises(ValueError, match="differ in their examples"):
        matched_difference([(a, b)])
