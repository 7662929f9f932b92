from __future__ import annotations

import math

import pytest

from fedpit.synth.select import ifs, select_lowest


def test_ifs_is_the_ratio() -> None:
    assert ifs(1.5, 2.0) == pytest.approx(0.75)
    assert ifs(3.0, 2.0) == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("cond", "uncond"),
    [(1.0, 0.0), (math.nan, 1.0), (1.0, math.inf), (math.inf, 2.0), (1.0, math.nan)],
)
def test_ifs_unscorable_is_infinite(cond: float, uncond: float) -> None:
    assert ifs(cond, uncond) == math.inf


def test_select_lowest_orders_and_breaks_ties_by_position() -> None:
    items = ["a", "b", "c", "d", "e"]
    scores = [0.9, 0.5, 0.7, 0.5, math.inf]
    assert select_lowest(items, scores, 2) == ["b", "d"]
    assert select_lowest(items, scores, 3) == ["b", "d", "c"]
    assert select_lowest(items, scores, 10) == ["b", "d", "c", "a", "e"]
    assert select_lowest(items, scores, 0) == []


def test_select_lowest_ranks_nan_last() -> None:
    assert select_lowest(["a", "b", "c"], [math.nan, 2.0, math.inf], 3) == ["b", "c", "a"]


def test_select_lowest_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="2 items but 1 scores"):
        select_lowest(["a", "b"], [1.0], 1)
    with pytest.raises(ValueError):
        select_lowest(["a"], [1.0], -1)
