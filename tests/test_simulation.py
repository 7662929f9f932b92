"""2 clients × 2 rounds under Flower's Simulation Engine on the tiny model."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from fedpit.cli.main import main
from fedpit.model.resolve import load_model
from fedpit.runs.rundir import read_jsonl
from tests.helpers import examples
from tests.test_policy import strict

UPLOAD = "adapters/upload/adapter_model.safetensors"
"""A client's own copy of its last upload, inside its directory."""


def write_data(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "id": e.id,
                    "instruction": e.instruction,
                    "input": "",
                    "output": e.output,
                    "source": e.meta["source"],
                }
            )
            + "\n"
            for e in examples(24)
        )
    )
    return data


def tiny_args(tiny_model_dir, data, run_dir, *extra):
    return [
        "run",
        f"model.name={tiny_model_dir}",
        f"data.name={data}",
        "data.partition=iid",
        "data.num-clients=2",
        "data.examples-per-client=4",
        "data.test-size=4",
        "fed.rounds=2",
        "synth.keep=2",
        "synth.attempts=3",
        "synth.max-instruction-tokens=6",
        "synth.max-response-tokens=6",
        "train.batch-size=2",
        "model.max-length=64",
        "lora.rank=4",
        "lora.alpha=8",
        f"run-dir={run_dir}",
        *extra,
    ]


def test_fedpit_two_clients_two_rounds_under_flower(tiny_model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(tiny_args(tiny_model_dir, write_data(tmp_path), run_dir))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "DATA:" in out and "FedPIT run finished" in out
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[1]["clients"]["num-examples"] == 8  # both clients reported n_k = 4
    assert rows[1]["clients"]["synth-attempts"] == 6
    # Federated evaluation: each client scored the global model on its own held-out set.
    assert rows[0]["client_eval_loss"] is None
    assert all(r["client_eval_loss"] > 0 for r in rows[1:])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["client_rounds"] == 4  # 2 clients × 2 rounds
    for r in (1, 2):
        assert (run_dir / "rounds" / f"round-{r:03d}" / "adapter_model.safetensors").exists()
    for c in ("0", "1"):
        lines = read_jsonl(run_dir / "clients" / c / "metrics.jsonl")
        assert [x["round"] for x in lines] == [1, 2]
        # The server's base fingerprint matched; each node audited both uploads.
        audit = read_jsonl(run_dir / "clients" / c / "audit.jsonl")
        assert [x["round"] for x in audit] == [1, 2]
        assert len({x["base_fingerprint"] for x in audit}) == 1
    model = PeftModel.from_pretrained(
        load_model(str(tiny_model_dir), torch.device("cpu"), torch.float32), run_dir / "global"
    )
    # The global adapter is the n_k-weighted mean (n_k = 4 each) of the round-2 uploads, as
    # the clients kept them, and PEFT loads it as such.
    sent = [load_file(str(run_dir / "clients" / c / UPLOAD)) for c in ("0", "1")]
    final = load_file(str(run_dir / "global" / "adapter_model.safetensors"))
    assert set(final) == set(sent[0])
    for k in final:
        torch.testing.assert_close(final[k], (sent[0][k] + sent[1][k]) / 2, rtol=0, atol=1e-7)
    loaded = {n.replace(".default.", "."): p for n, p in model.named_parameters() if "lora_" in n}
    assert set(loaded) == set(final) and all(torch.equal(loaded[k], final[k]) for k in final)
    # Every JSON file the run wrote is strict JSON (null, never NaN or Infinity).
    written = [*run_dir.rglob("*.json"), *run_dir.rglob("*.jsonl")]
    assert any(p.name == "metrics.jsonl" for p in written)
    for path in written:
        text = path.read_text()
        docs = text.splitlines() if path.suffix == ".jsonl" else [text]
        for doc in filter(str.strip, docs):
            json.loads(doc, parse_constant=strict)
    # A degenerate round (no candidate kept) shows in the server's metrics.
    assert all("synth-empty" in r["clients"] for r in rows[1:])


def test_fedadam_under_flower_moves_the_global_adapter_by_the_adam_step(tiny_model_dir, tmp_path):
    """One round: W_g¹ = W_g⁰ + η̂·m/(√v + τ) from the clients' own copies of their uploads."""
    from fedpit.adapters import initial_state

    run_dir = tmp_path / "adam"
    extra = ("method=fedadam", "fed.server-lr=0.01", "fed.server-tau=0.002", "fed.rounds=1")
    assert main(tiny_args(tiny_model_dir, write_data(tmp_path), run_dir, *extra)) == 0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["clients"]["synth-attempts"] == 0  # no self-generation in FedAdam
    assert json.loads((run_dir / "summary.json").read_text())["method"] == "fedadam"

    got = load_file(str(run_dir / "global" / "adapter_model.safetensors"))
    start = initial_state({k: v.float() for k, v in got.items()}, seed=0)  # the run's W_g⁰
    sent = [load_file(str(run_dir / "clients" / c / UPLOAD)) for c in ("0", "1")]
    weights = [read_jsonl(run_dir / "clients" / c / "audit.jsonl")[0]["num_examples"] for c in "01"]
    assert weights == [4, 4]
    b1, b2, eta, tau = 0.9, 0.99, 0.01, 0.002
    scale = eta * (1 - b2**2) ** 0.5 / (1 - b1**2)  # bias-corrected for round 1
    for k, w in start.items():
        delta = (sent[0][k].double() + sent[1][k].double()) / 2 - w.double()
        by_hand = w.double() + scale * (1 - b1) * delta / ((1 - b2) ** 0.5 * delta.abs() + tau)
        torch.testing.assert_close(got[k].double(), by_hand, rtol=1e-4, atol=1e-6, msg=k)
        if "lora_B" in k:  # W_g⁰'s B is zero: B is exactly what the round moved
            assert float((by_hand - w).abs().mean()) > 1e-4


@pytest.mark.parametrize("method", ["local", "local-selfgen", "centralized"])
def test_standalone_baselines_write_the_same_schema(tiny_model_dir, tmp_path, method):
    run_dir = tmp_path / method
    assert (
        main(
            tiny_args(
                tiny_model_dir,
                write_data(tmp_path),
                run_dir,
                f"method={method}",
                "train.centralized-epochs=2",
            )
        )
        == 0
    )
    rows = read_jsonl(run_dir / "metrics.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = 1 if method == "centralized" else 2
    assert [r["round"] for r in rows] == list(range(rounds + 1))
    assert summary["method"] == method and summary["rounds"] == rounds
    assert rows[-1]["test_loss"] != rows[0]["test_loss"]
    if method == "centralized":
        assert rows[1]["clients"]["num-examples"] == 8  # both clients' data pooled
        assert (run_dir / "global" / "adapter_model.safetensors").exists()
    else:
        assert rows[0]["test_loss_per_model"] == [rows[0]["test_loss"]]  # the base model
        for row in rows[1:]:  # then one model per client; the row's loss is their mean
            per_model = row["test_loss_per_model"]
            assert len(per_model) == 2
            assert row["test_loss"] == pytest.approx(sum(per_model) / 2)
            # Each client trains its own model on its own data.
            assert per_model[0] != per_model[1]
        assert (run_dir / "clients" / "1" / "adapters" / "model").exists()
    if method == "local-selfgen":
        assert rows[1]["clients"]["synth-attempts"] == 6


def test_fedpit_with_beta_one_gives_the_fedavg_global_adapter(tiny_model_dir, tmp_path):
    data = write_data(tmp_path)
    runs = {}
    for method in ("fedpit", "fedavg"):
        run_dir = tmp_path / f"beta1-{method}"
        extra = (f"method={method}", "fed.beta=1.0", "lora.dropout=0.05")
        assert main(tiny_args(tiny_model_dir, data, run_dir, *extra)) == 0
        runs[method] = load_file(str(run_dir / "global" / "adapter_model.safetensors"))
    fedpit, fedavg = runs["fedpit"], runs["fedavg"]
    assert set(fedpit) == set(fedavg)
    assert all(torch.equal(fedpit[k], fedavg[k]) for k in fedavg)
    assert any(torch.count_nonzero(v) for k, v in fedavg.items() if "lora_B" in k)


def test_the_default_console_is_quiet_and_the_logs_are_kept(tiny_model_dir, tmp_path, capfd):
    run_dir = tmp_path / "quiet"
    args = tiny_args(tiny_model_dir, write_data(tmp_path), run_dir, "method=fedavg")
    assert main(args) == 0
    out, err = capfd.readouterr()
    lines = (out + err).splitlines()
    assert max(len(line) for line in lines) <= 200, [x for x in lines if len(x) > 200]
    assert [x.split(" |")[0] for x in lines if x.startswith("round ")] == [
        "round 0/2",
        "round 1/2",
        "round 2/2",
    ]
    text = out + err
    assert "Warning" not in text and "INFO" not in text and "ClientAppActor" not in text
    assert any(x.startswith(("DATA:", "MODEL:", "METHOD:")) for x in lines)
    # Flower's records are kept in full in the run directory.
    flower = (run_dir / "logs" / "flower.log").read_text()
    assert "configure_train" in flower
