"""SynSel maths: the instruction-following score and lowest-k selection (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def ifs(cond_nll: float, uncond_nll: float) -> float:
    """Instruction-following score L(y|x) / L(y); lower = the prompt explains y better.

    Args:
        cond_nll: Mean token negative log-likelihood of the response given its prompt.
        uncond_nll: The same with only the response header as context.

    Returns:
        The ratio, or +inf when either value is not finite or the denominator is zero,
        so that an unscorable candidate ranks last.
    """
    if not (math.isfinite(cond_nll) and math.isfinite(uncond_nll)) or uncond_nll == 0:
        return math.inf
    return cond_nll / uncond_nll


def select_lowest(items: Sequence[T], scores: Sequence[float], k: int) -> list[T]:
    """The ``k`` items with the lowest scores, in ascending score order.

    Ties keep the original order; ``k >= len(items)`` returns every item, sorted.
    NaN scores rank last.

    Raises:
        ValueError: When ``items`` and ``scores`` differ in length or ``k`` is negative.
    """
    if len(items) != len(scores):
        raise ValueError(f"{len(items)} items but {len(scores)} scores")
    if k < 0:
        raise ValueError(f"k = {k} must be >= 0")

    def key(i: int) -> tuple[bool, float, int]:
        nan = math.isnan(scores[i])
        return nan, 0.0 if nan else scores[i], i

    order = sorted(range(len(items)), key=key)
    return [items[i] for i in order[:k]]
