"""``fedpit sweep``: the grid plan, skipping finished cells, rerunning interrupted ones.

A fake runner stands in for the ``fedpit run`` subprocess: it parses the command line,
creates the run directory the way ``fedpit run`` does and writes ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from fedpit.cli.report import add_commands
from fedpit.config.load import from_flat, parse_overrides
from fedpit.errors import ConfigError
from fedpit.runs.rundir import create_run_dir, write_json
from fedpit.runs.sweep import (
    command,
    elsewhere,
    load_sweep,
    plan,
    run_sweep,
    subprocess_runner,
    subset,
    sweep_lock,
)

SWEEP = """\
fed.rounds = 1
data.examples-per-client = 4

[sweep]
methods = ["fedavg", "fedpit"]
betas = [0.0, 0.5]
seeds = [0, 1]
dir = "{dir}"
"""
CELLS = [
    "fedavg-s0",
    "fedpit-b0-s0",
    "fedpit-b0.5-s0",
    "fedavg-s1",
    "fedpit-b0-s1",
    "fedpit-b0.5-s1",
]


class FakeRunner:
    """Records the cells it ran; fails the cells named in ``fail``."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.ran: list[str] = []
        self.fail = fail

    def __call__(self, cmd: list[str], log: Path) -> int:
        assert cmd[:4] == [sys.executable, "-m", "fedpit", "run"]
        cfg = from_flat(parse_overrides(cmd[4:]))
        rd = create_run_dir(cfg)  # refuses a non-empty directory, as `fedpit run` does
        name = rd.root.name
        self.ran.append(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("fake\n")
        if name in self.fail:
            return 1
        write_json(rd.summary, {"method": cfg.method, "beta": cfg.fed.beta, "rounds": 1})
        return 0


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(SWEEP.format(dir=tmp_path / "sweep"))
    return path


def _status(spec_root: Path) -> dict[str, str]:
    doc = json.loads((spec_root / "sweep.json").read_text())
    return {c["name"]: c["status"] for c in doc["cells"]}


def test_plan_varies_beta_only_for_fedpit(sweep_file: Path) -> None:
    spec = load_sweep(sweep_file)
    cells = plan(spec)
    assert [c.name for c in cells] == CELLS
    assert [c.beta for c in cells] == [None, 0.0, 0.5, None, 0.0, 0.5]
    assert all(c.run_dir == spec.root / c.name for c in cells)
    cmd = command(cells[2], spec.base)
    assert cmd[:4] == [sys.executable, "-m", "fedpit", "run"]
    assert parse_overrides(cmd[4:]) == {
        "fed.rounds": "1",
        "data.examples-per-client": "4",
        "method": "fedpit",
        "seed": "0",
        "run-dir": str(spec.root / "fedpit-b0.5-s0"),
        "fed.beta": "0.5",
    }
    assert "fed.beta" not in parse_overrides(command(cells[0], spec.base)[4:])


def test_plan_skips_the_damped_control_at_beta_zero(tmp_path: Path) -> None:
    # β = 0 makes damped FedAvg upload W_g unchanged: the base model, nothing to run.
    path = tmp_path / "damped.toml"
    path.write_text(
        f'[sweep]\nmethods = ["fedavg-damped", "fedpit"]\nbetas = [0.0, 0.5]\n'
        f'dir = "{tmp_path / "sweep"}"\n'
    )
    names = [c.name for c in plan(load_sweep(path))]
    assert names == ["fedavg-damped-b0.5-s0", "fedpit-b0-s0", "fedpit-b0.5-s0"]


def test_run_skip_done_and_rerun_partial(sweep_file: Path) -> None:
    spec = load_sweep(sweep_file)
    runner = FakeRunner()
    run_sweep(spec, runner)
    assert runner.ran == CELLS
    assert set(_status(spec.root).values()) == {"done"}
    # a second session: everything is done, nothing runs
    again = FakeRunner()
    run_sweep(spec, again)
    assert again.ran == []
    # an interrupted cell (no summary.json, leftovers) is removed and rerun
    partial = spec.root / "fedpit-b0-s1"
    (partial / "summary.json").unlink()
    (partial / "metrics.jsonl").write_text('{"round": 0}\n')
    third = FakeRunner()
    rows = run_sweep(spec, third)
    assert third.ran == ["fedpit-b0-s1"]
    assert not (partial / "metrics.jsonl").exists()
    assert all(r["status"] == "done" for r in rows)


def test_failed_cell_is_recorded_and_retried(sweep_file: Path) -> None:
    spec = load_sweep(sweep_file)
    run_sweep(spec, FakeRunner(fail=("fedavg-s1",)))
    status = _status(spec.root)
    assert status["fedavg-s1"] == "failed" and status["fedavg-s0"] == "done"
    doc = json.loads((spec.root / "sweep.json").read_text())
    assert next(c for c in doc["cells"] if c["name"] == "fedavg-s1")["returncode"] == 1
    retry = FakeRunner()
    run_sweep(spec, retry)
    assert retry.ran == ["fedavg-s1"]


def test_changed_configuration_is_refused(sweep_file: Path) -> None:
    run_sweep(load_sweep(sweep_file), FakeRunner())
    spec = load_sweep(sweep_file, {"fed.rounds": "2"})
    with pytest.raises(ConfigError, match=r"fed\.rounds: 1 → 2"):
        run_sweep(spec, FakeRunner())


def test_bad_sweep_files(tmp_path: Path) -> None:
    def write(text: str) -> Path:
        path = tmp_path / "s.toml"
        path.write_text(text)
        return path

    with pytest.raises(ConfigError, match="no \\[sweep\\] table"):
        load_sweep(write("fed.rounds = 1\n"))
    with pytest.raises(ConfigError, match="'seed' is set by the sweep grid"):
        load_sweep(write('seed = 3\n[sweep]\nmethods = ["fedavg"]\n'))
    with pytest.raises(ConfigError, match=r"sweep\.methods has 'fedsgd'"):
        load_sweep(write('[sweep]\nmethods = ["fedsgd"]\n'))
    with pytest.raises(ConfigError, match=r"did you mean 'fed\.rounds'"):
        load_sweep(write('fed.round = 3\n[sweep]\nmethods = ["fedavg"]\n'))
    with pytest.raises(ConfigError, match=r"fed\.beta = 1\.5 is invalid"):
        load_sweep(write('[sweep]\nmethods = ["fedpit"]\nbetas = [1.5]\n'))
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "missing.toml")


def test_dry_run_prints_plan_and_writes_nothing(
    sweep_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = load_sweep(sweep_file)
    FakeRunner()(command(plan(spec)[0], spec.base), tmp_path / "log")  # fedavg-s0 is done
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(sweep_file), "--dry-run"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "6 cells" in out
    assert "fedavg-s0" in out and "skip (done)" in out
    assert "fedpit-b0.5-s1" in out and "fed.beta=0.5" in out
    assert not (spec.root / "sweep.json").exists()
    assert sorted(p.name for p in spec.root.iterdir()) == ["fedavg-s0"]


def test_subprocess_runner_echoes_and_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cmd = [sys.executable, "-c", "import sys; print('line one'); sys.exit(3)"]
    assert subprocess_runner(cmd, tmp_path / "logs" / "cell.log") == 3
    assert (tmp_path / "logs" / "cell.log").read_text() == "line one\n"
    assert "line one" in capsys.readouterr().out


def test_post_steps_run_once_per_finished_cell(tmp_path: Path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(
        SWEEP.replace("seeds = [0, 1]", 'seeds = [0]\npost = ["attack {{run}} --limit 4"]').format(
            dir=tmp_path / "sweep"
        )
    )
    spec = load_sweep(path)
    posts: list[list[str]] = []
    runs = FakeRunner()

    def runner(cmd: list[str], log: Path) -> int:
        if cmd[3] == "run":
            return runs(cmd, log)
        posts.append(cmd[3:])
        return 0

    run_sweep(spec, runner)
    cells = plan(spec)
    assert [p[0] for p in posts] == ["attack"] * len(cells)
    assert posts[0] == ["attack", str(cells[0].run_dir), "--limit", "4"]
    assert all((c.run_dir / ".sweep-post-0.done").exists() for c in cells)
    posts.clear()
    run_sweep(spec, runner)  # resumed: nothing left to do
    assert posts == [] and runs.ran == [c.name for c in cells]


class ResumingRunner(FakeRunner):
    """Also answers ``fedpit run --resume DIR``: finishes the run in place."""

    def __init__(self, resume_rc: int = 0) -> None:
        super().__init__()
        self.resumed: list[str] = []
        self.resume_rc = resume_rc

    def __call__(self, cmd: list[str], log: Path) -> int:
        if cmd[4:5] != ["--resume"]:
            return super().__call__(cmd, log)
        run_dir = Path(cmd[5])
        self.resumed.append(run_dir.name)
        assert (run_dir / "server-state.safetensors").is_file()
        if self.resume_rc == 0:
            write_json(run_dir / "summary.json", {"resumed": True})
        return self.resume_rc


def _interrupt_after_a_round(spec_root: Path, name: str) -> Path:
    """Make a finished cell look like one killed after round 1 (server state kept)."""
    cell = spec_root / name
    (cell / "summary.json").unlink()
    (cell / "server-state.safetensors").write_bytes(b"state")
    return cell


def test_interrupted_federated_cell_resumes_instead_of_rerunning(sweep_file: Path) -> None:
    spec = load_sweep(sweep_file)
    run_sweep(spec, FakeRunner())
    cell = _interrupt_after_a_round(spec.root, "fedpit-b0.5-s0")
    runner = ResumingRunner()
    rows = run_sweep(spec, runner)
    assert runner.resumed == ["fedpit-b0.5-s0"] and runner.ran == []
    assert json.loads((cell / "summary.json").read_text()) == {"resumed": True}
    assert all(r["status"] == "done" for r in rows)


def test_failed_resume_falls_back_to_a_fresh_run(sweep_file: Path) -> None:
    spec = load_sweep(sweep_file)
    run_sweep(spec, FakeRunner())
    cell = _interrupt_after_a_round(spec.root, "fedavg-s1")
    runner = ResumingRunner(resume_rc=2)
    run_sweep(spec, runner)
    assert runner.resumed == ["fedavg-s1"] and runner.ran == ["fedavg-s1"]
    assert json.loads((cell / "summary.json").read_text())["method"] == "fedavg"
    assert not (cell / "server-state.safetensors").exists()


def test_a_cell_run_with_another_configuration_is_not_resumed(sweep_file: Path) -> None:
    spec = load_sweep(sweep_file)
    run_sweep(spec, FakeRunner())
    cell = _interrupt_after_a_round(spec.root, "fedavg-s0")
    config = (cell / "config.toml").read_text()
    (cell / "config.toml").write_text(config.replace('"fed.rounds" = 1', '"fed.rounds" = 3'))
    runner = ResumingRunner()
    run_sweep(spec, runner)
    assert runner.resumed == [] and runner.ran == ["fedavg-s0"]


def test_remaining_time_counts_each_pending_cell_by_its_group() -> None:
    from fedpit.runs.sweep import Cell, group_of, remaining_seconds

    def cell(method: str, beta: float | None, seed: int) -> Cell:
        return Cell(method, beta, seed, Path())

    assert (
        group_of(cell("fedpit", 0.5, 2)) == "fedpit-b0.5"
        and group_of(cell("local", None, 1)) == "local"
    )
    measured = {"fedavg": [100.0, 200.0], "fedpit-b0.5": [600.0]}
    pending = [cell("fedavg", None, 2), cell("fedpit", 0.5, 2), cell("fedmit", None, 2)]
    # 150 (fedavg mean) + 600 (fedpit β 0.5) + 300 (fedmit unmeasured: the mean of all three)
    assert remaining_seconds(measured, pending) == pytest.approx(1050.0)
    assert remaining_seconds(measured, []) == 0.0
    assert remaining_seconds({}, pending) != remaining_seconds({}, pending)  # nan: unknown


def test_sweep_prints_progress_after_each_cell(
    sweep_file: Path, capsys: pytest.CaptureFixture
) -> None:
    run_sweep(load_sweep(sweep_file), FakeRunner())
    lines = [x for x in capsys.readouterr().out.splitlines() if "cells done" in x]
    assert lines[0].startswith("[sweep] 1/6 cells done, about ")
    assert lines[-1] == "[sweep] 6/6 cells done"


def test_a_failed_post_step_is_reported_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(
        SWEEP.replace("seeds = [0, 1]", 'seeds = [0]\npost = ["attack {{run}}", "eval {{run}}"]')
        .replace('methods = ["fedavg", "fedpit"]', 'methods = ["fedavg"]')
        .format(dir=tmp_path / "sweep")
    )
    runs, posts, fail = FakeRunner(), [], {"attack"}

    def runner(cmd: list[str], log: Path) -> int:
        if cmd[3] == "run":
            return runs(cmd, log)
        posts.append(cmd[3])
        return 1 if cmd[3] in fail else 0

    rows = run_sweep(load_sweep(path), runner)
    assert posts == ["attack"]  # the eval step waits for the attack
    assert rows[0]["status"] == "done" and rows[0]["post_failed"].endswith("post-0.log")
    fail.clear()
    posts.clear()
    rows = run_sweep(load_sweep(path), runner)  # the next invocation retries it
    assert posts == ["attack", "eval"] and rows[0]["post_failed"] is None
    # The command's exit status and last lines say so.
    import fedpit.runs.sweep

    failed_row = {"name": "fedavg-s0", "status": "done", "post_failed": "x.log"}
    monkeypatch.setattr(fedpit.runs.sweep, "run_sweep", lambda spec: [failed_row])
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(path)])
    assert args.func(args) == 1
    assert "post steps failed: fedavg-s0" in capsys.readouterr().out


ARMS = """\
fed.rounds = 1

[sweep]
methods = ["fedavg", "fedavg-damped", "fedpit"]
betas = [0.5]
seeds = [0]
dir = "{dir}"

[sweep.arms.greedy]

[sweep.arms.sampled]
"synth.do-sample" = true
synth.temperature = 1.0
"""


def test_arms_apply_their_keys_to_the_self_generating_methods_only(tmp_path: Path) -> None:
    path = tmp_path / "arms.toml"
    path.write_text(ARMS.format(dir=tmp_path / "sweep"))
    spec = load_sweep(path)
    cells = plan(spec)
    assert [c.name for c in cells] == [
        "fedavg-s0",
        "fedavg-damped-b0.5-s0",  # the control varies β like FedPIT, but has no arms
        "fedpit-greedy-b0.5-s0",
        "fedpit-sampled-b0.5-s0",
    ]
    keys = parse_overrides(command(cells[3], spec.base)[4:])
    assert keys["synth.do-sample"] == "true" and keys["synth.temperature"] == "1.0"
    assert keys["arm"] == "sampled" and keys["fed.beta"] == "0.5"
    greedy = parse_overrides(command(cells[2], spec.base)[4:])
    assert "synth.do-sample" not in greedy and greedy["arm"] == "greedy"
    assert "arm" not in parse_overrides(command(cells[1], spec.base)[4:])
    # Each arm's cell is a run of its own configuration, and knows its arm.
    runner = FakeRunner()
    run_sweep(spec, runner)
    cfg = from_flat(parse_overrides(command(cells[3], spec.base)[4:]))
    assert cfg.synth.do_sample and cfg.arm == "sampled"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[sweep.arms.x]\nseed = 3\n", "which the grid sets"),
        ('[sweep.arms."Bad Name"]\n', "arm name"),
        ('[sweep.arms.x]\n"synth.no-such-key" = 1\n', "unknown configuration key"),
    ],
)
def test_bad_arms_are_refused_before_anything_runs(tmp_path: Path, table, message) -> None:
    path = tmp_path / "arms.toml"
    path.write_text(
        f'[sweep]\nmethods = ["fedpit"]\nseeds = [0]\ndir = "{tmp_path / "s"}"\n\n{table}'
    )
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def test_a_subset_runs_more_seeds_of_some_methods_in_the_same_dir(sweep_file: Path) -> None:
    spec = load_sweep(sweep_file)
    part = subset(spec, methods=["fedpit"], seeds=[2, 3])
    assert part.root == spec.root and part.betas == spec.betas
    assert [c.name for c in plan(part)] == [
        "fedpit-b0-s2",
        "fedpit-b0.5-s2",
        "fedpit-b0-s3",
        "fedpit-b0.5-s3",
    ]
    runner = FakeRunner()
    run_sweep(part, runner)
    assert runner.ran == [c.name for c in plan(part)]
    assert subset(spec) == spec
    with pytest.raises(ConfigError, match=r"--methods has 'fedprox'.*allowed: fedavg, fedpit"):
        subset(spec, methods=["fedprox"])
    with pytest.raises(ConfigError, match=r"--arms has 'x'.*allowed: \(none\)"):
        subset(spec, arms=["x"])
    with pytest.raises(ConfigError, match="--seeds is empty"):
        subset(spec, seeds=[])


def test_the_cli_subset_and_its_errors(sweep_file: Path, capsys: pytest.CaptureFixture[str]):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(sweep_file), "--seeds", "5", "--methods", "fedavg"])
    args.dry_run = True
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "(1 cells)" in out and "fedavg-s5" in out
    args = parser.parse_args(["sweep", str(sweep_file), "--seeds", "one", "--dry-run"])
    with pytest.raises(ConfigError, match="give integers"):
        args.func(args)


def test_a_probe_runs_elsewhere_without_post_steps(
    sweep_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_file.write_text(sweep_file.read_text() + 'post = ["attack {run}"]\n')
    spec = load_sweep(sweep_file, {"fed.rounds": 2})
    probe = elsewhere(spec, tmp_path / "probe", post=False)
    assert probe.post == () and spec.post == ("attack {run}",)
    assert [c.run_dir for c in plan(probe)] == [tmp_path / "probe" / c for c in CELLS]
    assert elsewhere(spec) == spec
    runner = FakeRunner()
    run_sweep(probe, runner)
    assert runner.ran == CELLS and not spec.root.exists()
    assert all("fed.rounds=2" in " ".join(command(c, probe.base)) for c in plan(probe))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        elsewhere(spec, tmp_path / "file")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(
        ["sweep", str(sweep_file), "--dir", str(tmp_path / "p2"), "--no-post", "--dry-run"]
    )
    assert args.func(args) == 0
    assert str(tmp_path / "p2") in capsys.readouterr().out


def test_a_second_sweep_in_the_same_dir_is_refused(sweep_file: Path) -> None:
    spec = load_sweep(sweep_file)
    runner = FakeRunner()
    busy = pytest.raises(ConfigError, match=r"another sweep is running in .*\(pid \d+\)")
    with sweep_lock(spec.root), busy:
        run_sweep(spec, runner)
    assert runner.ran == []
    run_sweep(spec, runner)  # the lock is released when the first sweep ends
    assert runner.ran == CELLS


def test_a_cell_finished_while_the_sweep_ran_is_skipped_not_rerun(sweep_file: Path) -> None:
    spec = load_sweep(sweep_file)
    first, later = plan(spec)[0], plan(spec)[-1]
    inner = FakeRunner()

    def runner(cmd: list[str], log: Path) -> int:
        rc = inner(cmd, log)
        if inner.ran == [first.name]:  # meanwhile, the last cell finishes elsewhere
            inner(command(later, spec.base), log)
        return rc

    run_sweep(spec, runner)
    assert inner.ran.count(later.name) == 1  # not deleted and run again
    assert _status(spec.root)[later.name] == "done"
