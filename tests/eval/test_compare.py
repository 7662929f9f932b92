"""``fedpit compare-leakage``: paired AUC differences from two runs' attack rows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fedpit.errors import DataError
from fedpit.eval import compare
from fedpit.eval.attack import mia

MEMBERS = [0.2, 0.4, 0.9, 1.1, 0.3]  # losses
NON_MEMBERS = [1.5, 0.8, 1.9, 2.2]


def write_rows(run: Path, members: list[float], non_members: list[float]) -> Path:
    rows = [
        {"kind": "member", "id": f"m{i}", "loss": x, "base_loss": 1.0}
        for i, x in enumerate(members)
    ] + [
        {"kind": "non_member", "id": f"n{i}", "loss": x, "base_loss": 1.0}
        for i, x in enumerate(non_members)
    ]
    rows.append({"kind": "canary", "id": "c0", "logprob": -3.0})
    (run / "attack").mkdir(parents=True)
    (run / "attack" / "global.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_compare_two_runs_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_rows(tmp_path / "a", MEMBERS, NON_MEMBERS)
    # B: members fit less well (losses up 0.6): a weaker membership signal.
    b = write_rows(tmp_path / "b", [x + 0.6 for x in MEMBERS], NON_MEMBERS)
    result = compare.compare(compare.load_rows(a, "global"), compare.load_rows(b, "global"), 500)
    auc_a = mia.auc([-x for x in MEMBERS], [-x for x in NON_MEMBERS])
    auc_b = mia.auc([-x - 0.6 for x in MEMBERS], [-x for x in NON_MEMBERS])
    assert result["auc"]["a"] == auc_a and result["auc"]["b"] == auc_b
    assert result["auc"]["difference"] == pytest.approx(auc_a - auc_b)
    low, high = result["auc"]["interval"]
    assert low <= auc_a - auc_b <= high
    # Every base loss is 1.0, so calibration shifts all scores alike: same AUCs.
    assert result["auc_calibrated"]["a"] == pytest.approx(auc_a)
    gap_a = sum(NON_MEMBERS) / 4 - sum(MEMBERS) / 5
    assert result["loss_gap"]["difference"] == pytest.approx(0.6)
    assert result["loss_gap"]["a"] == pytest.approx(gap_a)

    parser = argparse.ArgumentParser()
    compare.add_commands(parser.add_subparsers())
    args = parser.parse_args(["compare-leakage", str(a), str(b), "--resamples", "200"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "5 members vs 4 non-members" in out and "95% interval" in out


def test_runs_attacked_on_other_examples_are_refused(tmp_path: Path) -> None:
    a = write_rows(tmp_path / "a", MEMBERS, NON_MEMBERS)
    b = write_rows(tmp_path / "b", MEMBERS[:-1], NON_MEMBERS)
    with pytest.raises(DataError, match="different examples"):
        compare.compare(compare.load_rows(a, "global"), compare.load_rows(b, "global"))
    with pytest.raises(DataError, match="fedpit attack"):
        compare.load_rows(tmp_path / "nowhere", "global")
    (a / "attack" / "global.jsonl").write_text("{oops\n")
    with pytest.raises(DataError, match=r"global\.jsonl:1: invalid JSON"):
        compare.load_rows(a, "global")


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    compare.add_commands(parser.add_subparsers())
    args = parser.parse_args(["compare-leakage", *argv])
    return args.func(args)


def test_several_pairs_give_the_mean_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    a0 = write_rows(tmp_path / "a0", MEMBERS, NON_MEMBERS)
    b0 = write_rows(tmp_path / "b0", [x + 0.6 for x in MEMBERS], NON_MEMBERS)
    a1 = write_rows(tmp_path / "a1", [x + 0.3 for x in MEMBERS], NON_MEMBERS)
    b1 = write_rows(tmp_path / "b1", [x + 0.9 for x in MEMBERS], NON_MEMBERS)
    pairs = [
        (compare.load_rows(a, "global"), compare.load_rows(b, "global"))
        for a, b in ((a0, b0), (a1, b1))
    ]
    result = compare.compare_mean(pairs, 500)
    singles = [compare.compare(a, b, 500)["auc"]["difference"] for a, b in pairs]
    assert result["auc"]["difference"] == pytest.approx(sum(singles) / 2)
    assert result["example_sets"] == 1  # the same example ids in both pairs
    low, high = result["auc"]["interval"]
    assert low <= result["auc"]["difference"] <= high

    assert run_cli([str(p) for p in (a0, b0, a1, b1)] + ["--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert out.count("5 members vs 4 non-members") == 2
    assert "Mean over the 2 pairs (each attacked on the same examples)" in out
    with pytest.raises(DataError, match=r"in pairs.*got 3 runs"):
        run_cli([str(a0), str(b0), str(a1)])


def test_numbers_only_rows_compare_like_the_full_rows(tmp_path: Path) -> None:
    a = write_rows(tmp_path / "a", MEMBERS, NON_MEMBERS)
    b = write_rows(tmp_path / "b", [x + 0.6 for x in MEMBERS], NON_MEMBERS)
    full = compare.compare(compare.load_rows(a, "global"), compare.load_rows(b, "global"), 300)
    for run in (a, b):
        rows = run / "attack" / "global.jsonl"
        rows.write_text(rows.read_text().replace('"kind"', '"generation": "secret", "kind"'))
        text = compare.numbers_only(rows)
        assert "secret" not in text and "canary" not in text
        assert len(text.splitlines()) == 9
        (run / "attack" / "global.scores.jsonl").write_text(text)
        rows.unlink()  # an archive has only the copy
        assert compare.rows_path(run, "global").name == "global.scores.jsonl"
    copies = compare.compare(compare.load_rows(a, "global"), compare.load_rows(b, "global"), 300)
    assert copies == full
