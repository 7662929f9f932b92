"""Defences against well-formed, malicious updates (beyond the paper): pure maths.

Validation (:mod:`fedpit.fed.validation`) refuses malformed updates; a well-formed update
scaled ×100 or sign-flipped passes it and would be averaged in. Two defences, each a run
configuration key: a robust aggregator from Flower's own strategies (``fed.aggregation``,
see :mod:`fedpit.fed.strategy`), and :func:`bound_norms`, which caps every update's distance
from the global model at a multiple of the round's median distance (``fed.norm-bound``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch

Arrays = Mapping[str, np.ndarray]
Tensor = TypeVar("Tensor", np.ndarray, torch.Tensor)


def update_norm(update: Arrays, global_: Arrays) -> float:
    """‖u − g‖₂ over every tensor of the adapter together."""
    return float(np.sqrt(sum(float(np.sum((update[k] - global_[k]) ** 2)) for k in global_)))


def bound_norms(
    updates: Sequence[Arrays], global_: Arrays, factor: float
) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    """Scale each Δ_k = u_k − g so that ‖Δ_k‖ ≤ ``factor`` × median_k ‖Δ_k‖.

    Returns:
        The bounded updates (g + s_k·Δ_k) and each scale s_k (1.0: left as it was).
    """
    if factor <= 0:
        raise ValueError(f"the norm bound factor must be > 0, got {factor}")
    norms = [update_norm(u, global_) for u in updates]
    bound = factor * float(np.median(norms)) if norms else 0.0
    out, scales = [], []
    for u, n in zip(updates, norms, strict=True):
        s = 1.0 if n <= bound or n == 0 else bound / n
        out.append({k: (global_[k] + s * (u[k] - global_[k])).astype(u[k].dtype) for k in u})
        scales.append(s)
    return out, scales


def poison(
    update: Mapping[str, Tensor], global_: Mapping[str, Tensor], kind: str, factor: float
) -> dict[str, Tensor]:
    """A malicious client's upload for robustness experiments: g + factor·Δ, or g − Δ.

    NumPy arrays or torch tensors alike (the client poisons its torch state in place of
    the honest upload; the result keeps the inputs' type and dtype).
    """
    if kind == "scale":
        return {k: global_[k] + factor * (update[k] - global_[k]) for k in update}
    if kind == "flip":
        return {k: global_[k] - (update[k] - global_[k]) for k in update}
    raise ValueError(f"unknown poisoning {kind!r}; allowed: scale, flip")
