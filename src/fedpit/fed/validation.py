"""Server-side validation of one client's upload before it may be aggregated.

A reply is checked against the global adapter the server sent that round: the same
keys, shapes and dtypes, only finite values, a positive finite ``num-examples`` weight,
and no counters outside the privacy allowlist. Each check returns a reason a person can
act on; :func:`check_update` returns the first one, or ``None`` for a valid upload.
The functions are pure (NumPy in, string out) so they are tested against hand cases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set

import numpy as np

from fedpit.privacy.allowlist import ALLOWED_COUNTERS, NUM_EXAMPLES

MAX_LISTED = 3
"""How many offending keys a reason names before it says "and N more"."""


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    more = len(keys) - MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def check_arrays(
    update: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
) -> str | None:
    """Why ``update`` does not fit ``expected`` (keys, shapes, dtypes, finiteness), or None."""
    missing = sorted(set(expected) - set(update))
    if missing:
        return f"missing {len(missing)} adapter tensor(s): {_listing(missing)}"
    unexpected = sorted(set(update) - set(expected))
    if unexpected:
        return f"unexpected {len(unexpected)} adapter tensor(s): {_listing(unexpected)}"
    for key in sorted(expected):
        got, want = update[key], expected[key]
        if tuple(got.shape) != tuple(want.shape):
            return f"{key}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if got.dtype != want.dtype:
            return f"{key}: dtype {got.dtype}, expected {want.dtype}"
        if not np.issubdtype(got.dtype, np.number):
            return f"{key}: non-numeric dtype {got.dtype}"
        bad = int(np.size(got) - np.count_nonzero(np.isfinite(got)))
        if bad:
            return f"{key}: {bad} NaN/Inf value(s)"
    return None


def check_metrics(
    metrics: Mapping[str, object], allowed: Set[str] = ALLOWED_COUNTERS
) -> str | None:
    """Why the reply's counters are unusable (weight, allowlist, values), or None.

    Every client sends every allowlisted counter (Flower's metric aggregation needs the
    same keys from all replies), so a missing counter is refused as well as an extra one.
    """
    weight = metrics.get(NUM_EXAMPLES)
    if weight is None:
        return f"no {NUM_EXAMPLES!r} weight"
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        return f"{NUM_EXAMPLES} = {weight!r} is not a number"
    if not math.isfinite(weight) or weight <= 0:
        return f"{NUM_EXAMPLES} = {weight!r}; it must be a positive finite number"
    extra = sorted(set(metrics) - set(allowed))
    if extra:
        return f"counters outside the privacy allowlist: {_listing(extra)}"
    missing = sorted(set(allowed) - set(metrics))
    if missing:
        return f"missing counter(s): {_listing(missing)}"
    for key, value in sorted(metrics.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"counter {key} = {value!r} is not a number"
        if not math.isfinite(value):
            return f"counter {key} = {value!r} is not finite"
    return None


def check_update(
    update: Mapping[str, np.ndarray],
    metrics: Mapping[str, object],
    expected: Mapping[str, np.ndarray],
    allowed: Set[str] = ALLOWED_COUNTERS,
) -> str | None:
    """Why one client's upload must not be aggregated, or ``None`` if it may be.

    Args:
        update: The uploaded adapter tensors by key.
        metrics: The reply's counters (must hold a positive ``num-examples``).
        expected: The global adapter the server sent this round (keys, shapes, dtypes).
        allowed: The counters a reply may and must carry.

    Returns:
        A one-line reason, or ``None`` for a valid upload.
    """
    return check_metrics(metrics, allowed) or check_arrays(update, expected)
