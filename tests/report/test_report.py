"""``fedpit report`` on fake run directories: records, table values, plots, CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from fedpit.cli.report import add_commands
from fedpit.errors import DataError, FedPITError
from fedpit.report.collect import collect_runs, load_run, mean_std
from fedpit.report.plots import frontier_points, leakage_by_round, utility_metric
from fedpit.report.render import mixed_rows, render
from tests.report import write_grid, write_run

PLOTS = ("frontier_rounds.png", "test_loss.png", "leakage.png", "frontier.png", "synthetic.png")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake grid rendered once through the ``fedpit report`` command."""
    root = tmp_path_factory.mktemp("report")
    grid = write_grid(root / "sweep")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["report", str(grid), "--out", str(root / "out")])
    assert args.func(args) == 0
    return root / "out"


def _rows(md: str) -> dict[str, list[str]]:
    """The first table of a Markdown report, by its first column."""
    table = md[md.index("\n| ") :].split("\n\n")[0]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_mean_std_is_sample_std() -> None:
    assert mean_std([1.0]) == (1.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert std == pytest.approx(
        (((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2) ** 0.5
    )


def test_collect_reads_every_result_file(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "r", "fedpit", 0.5, 1))
    assert (run.method, run.beta, run.seed, run.group) == ("fedpit", 0.5, 1, "fedpit β=0.5")
    assert [r.round for r in run.rounds] == [0, 1, 2]
    assert run.rounds[2].counters["synth-rejected-not_novel"] == 12.0
    assert run.final_test_loss == pytest.approx(2.0 - 0.2 + 0.2)
    ev = run.final_eval("heldout")
    assert ev is not None and ev.rouge_l == pytest.approx(0.36) and ev.judge is None
    final, base = run.final_attack(), run.base_attack()
    assert final is not None and final.target == "global" and final.mia_auc == pytest.approx(0.67)
    assert base is not None and base.mia_auc_calibrated is None
    assert [a.round for a in run.round_attacks()] == [1, 2]


def test_collect_tolerates_missing_results(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "partial", "fedavg", None, 0, finished=False))
    assert not run.finished and run.beta is None
    assert run.final_test_loss is None and run.final_eval("heldout") is None
    assert run.final_attack() is None and run.base_attack() is None
    _, md = render([run], tmp_path / "out")
    text = md.read_text()
    assert "UNFINISHED" in text and "No data for this plot" in text
    assert (tmp_path / "out" / "test_loss.png").is_file()  # per-round losses are there


def test_collect_errors(tmp_path: Path) -> None:
    with pytest.raises(FedPITError, match="does not exist"):
        collect_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FedPITError, match="neither a run directory"):
        collect_runs([tmp_path / "empty"])
    root = write_run(tmp_path / "bad", "fedavg", None, 0)
    (root / "attack" / "global.json").write_text("{not json")
    with pytest.raises(DataError, match=r"global\.json:1"):
        load_run(root)


def test_table_values(report_dir: Path) -> None:
    rows = _rows((report_dir / "report.md").read_text())
    assert list(rows) == ["fedavg", "fedmit", "fedpit β=0", "fedpit β=0.5", "fedpit β=1"]
    fedavg = rows["fedavg"]
    # ROUGE-L 0.30 and 0.40: mean 0.35, sample std sqrt(2 · 0.05²) = 0.0707
    assert fedavg["heldout ROUGE-L"] == "0.350 ± 0.071"
    assert fedavg["heldout token F1"] == "0.400 ± 0.071"
    assert fedavg["heldout judge WT"] == "0.550 ± 0.071"
    # test loss at round 2: 1.8 and 2.0
    assert fedavg["utility test loss"] == "1.900 ± 0.141"
    # MIA AUC 0.90 and 0.92: mean 0.91, std sqrt(2 · 0.01²) = 0.0141
    assert fedavg["leakage MIA AUC"] == "0.910 ± 0.014"
    assert fedavg["leakage MIA AUC calibrated"] == "0.860 ± 0.014"
    assert fedavg["leakage extraction ROUGE-L members"] == "0.205 ± 0.007"
    assert fedavg["leakage base floor"] == "0.100 ± 0.000"
    assert fedavg["leakage loss gap"] == "0.500 ± 0.000"  # 2.0 − 1.5
    # canary log-prob −40 + 10 · AUC: −31.0 and −30.8
    assert fedavg["leakage canary log-prob"] == "-30.900 ± 0.141"
    assert fedavg["leakage canary exposure"] == "0.910 ± 0.014"
    assert rows["fedmit"]["heldout judge WT"] == "unavailable"
    assert rows["fedpit β=0"]["heldout judge WT"] == "—"
    assert rows["fedpit β=0.5"]["leakage MIA AUC"] == "0.660 ± 0.014"
    assert rows["fedpit β=1"]["heldout ROUGE-L"] == "0.330 ± 0.071"
    assert {r["runs"] for r in rows.values()} == {"2"}
    assert "Warning" not in (report_dir / "report.md").read_text()


def test_html_has_table_images_and_provenance(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    for name in PLOTS:
        assert f'<img src="{name}"' in page
    assert "<td>0.350 ± 0.071</td>" in page and "<th colspan=4>heldout</th>" in page
    assert page.count('<li class="prov">') == 10
    assert "fedpit-b0.5-s1: fedpit β=0.5, seed 1, 2 rounds" in page
    assert "http" not in page  # self-contained


@pytest.mark.parametrize("name", PLOTS)
def test_plots_are_drawn(report_dir: Path, name: str) -> None:
    image = imread(report_dir / name)
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert float(np.var(image[..., :3])) > 0.01


def test_report_cli_is_wired(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["sweep", "x.toml", "fed.rounds=1", "--dry-run"])
    assert (args.config, args.dry_run, args.overrides) == ("x.toml", True, ["fed.rounds=1"])
    with pytest.raises(SystemExit):
        parser.parse_args(["report", str(tmp_path)])  # --out is required
    args = parser.parse_args(["report", "a", "b", "--out", "o"])
    assert (args.paths, args.out) == (["a", "b"], "o")


def test_frontier_points(tmp_path: Path) -> None:
    runs = collect_runs([write_grid(tmp_path / "grid")])
    label, test_set = utility_metric(runs, ["heldout"])
    assert test_set == "heldout" and "ROUGE-L" in label
    points = frontier_points(runs, test_set)
    (x, xs), (y, ys) = points["fedpit β=0"]
    assert (x, y) == (pytest.approx(0.56), pytest.approx(0.29))
    assert (xs, ys) == (pytest.approx(0.02 / 2**0.5), pytest.approx(0.1 / 2**0.5))
    # without utility evaluations the frontier falls back to the test loss
    for run in runs[:1]:
        (run.path / "eval" / "global__heldout.json").unlink()
    runs = collect_runs([tmp_path / "grid"])
    assert utility_metric(runs, ["heldout"])[1] is None
    assert frontier_points(runs, None)["fedavg"][1][0] == pytest.approx(1.9)


def test_rows_mixing_configurations_are_flagged(tmp_path: Path) -> None:
    a = load_run(write_run(tmp_path / "a", "fedavg", None, 0))
    b = load_run(write_run(tmp_path / "b", "fedavg", None, 0))
    c = load_run(write_run(tmp_path / "c", "fedpit", 0.5, 1))
    assert mixed_rows([a, b, c]) == ["fedavg: repeated seeds [0, 0]"]
    (tmp_path / "d").mkdir()
    cfg = (tmp_path / "c" / "config.toml").read_text().replace('rank" = 16', 'rank" = 8')
    (tmp_path / "d" / "config.toml").write_text(cfg.replace("seed = 1", "seed = 2"))
    d = load_run(tmp_path / "d")
    assert mixed_rows([c, d]) == ["fedpit β=0.5: runs differ in lora.rank"]
    _, md = render([c, d], tmp_path / "out")
    assert "**Warning:** fedpit β=0.5: runs differ in lora.rank" in md.read_text()


def test_canary_and_judge_columns_only_when_measured(tmp_path: Path) -> None:
    import json

    from fedpit.report.render import table_columns

    root = write_run(tmp_path, "fedavg", None, 0)
    for path in (root / "attack").glob("*.json"):
        doc = json.loads(path.read_text())
        path.write_text(json.dumps({**doc, "canaries": None}))
    for path in (root / "eval").glob("*.json"):
        doc = json.loads(path.read_text())
        path.write_text(json.dumps({**doc, "judge": None}))
    names = [c.label for c in table_columns([load_run(root)])]
    assert "loss gap" in names and "ROUGE-L" in names
    assert not any("canary" in n or "judge" in n for n in names)


def test_save_runs_keeps_numbers_only_and_rebuilds_the_same_table(tmp_path: Path) -> None:
    grid = write_grid(tmp_path / "sweep")
    run = next(p for p in sorted(grid.iterdir()) if (p / "config.toml").is_file())
    (run / "attack" / "global.jsonl").write_text(
        '{"kind": "member", "id": "m0", "loss": 0.5, "base_loss": 1.0, '
        '"generation": "a private answer"}\n{"kind": "canary", "id": "c0", '
        '"generation": "a secret"}\n'
    )
    (run / "global").mkdir(exist_ok=True)
    (run / "global" / "adapter_model.safetensors").write_bytes(b"weights")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["report", str(grid), "--out", str(out), "--save-runs"])
    assert args.func(args) == 0
    saved = out / "runs" / run.name
    files = sorted(str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file())
    assert "config.toml" in files and "metrics.jsonl" in files and "attack/global.json" in files
    # Of the attack rows only a numbers-only copy: ids and losses, for compare-leakage.
    jsonl = [f for f in files if f.endswith(".jsonl")]
    assert jsonl == ["attack/global.scores.jsonl", "metrics.jsonl"]
    scores = (saved / "attack" / "global.scores.jsonl").read_text()
    assert scores == '{"kind": "member", "id": "m0", "loss": 0.5, "base_loss": 1.0}\n'
    assert not any(f.startswith("global") for f in files)
    # The archive alone rebuilds the report, and rebuilding in place copies nothing.
    args = parser.parse_args(["report", str(out / "runs"), "--out", str(out), "--save-runs"])
    before = (out / "report.md").read_text()
    assert args.func(args) == 0
    assert _rows((out / "report.md").read_text()) == _rows(before)
    # An archive archived elsewhere keeps its numbers-only rows.
    again = ["report", str(out / "runs"), "--out", str(tmp_path / "again"), "--save-runs"]
    args = parser.parse_args(again)
    assert args.func(args) == 0
    copied = tmp_path / "again" / "runs" / run.name / "attack" / "global.scores.jsonl"
    assert copied.read_text() == scores


def test_a_local_run_reports_the_mean_over_its_clients_models(tmp_path: Path) -> None:
    import json

    root = write_run(tmp_path, "fedavg", None, 0)  # then made global-less, like `local`
    for kind, stem in (("attack", "global"), ("eval", "global__heldout")):
        doc = json.loads((root / kind / f"{stem}.json").read_text())
        (root / kind / f"{stem}.json").unlink()
        for cid, scale in ((0, 1.0), (1, 0.5)):
            doc = {**doc, "target": f"client:{cid}", "round": None}
            if kind == "attack":
                doc["mia"] = {**doc["mia"], "auc": 0.8 * scale}
                doc["canaries"] = doc["canaries"] if cid == 0 else None
            else:
                doc["metrics"] = {**doc["metrics"], "rouge_l": 0.4 * scale}
            name = stem.replace("global", f"client-{cid}")
            (root / kind / f"{name}.json").write_text(json.dumps(doc))
    for path in (root / "attack").glob("round*.json"):
        path.unlink()
    run = load_run(root)
    assert leakage_by_round(run, "mia_auc") == {}  # no per-round curve, not a lone base point
    final = run.final_attack()
    assert final is not None and final.target == "clients (mean)"
    assert final.mia_auc == pytest.approx(0.6)  # (0.8 + 0.4) / 2
    canary = json.loads((root / "attack" / "client-0.json").read_text())["canaries"]
    assert final.canary_logprob == canary["mean_logprob"]  # only client 0 planted any
    heldout = run.final_eval("heldout")
    assert heldout is not None and heldout.rouge_l == pytest.approx(0.3)
    assert run.base_attack() is not None and run.base_attack().target == "base"


def test_finished_only_leaves_out_running_cells(tmp_path: Path, capsys) -> None:
    grid = write_grid(tmp_path / "sweep")
    write_run(grid / "fedavg-s9", "fedavg", None, 9, finished=False)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["report", str(grid), "--out", str(out), "--finished-only"])
    assert args.func(args) == 0
    assert "left out (no summary.json yet): fedavg-s9" in capsys.readouterr().out
    assert _rows((out / "report.md").read_text())["fedavg"]["runs"] == "2"
    with pytest.raises(FedPITError, match="no finished run"):
        only = parser.parse_args(
            ["report", str(grid / "fedavg-s9"), "--out", str(out), "--finished-only"]
        )
        only.func(only)


def test_table_note_gives_the_sampling_error_of_the_auc(report_dir: Path) -> None:
    from fedpit.eval.attack.mia import auc_standard_error
    from tests.report import BASE_VALUES, SEEDS, values

    aucs = [values(m, b, s)[1] for m, b in BASE_VALUES for s in SEEDS]
    errors = [auc_standard_error(a, 48, 32) for a in aucs]
    md = (report_dir / "report.md").read_text()
    assert (
        "Sampling error of one run's MIA AUC (48 vs 32 examples, Hanley–McNeil): "
        f"{min(errors):.3f}–{max(errors):.3f}"
    ) in md
    assert "Sampling error" in (report_dir / "report.html").read_text()


def write_attack_rows(run: Path, members: list[float], non_members: list[float]) -> None:
    """Per-example attack rows of the final global model (base loss 1.0 throughout)."""
    import json

    rows = [{"kind": "member", "id": f"m{i}", "loss": x} for i, x in enumerate(members)]
    rows += [{"kind": "non_member", "id": f"n{i}", "loss": x} for i, x in enumerate(non_members)]
    text = "".join(json.dumps({**r, "base_loss": 1.0, "generation": "text"}) + "\n" for r in rows)
    (run / "attack" / "global.jsonl").write_text(text)


def test_the_paired_table_compares_each_method_with_fedavg_by_seed(tmp_path: Path) -> None:
    grid = write_grid(tmp_path / "sweep")
    # FedAvg separates members perfectly (AUC 1); FedPIT β=0.5 at chance level (AUC 0.5:
    # member scores -0.1, -1.5, -3 beat 2, 1, 0 of the non-members' -1, -2: 3 of 6 pairs).
    for seed in (0, 1):
        write_attack_rows(grid / f"fedavg-s{seed}", [0.1, 0.2, 0.3], [1.0, 2.0])
        write_attack_rows(grid / f"fedpit-b0.5-s{seed}", [0.1, 1.5, 3.0], [1.0, 2.0])
    write_attack_rows(grid / "fedmit-s1", [0.1, 0.2, 0.3], [1.0, 2.0])  # seed 1 only
    write_attack_rows(grid / "fedpit-b0-s0", [0.1, 0.2], [1.0, 2.0])  # other examples
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["report", str(grid), "--out", str(out), "--save-runs"])
    assert args.func(args) == 0
    md = (out / "report.md").read_text()
    section = md[md.index("## Leakage relative to FedAvg") :].split("\n## ")[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    cells = {r[0].strip(): [c.strip() for c in r[2:]] for r in rows[1:]}
    assert {r[1].strip() for r in rows[1:]} == {"fedavg"}  # no damped control in this grid
    # FedMIT ties FedAvg at seed 1 in every resample; β=0 was attacked on other
    # examples and β=1 has no rows: both left out.
    assert cells == {
        "fedmit": ["1", "+0.000 [+0.000, +0.000]", "+0.000 [+0.000, +0.000]"],
        "fedpit β=0.5": ["0, 1", cells["fedpit β=0.5"][1], cells["fedpit β=0.5"][2]],
    }
    assert cells["fedpit β=0.5"][1].startswith("-0.500 [")
    assert cells["fedpit β=0.5"][1] == cells["fedpit β=0.5"][2]  # equal base losses
    assert "Leakage relative to FedAvg" in (out / "report.html").read_text()
    # The archive keeps the numbers the table needs: rebuilt from it, the table is the same.
    again = tmp_path / "again"
    args = parser.parse_args(["report", str(out / "runs"), "--out", str(again)])
    assert args.func(args) == 0
    rebuilt = (again / "report.md").read_text()
    assert rebuilt[rebuilt.index("## Leakage relative") :].split("\n## ")[0] == section


def test_round_frontier_pairs_each_rounds_test_loss_with_its_auc(tmp_path: Path) -> None:
    from fedpit.report.plots import round_frontier

    run = load_run(write_run(tmp_path / "fedavg-s0", "fedavg", None, 0))
    # Test loss 2.0 − 0.1 per round; AUC 0.5 (base), (0.5 + 0.9) / 2, 0.9 (final).
    assert round_frontier(run) == [
        (0, pytest.approx(2.0), pytest.approx(0.5)),
        (1, pytest.approx(1.9), pytest.approx(0.7)),
        (2, pytest.approx(1.8), pytest.approx(0.9)),
    ]
