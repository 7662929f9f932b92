"""``fedpit compare-utility``: the paired test-loss difference, per round, against hand values."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from fedpit.errors import DataError
from fedpit.eval.paired_utility import add_commands, load_rounds, paired_loss_difference


def test_the_difference_is_the_mean_of_per_example_differences() -> None:
    a = np.array([2.0, 3.0, 1.0, 4.0])
    b = np.array([1.5, 3.0, 0.5, 4.5])  # differences −0.5, 0, −0.5, +0.5: mean −0.125
    diff, low, high = paired_loss_difference([(a, b)], resamples=4000)
    assert diff == pytest.approx(-0.125)
    assert -0.5 <= low < diff < high <= 0.5
    # Two pairs: the mean of the two pairs' differences (−0.125 and +1.0 exactly).
    diff2, _, _ = paired_loss_difference([(a, b), (a, a + 1.0)])
    assert diff2 == pytest.approx((-0.125 + 1.0) / 2)


def test_a_constant_shift_has_a_zero_width_interval_and_noise_a_wide_one() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(2.0, 0.5, size=128)
    assert paired_loss_difference([(a, a - 0.01)]) == pytest.approx((-0.01, -0.01, -0.01))
    # Unpaired noise of the same size as the shift: the interval covers 0.
    _, low, high = paired_loss_difference([(a, a - 0.01 + rng.normal(0, 0.5, size=128))])
    assert low < 0 < high


def test_bad_pairs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one pair"):
        paired_loss_difference([])
    with pytest.raises(ValueError, match="same, non-empty test set"):
        paired_loss_difference([(np.ones(3), np.ones(3)), (np.ones(4), np.ones(4))])


def _run(path: Path, losses: list[list[float]], kept: float = 5.0) -> Path:
    path.mkdir(parents=True)
    rows = [
        {
            "round": r,
            "test_losses": x,
            "clients": {}
            if r == 0
            else {
                "synth-attempts": 6.0,
                "synth-kept": kept,
                "synth-selected": 4.0,
                "seconds-synth": 10.0,
            },
        }
        for r, x in enumerate(losses)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    return parser.parse_args(["compare-utility", *argv])


def test_the_cli_prints_every_common_round(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    a = _run(tmp_path / "a", [[2.0, 2.0], [1.8, 1.6], [1.7, 1.5]])
    b = _run(tmp_path / "b", [[2.0, 2.0], [1.7, 1.5]], kept=3.0)  # stopped after round 1
    args = _cli(str(a), str(b))
    assert args.func(args) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line[:5].strip().isdigit()]
    assert [line[0] for line in lines] == ["0", "1"]  # round 2 is A's alone
    assert lines[1][1:4] == ["1.700", "1.600", "-0.1000"]
    assert "5/6, 4 (10 s)" in out and "3/6, 4 (10 s)" in out
    assert load_rounds(a)[2].test_losses.tolist() == [1.7, 1.5]


def test_the_cli_errors_say_what_is_wrong(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [[2.0, 2.0]])
    c = _run(tmp_path / "c", [[2.0, 2.0, 1.0]])
    for argv, message in (
        ([str(a)], "in pairs"),
        ([str(a), str(tmp_path / "none")], "no metrics.jsonl"),
        ([str(a), str(c)], "different test sets"),
    ):
        args = _cli(*argv)
        with pytest.raises(DataError, match=message):
            args.func(args)


def test_the_seed_interval_is_students_t_over_the_per_seed_differences():
    from fedpit.eval.paired_utility import seed_interval

    # Differences −0.009, −0.007, −0.008: mean −0.008, sd 0.001, t(0.975, 2) = 4.3027.
    mean, low, high = seed_interval([-0.009, -0.007, -0.008])
    half = 4.302653 * 0.001 / 3**0.5
    assert mean == pytest.approx(-0.008)
    assert (low, high) == pytest.approx((-0.008 - half, -0.008 + half), rel=1e-5)
    assert seed_interval([0.1]) is None


def test_the_cli_adds_the_seed_interval_for_several_pairs(tmp_path, capsys):
    a0 = _run(tmp_path / "a0", [[2.0, 2.0], [1.8, 1.6]])
    b0 = _run(tmp_path / "b0", [[2.0, 2.0], [1.7, 1.5]])  # −0.1
    a1 = _run(tmp_path / "a1", [[2.0, 2.0], [1.8, 1.6]])
    b1 = _run(tmp_path / "b1", [[2.0, 2.0], [1.6, 1.4]])  # −0.2
    args = _cli(*map(str, (a0, b0, a1, b1)))
    assert args.func(args) == 0
    out = capsys.readouterr().out
    round1 = next(line for line in out.splitlines() if line.strip().startswith("1 "))
    assert "-0.1500" in round1 and "over seeds (t)" in round1
