"""Timing two or more variants under the same load: they alternate (A B B A …)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")

INTERLEAVED = 2
"""Timed runs of each variant that is compared with another (their mean is reported)."""


def alternate(
    runs: Mapping[str, Callable[[], T]], repetitions: int = INTERLEAVED
) -> dict[str, list[tuple[float, T]]]:
    """Call every run ``repetitions`` times, in turn, timing each call.

    One run of each, one after the other, lets a noisy stretch of the machine decide a
    ratio; alternating gives every variant the same share of it. Every other pass runs in
    reverse order (A B, B A, A B, …), so no variant always goes first (a first call can
    pay one-time costs) and a steady drift of the load cancels over two passes.

    Returns:
        Name → one ``(seconds, result)`` per repetition, in call order.
    """
    timed: dict[str, list[tuple[float, T]]] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(repetitions):
        for name in names if rep % 2 == 0 else names[::-1]:
            run = runs[name]
            t0 = time.perf_counter()
            result = run()
            timed[name].append((time.perf_counter() - t0, result))
    return timed
