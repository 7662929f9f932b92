"""``fedpit compare-leakage``: paired AUC differences from two runs' attack rows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fedpit.errors import DataError
from fedpit.eval import compare, mia

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
