"""Faults under Flower's Simulation Engine on the tiny model: a crashing client, a killed server."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from fedpit.cli.main import _simulate, main
from fedpit.config.load import build_config
from fedpit.fed.server_state import load_server_state
from fedpit.fed.strategy import RoundFailedError
from fedpit.runs.rundir import create_run_dir, read_jsonl
from tests.test_simulation import tiny_args, write_data

FAST = ("method=fedavg", "eval.client-test-size=0")


def run_with_a_crashing_client(tiny_model_dir, tmp_path, *extra):
    """A 1-round run of 2 clients in which client 1's ClientApp raises."""
    data = write_data(tmp_path)
    args = tiny_args(tiny_model_dir, data, tmp_path / "run", *FAST, "fed.rounds=1", *extra)
    cfg = build_config(None, args[1:])
    rd = create_run_dir(cfg)
    # Client 1's state directory is a file, so its ClientApp raises when it saves its upload.
    (rd.root / "clients").mkdir()
    (rd.client_dir(1)).write_text("not a directory\n")
    return cfg, rd


def test_a_crashing_client_is_recorded_and_the_round_completes(tiny_model_dir, tmp_path):
    cfg, rd = run_with_a_crashing_client(tiny_model_dir, tmp_path)

    summary = _simulate(cfg, rd)

    rows = read_jsonl(rd.metrics)
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["clients"]["clients"] == 1  # aggregated without the crashed client
    assert rows[1]["clients"]["failed"] == 1 and rows[1]["clients"]["rejected"] == 0
    assert rows[1]["clients"]["num-examples"] == 4  # only client 0's n_k
    (problem,) = rows[1]["problems"]
    assert problem["kind"] == "error" and str(rd.client_dir(1)) in problem["reason"]
    (failure,) = read_jsonl(rd.failures)
    assert failure == {"round": 1, **problem}
    assert (rd.final_adapter / "adapter_model.safetensors").exists()
    assert summary["client_rounds"] == 1


def test_too_few_valid_updates_stop_the_run_with_a_clear_error(tiny_model_dir, tmp_path):
    cfg, rd = run_with_a_crashing_client(tiny_model_dir, tmp_path, "fed.min-clients=2")

    with pytest.raises(RoundFailedError) as err:
        _simulate(cfg, rd)

    message = str(err.value)
    assert "round 1: 1 valid update(s) from 2 sampled client(s)" in message
    assert "fewer than fed.min-clients = 2; nothing was aggregated" in message
    assert str(rd.client_dir(1)) in message  # the crashed client's error text
    (failure,) = read_jsonl(rd.failures)
    assert failure["round"] == 1 and failure["kind"] == "error"
    assert load_server_state(rd.server_state).round == 0  # resumable from the start
    assert not rd.round_adapter(1).exists() and not rd.summary.exists()


def wait_for_round(state_path, proc, timeout=600.0):
    """Poll the server state until a round completed; return that round."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"fedpit run exited ({proc.returncode}) before it could be killed")
        state = load_server_state(state_path) if state_path.exists() else None
        if state is not None and state.round >= 1:
            return state.round
        time.sleep(0.05)
    pytest.fail("no round completed in time")


def test_a_killed_server_resumes_to_the_uninterrupted_result(tiny_model_dir, tmp_path):
    data = write_data(tmp_path)
    # FedAdam: the result depends on the global adapter, the server's Adam moments and
    # the true round numbers (bias correction, the clients' seeds and LR schedule).
    extra = (*FAST, "method=fedadam", "fed.server-lr=0.01", "fed.rounds=3")
    killed = tmp_path / "killed"
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedpit", *tiny_args(tiny_model_dir, data, killed, *extra)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes Ray's children too
    )
    try:
        wait_for_round(killed / "server-state.safetensors", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    completed = load_server_state(killed / "server-state.safetensors").round
    assert 1 <= completed < 3, "the server finished before it was killed"
    assert not (killed / "summary.json").exists()

    assert main(["run", "--resume", str(killed)]) == 0
    reference = tmp_path / "reference"
    assert main(tiny_args(tiny_model_dir, data, reference, *extra)) == 0

    got = load_file(str(killed / "global" / "adapter_model.safetensors"))
    want = load_file(str(reference / "global" / "adapter_model.safetensors"))
    assert set(got) == set(want)
    assert all((got[k] == want[k]).all() for k in want)
    rows, ref_rows = read_jsonl(killed / "metrics.jsonl"), read_jsonl(reference / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert [r["test_loss"] for r in rows] == pytest.approx([r["test_loss"] for r in ref_rows])
    state = load_server_state(killed / "server-state.safetensors")
    ref_state = load_server_state(reference / "server-state.safetensors")
    assert state.round == 3 and set(state.optimizer) == set(ref_state.optimizer)
    assert all((state.optimizer[k] == ref_state.optimizer[k]).all() for k in state.optimizer)
    assert json.loads((killed / "summary.json").read_text())["rounds"] == 3


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", "is not a run directory (it has no config.toml)"),
        ("complete", "the run is already complete (2 rounds, summary.json written)"),
        ("standalone", "method local runs without a server and cannot be resumed"),
        ("overrides", "--resume continues a run with its saved config.toml"),
    ],
)
def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys, setup, message):
    run_dir = tmp_path / "run"
    extra = []
    if setup != "empty":
        cfg = build_config(
            None, [f"run-dir={run_dir}"] + (["method=local"] * (setup == "standalone"))
        )
        rd = create_run_dir(cfg)
        if setup == "complete":
            rd.summary.write_text("{}\n")
    else:
        run_dir.mkdir()
    if setup == "overrides":
        extra = ["fed.rounds=3"]
    assert main(["run", "--resume", str(run_dir), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedpit: error: ") and message in err
