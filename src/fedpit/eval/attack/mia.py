"""Membership-inference scoring and canary exposure: pure functions on numbers.

Convention: a higher score means "more likely a member". Attack scores are turned into
one number, the ROC AUC over members vs non-members (0.5: no better than chance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def auc(member_scores: Sequence[float], non_member_scores: Sequence[float]) -> float:
    """ROC AUC of separating members from non-members by score (ties count one half).

    Equals the Mann–Whitney probability that a random member outscores a random
    non-member. Raises ``ValueError`` when either group is empty.
    """
    if not member_scores or not non_member_scores:
        raise ValueError("AUC needs at least one member and one non-member score")
    labels = [1] * len(member_scores) + [0] * len(non_member_scores)
    return float(roc_auc_score(labels, [*member_scores, *non_member_scores]))


def auc_standard_error(auc_value: float, n_members: int, n_non_members: int) -> float:
    """Sampling standard error of an AUC from ``n_members`` vs ``n_non_members`` examples.

    Hanley & McNeil (1982), "The meaning and use of the area under a ROC curve", eq. 2:
    how much the AUC of one model would move if other examples of the same kind had been
    attacked. Seeds of the training do not show this: a sweep attacks the same examples
    in every seed.
    """
    if n_members < 1 or n_non_members < 1:
        raise ValueError("the standard error needs at least one member and one non-member")
    a = auc_value
    q1 = a / (2 - a)
    q2 = 2 * a * a / (1 + a)
    variance = (
        a * (1 - a) + (n_members - 1) * (q1 - a * a) + (n_non_members - 1) * (q2 - a * a)
    ) / (n_members * n_non_members)
    return math.sqrt(max(0.0, variance))


Attack = tuple[Sequence[float], Sequence[float]]  # (member scores, non-member scores)


def paired_auc_difference(
    a: Attack,
    b: Attack,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """AUC of attack ``a`` minus AUC of ``b`` on the same examples, with a bootstrap interval.

    ``a`` and ``b`` are (member scores, non-member scores), example ``i`` the same in
    both. Members and non-members are resampled with replacement, each resample scoring
    both attacks on the same examples (a paired, stratified percentile bootstrap), so the
    interval reflects which examples happened to be attacked.

    Returns:
        ``(difference, low, high)``: the difference on the examples as given and the
        ``level`` percentile interval of the resampled differences.
    """
    return mean_paired_auc_difference([(a, b)], None, resamples, seed, level)


def mean_paired_auc_difference(
    pairs: Sequence[tuple[Attack, Attack]],
    example_sets: Sequence[int] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Mean over ``pairs`` of AUC(a) − AUC(b), with a paired bootstrap interval.

    Each pair is two attacks on the same examples (e.g. FedAvg and FedPIT trained with
    one seed). ``example_sets[i]`` labels the examples pair ``i`` was attacked on: pairs
    with the same label hold the same examples in the same order and are resampled with
    the same indices (a sweep attacks the same examples in every seed, so its seeds share
    one label); pairs with different labels are resampled independently. By default
    every pair has its own examples. Each resample averages the pairs' differences.

    Returns:
        ``(mean difference, low, high)`` as in :func:`paired_auc_difference`.
    """
    if not pairs:
        raise ValueError("the mean difference needs at least one pair of attacks")
    labels = list(range(len(pairs))) if example_sets is None else list(example_sets)
    if len(labels) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs but {len(labels)} example-set labels")
    rng = np.random.default_rng(seed)
    indices: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    diffs = np.zeros(resamples)
    for (a, b), label in zip(pairs, labels, strict=True):
        am, an, bm, bn = (np.asarray(x, dtype=float) for x in (*a, *b))
        if am.shape != bm.shape or an.shape != bn.shape or not am.size or not an.size:
            raise ValueError("both attacks need scores on the same, non-empty examples")
        if label not in indices:
            indices[label] = (
                rng.integers(0, am.size, size=(resamples, am.size)),
                rng.integers(0, an.size, size=(resamples, an.size)),
            )
        mi, ni = indices[label]
        if mi.shape[1] != am.size or ni.shape[1] != an.size:
            raise ValueError("pairs labelled as the same examples differ in size")
        diffs += mw_auc(am[mi], an[ni]) - mw_auc(bm[mi], bn[ni])
    diffs /= len(pairs)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    mean = sum(auc(*a) - auc(*b) for a, b in pairs) / len(pairs)
    return mean, float(low), float(high)


def mw_auc(members: np.ndarray, non_members: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUC of each row pair (rows: resamples), ties counting one half."""
    diff = members[:, :, None] - non_members[:, None, :]
    auc = (diff > 0).mean(axis=(1, 2)) + 0.5 * (diff == 0).mean(axis=(1, 2))
    # numpy types a mean over axes as Any; it is a float64 array already (no copy here).
    return np.asarray(auc, dtype=np.float64)


def loss_scores(losses: Sequence[float]) -> list[float]:
    """Loss-based attack (Yeom et al.): a lower loss under the target means member."""
    return [-loss for loss in losses]


def calibrated_scores(
    target_losses: Sequence[float], reference_losses: Sequence[float]
) -> list[float]:
    """Reference-calibrated attack: ``-(loss_target - loss_reference)`` per example.

    Subtracting the base model's loss removes how easy an example is in itself, so
    only what training on it changed is left (Carlini et al., "Membership Inference
    Attacks From First Principles", the offline reference-model baseline).
    """
    if len(target_losses) != len(reference_losses):
        raise ValueError("target and reference losses differ in length")
    return [-(t - r) for t, r in zip(target_losses, reference_losses, strict=True)]


def canary_rank(canary_logprob: float, reference_logprobs: Sequence[float]) -> int:
    """1-based rank of the canary among itself and the references, most likely first.

    References as likely as the canary rank behind it (the attacker's best case,
    as in the paper's sort of the candidate space).
    """
    return 1 + sum(1 for lp in reference_logprobs if lp > canary_logprob)


def exposure(canary_logprob: float, reference_logprobs: Sequence[float]) -> float:
    """Exposure of a canary (Carlini et al., "The Secret Sharer"), in bits.

    ``log2(N + 1) - log2(rank)``, where ``rank`` is the canary's 1-based rank among
    itself and ``N`` random sequences of the same format, by log-probability under the
    model. 0 when the canary is the least likely; ``log2(N + 1)`` when it is the most.
    """
    if not reference_logprobs:
        raise ValueError("exposure needs at least one reference sequence")
    rank = canary_rank(canary_logprob, reference_logprobs)
    return math.log2(len(reference_logprobs) + 1) - math.log2(rank)
