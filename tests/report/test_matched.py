"""The matched-utility headline table and the control in the paired table, on fake runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedpit.config.load import from_flat
from fedpit.report.collect import collect_runs
from fedpit.report.matched import matched_rows, table
from fedpit.report.paired import control_rows
from fedpit.report.render import render
from fedpit.runs.rundir import append_jsonl, create_run_dir, write_json

N = 4  # members, non-members and test examples


def fake_run(
    root: Path,
    method: str,
    test_means: list[float],
    aucs: list[float],
    seed=0,
    beta=0.5,
    arm="",
):
    """A finished 2-round run whose mean test loss and MIA AUC per round are given.

    AUC 1.0: members' losses 0.1 against non-members' 2.0; AUC 0.5: all losses 1.0.
    """
    keys = {"method": method, "seed": seed, "fed.rounds": 2, "run-dir": str(root)}
    keys["fed.beta"] = beta
    if arm:
        keys["arm"] = arm
    rd = create_run_dir(from_flat(keys))
    for r, mean in enumerate(test_means):
        append_jsonl(
            rd.metrics,
            {"round": r, "test_loss": mean, "test_losses": [mean] * N, "clients": {}},
        )
    write_json(rd.summary, {"method": method, "rounds": 2, "test_loss": {}})
    (rd.root / "attack").mkdir()
    targets = ["base", "round-1", "global"]
    for target, auc, rnd in zip(targets, aucs, (None, 1, 2), strict=True):
        member, outsider = (0.1, 2.0) if auc == 1.0 else (1.0, 1.0)
        rows = [{"kind": "member", "id": f"m{i}", "loss": member} for i in range(N)]
        rows += [{"kind": "non_member", "id": f"n{i}", "loss": outsider} for i in range(N)]
        text = "".join(json.dumps({**row, "base_loss": 1.0}) + "\n" for row in rows)
        (rd.root / "attack" / f"{target}.jsonl").write_text(text)
        write_json(
            rd.root / "attack" / f"{target}.json",
            {
                "target": target.replace("-", ":"),
                "round": rnd,
                "n_members": N,
                "n_non_members": N,
                "mia": {"auc": auc},
                "canaries": {"mean_logprob": -50.0 + (10.0 * auc if target != "base" else 0.0)},
                "synthetic_overlap": (
                    {"n": 8, "span_share": 0.125, "canary_touches": 2}
                    if method == "fedpit"
                    else None
                ),
            },
        )
    return rd.root


@pytest.fixture
def runs(tmp_path: Path):
    # The control: base (2.4, AUC 0.5) → round 1 (2.0, 1.0) → round 2 (1.8, 1.0).
    fake_run(tmp_path / "fedavg-damped-b0.5-s0", "fedavg-damped", [2.4, 2.0, 1.8], [0.5, 1.0, 1.0])
    # FedPIT ends at 2.2 with AUC 0.5: the control at 2.2 is halfway to round 1, AUC 0.75.
    fake_run(tmp_path / "fedpit-b0.5-s0", "fedpit", [2.4, 2.3, 2.2], [0.5, 0.5, 0.5])
    return collect_runs([tmp_path])


def test_matched_rows_by_hand(runs) -> None:
    rows = {(r.method, r.reference): r for r in matched_rows(runs, resamples=50)}
    row = rows[("fedpit β=0.5", "fedavg-damped β=0.5")]
    assert row.seeds == [0]
    assert row.test_loss[0] == pytest.approx(0.4)  # 2.2 − 1.8
    assert row.auc is not None and row.auc[0] == pytest.approx(-0.25)
    # Calibrated against base losses of 1.0: the same ordering, the same AUCs.
    assert row.auc_calibrated is not None and row.auc_calibrated[0] == pytest.approx(-0.25)
    # Canary log-probs: control −50 → −40 → −40, so −45 at 2.2; FedPIT ends at −45.
    assert row.canary == pytest.approx(0.0)
    # The other direction: FedPIT never gets as useful as the control's final model.
    back = rows[("fedavg-damped β=0.5", "fedpit β=0.5")]
    assert back.auc is None and back.test_loss[0] == pytest.approx(-0.4)
    cells = table([row, back])
    assert cells[0][4].startswith("-0.250 [") and cells[1][4] == "not reached"


def test_each_beta_method_is_paired_with_the_control_at_its_own_beta(tmp_path: Path) -> None:
    fake_run(tmp_path / "d5", "fedavg-damped", [2.4, 2.0, 1.8], [0.5, 1.0, 1.0])
    fake_run(tmp_path / "d2", "fedavg-damped", [2.4, 2.1, 1.9], [0.5, 1.0, 1.0], beta=0.25)
    fake_run(tmp_path / "p5", "fedpit", [2.4, 2.3, 2.2], [0.5, 0.5, 0.5], arm="random")
    fake_run(tmp_path / "p2", "fedpit", [2.4, 2.3, 2.2], [0.5, 0.5, 0.5], beta=0.25)
    fake_run(tmp_path / "a", "fedavg", [2.4, 2.0, 1.8], [0.5, 1.0, 1.0])
    runs = collect_runs([tmp_path])
    control = {r.group: r.control_group for r in runs}
    assert control == {
        "fedavg-damped β=0.5": None,
        "fedavg-damped β=0.25": None,
        "fedpit[random] β=0.5": "fedavg-damped β=0.5",
        "fedpit β=0.25": "fedavg-damped β=0.25",
        "fedavg": None,
    }
    pairs = {(r.group, r.reference) for r in control_rows(runs, resamples=10)}
    assert pairs == {
        ("fedpit[random] β=0.5", "fedavg-damped β=0.5"),
        ("fedpit β=0.25", "fedavg-damped β=0.25"),
    }
    matched = {(r.method, r.reference) for r in matched_rows(runs, resamples=10)}
    assert ("fedpit β=0.25", "fedavg-damped β=0.5") not in matched
    assert {("fedpit β=0.25", "fedavg-damped β=0.25"), ("fedpit β=0.25", "fedavg")} <= matched


def test_runs_without_per_example_test_losses_are_left_out(tmp_path: Path, runs) -> None:
    old = tmp_path / "fedpit-b0.5-s0" / "metrics.jsonl"
    lines = [json.loads(x) for x in old.read_text().splitlines()]
    old.write_text(
        "".join(
            json.dumps({k: v for k, v in x.items() if k != "test_losses"}) + "\n" for x in lines
        )
    )
    assert matched_rows(collect_runs([tmp_path]), resamples=10) == []


def test_the_report_leads_with_the_matched_table_and_pairs_the_control(
    tmp_path: Path, runs
) -> None:
    [row] = control_rows(runs, resamples=50)
    assert (row.group, row.reference) == ("fedpit β=0.5", "fedavg-damped β=0.5")
    assert row.auc[0] == pytest.approx(-0.5)  # final models: 0.5 against 1.0
    _, md_path = render(runs, tmp_path / "out")
    md = md_path.read_text()
    assert md.index("## Leakage at matched utility") < md.index("## Results (Table 2 layout)")
    assert "| fedpit β=0.5 | fedavg-damped β=0.5 | 0 | +0.400" in md
    # How much of the synthetic data touched private spans or canaries, per row.
    assert "synthetic ≥ 8-token span share" in md and "synthetic canary touches" in md
    fedpit_row = next(x for x in md.splitlines() if x.startswith("| fedpit β=0.5 | 1 |"))
    assert fedpit_row.rstrip(" |").endswith("0.125 | 2.000")


def test_compare_leakage_prints_the_difference_at_matched_utility(tmp_path: Path, runs, capsys):
    import argparse

    from fedpit.eval.compare import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    a, b = tmp_path / "fedavg-damped-b0.5-s0", tmp_path / "fedpit-b0.5-s0"
    args = parser.parse_args(["compare-leakage", str(a), str(b), "--resamples", "100"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "At matched utility: B's final model against A's per-round curve" in out
    assert "test loss           B−A +0.400" in out
    assert "MIA AUC             B−A(at B's loss) -0.250" in out
    # The other way round, A's curve never gets as useful as B's final model.
    args = parser.parse_args(["compare-leakage", str(b), str(a), "--resamples", "100"])
    assert args.func(args) == 0
    assert "not reached" in capsys.readouterr().out
