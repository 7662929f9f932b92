"""The client round: what leaves the client, isolation, and method equivalences."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from fedpit import client as client_mod
from fedpit.adapters import LOCAL, PUBLIC, get_state, initial_state, mix
from fedpit.client import RoundInfo, run_client_round
from fedpit.config import from_flat
from fedpit.data.example import Example
from fedpit.privacy import ALLOWED_COUNTERS, NUM_EXAMPLES
from fedpit.synth.pipeline import SynthResult
from tests.helpers import TINY_LORA, examples, tiny_runtime


def tiny_cfg(**kw):
    base = {
        "model.max-length": 96,
        "train.batch-size": 2,
        "train.lr": 5e-2,
        "synth.keep": 2,
        "lora.rank": TINY_LORA.rank,
        "lora.alpha": TINY_LORA.alpha,
        "lora.dropout": 0.0,
    }
    base.update(kw)
    return from_flat(base)


SYNTHETIC = [
    Example(
        f"syn-{i}",
        f"What causes condition {i} ?",
        "",
        f"Condition {i} is caused by a gene.",
        {"synthetic": "1"},
    )
    for i in range(3)
]


@pytest.fixture
def scripted_synth(monkeypatch):
    """Replace SynGen with a scripted result (generation itself is tested elsewhere)."""
    calls = []

    def fake(rt, cfg, info, private, adapter):
        calls.append(adapter)
        return SynthResult(examples=list(SYNTHETIC), attempts=5, rejected={"not_novel": 2})

    monkeypatch.setattr(client_mod, "synthesize", fake)
    return calls


def start_state(rt):
    return initial_state(get_state(rt.model, PUBLIC), 3)


def test_fedpit_upload_is_exactly_the_mix_and_allowlisted_counters(
    tiny_model_dir, tmp_path, scripted_synth
):
    rt = tiny_runtime(tiny_model_dir)
    cfg = tiny_cfg(**{"fed.beta": 0.3})
    private = examples(4)
    g = start_state(rt)
    update = run_client_round(rt, cfg, RoundInfo(0, 1, 2, 0), private, g, tmp_path)
    w_l, w_s = get_state(rt.model, LOCAL), get_state(rt.model, PUBLIC)
    expected = mix(w_l, w_s, 0.3)
    assert set(update.state) == set(expected)
    assert all(torch.allclose(update.state[k], expected[k]) for k in expected)
    # Both adapters trained and differ from W_g and from each other.
    assert any(not torch.equal(w_l[k], g[k]) for k in g)
    assert any(not torch.equal(w_s[k], g[k]) for k in g)
    assert any(not torch.equal(w_l[k], w_s[k]) for k in g)
    # Only allowlisted numeric counters; n_k is the private set size.
    assert set(update.counters) == ALLOWED_COUNTERS
    assert update.counters[NUM_EXAMPLES] == 4
    assert update.counters["synth-selected"] == 2 and update.counters["synth-attempts"] == 5
    assert scripted_synth == [PUBLIC]
    # Private text stays in the client's directory, not in the upload.
    assert (tmp_path / "synthetic" / "round-001.jsonl").exists()
    assert (tmp_path / "adapters" / LOCAL / "adapter_model.safetensors").exists()
    # The client keeps its own copy of exactly what it sent (the `upload:ID` attack target).
    from safetensors.torch import load_file

    sent = load_file(str(tmp_path / "adapters" / "upload" / "adapter_model.safetensors"))
    assert all(torch.equal(sent[k], update.state[k]) for k in update.state)


def test_no_private_text_or_ifs_in_the_outgoing_message(tiny_model_dir, tmp_path, scripted_synth):
    from flwr.app import MetricRecord, RecordDict

    from fedpit.records import state_to_record

    rt = tiny_runtime(tiny_model_dir)
    private = examples(4)
    update = run_client_round(
        rt, tiny_cfg(), RoundInfo(0, 1, 2, 0), private, start_state(rt), tmp_path
    )
    content = RecordDict(
        {"arrays": state_to_record(update.state), "metrics": MetricRecord(update.counters)}
    )
    assert set(content) == {"arrays", "metrics"}
    assert not content.config_records
    blob = repr(dict(content["metrics"])) + " ".join(content["arrays"].keys())
    for ex in private + SYNTHETIC:
        assert ex.instruction not in blob and ex.output not in blob
    assert "ifs" not in blob.lower() and "loss" not in blob.lower()


def test_fedpit_with_beta_one_equals_fedavg(tiny_model_dir, tmp_path, scripted_synth):
    private = examples(4)

    def run(method, beta):
        rt = tiny_runtime(tiny_model_dir)
        cfg = tiny_cfg(method=method, **{"fed.beta": beta})
        return run_client_round(
            rt, cfg, RoundInfo(1, 1, 2, 0), private, start_state(rt), tmp_path / method
        ).state

    fedpit, fedavg = run("fedpit", 1.0), run("fedavg", 0.5)
    assert all(torch.equal(fedpit[k], fedavg[k]) for k in fedavg)


def test_fedprox_mu_changes_the_client_update(tiny_model_dir, tmp_path):
    private = examples(4)

    def run(method, mu):
        rt = tiny_runtime(tiny_model_dir)
        cfg = tiny_cfg(method=method, **{"fed.proximal-mu": mu})
        return run_client_round(
            rt, cfg, RoundInfo(1, 1, 2, 0), private, start_state(rt), tmp_path / f"{method}-{mu}"
        ).state

    avg, prox = run("fedavg", 5.0), run("fedprox", 5.0)
    assert any(not torch.allclose(avg[k], prox[k]) for k in avg)


def test_fedpit_v1_uploads_w_s_and_keeps_w_l_across_rounds(
    tiny_model_dir, tmp_path, scripted_synth
):
    rt = tiny_runtime(tiny_model_dir)
    cfg = tiny_cfg(method="fedpit-v1")
    private = examples(4)
    g = start_state(rt)
    first = run_client_round(rt, cfg, RoundInfo(0, 1, 2, 0), private, g, tmp_path)
    assert all(torch.equal(first.state[k], get_state(rt.model, PUBLIC)[k]) for k in g)
    kept = get_state(rt.model, LOCAL)
    assert (tmp_path / "adapters" / "local" / "adapter_model.safetensors").exists()
    run_client_round(rt, cfg, RoundInfo(0, 2, 2, 0), private, first.state, tmp_path)
    # Round 2 continued from the persisted W_l, not from W_g.
    fresh = tiny_runtime(tiny_model_dir)
    fresh_update = run_client_round(
        fresh,
        dataclasses.replace(cfg, method="fedpit-v1"),
        RoundInfo(0, 2, 2, 0),
        private,
        first.state,
        tmp_path / "other",
    )
    del fresh_update, kept
    a = load_file(str(tmp_path / "adapters" / "local" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "other" / "adapters" / "local" / "adapter_model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_damped_fedavg_uploads_beta_w_l_plus_one_minus_beta_w_g(tiny_model_dir, tmp_path):
    """The no-synthetic control: FedAvg's W_l, damped towards W_g by β, computed by hand."""
    private = examples(4)

    def run(method):
        rt = tiny_runtime(tiny_model_dir)
        cfg = tiny_cfg(method=method, **{"fed.beta": 0.25})
        g = start_state(rt)
        update = run_client_round(rt, cfg, RoundInfo(1, 1, 2, 0), private, g, tmp_path / method)
        return update, g, rt

    damped, g, rt = run("fedavg-damped")
    fedavg, _, _ = run("fedavg")
    w_l = fedavg.state  # FedAvg uploads W_l; the control trains it the same way
    for k in g:
        by_hand = 0.25 * w_l[k] + 0.75 * g[k]
        assert torch.allclose(damped.state[k], by_hand, atol=1e-7), k
    assert any(not torch.equal(damped.state[k], w_l[k]) for k in g)
    assert damped.counters["synth-attempts"] == 0
    # W_s is never trained: the public slot still holds W_g.
    w_s = get_state(rt.model, PUBLIC)
    assert all(torch.equal(w_s[k], g[k]) for k in g)
    # The client keeps W_l (which is not what it sent) as its private attack target.
    kept = load_file(
        str(tmp_path / "fedavg-damped" / "adapters" / LOCAL / "adapter_model.safetensors")
    )
    assert all(torch.allclose(kept[k].float(), w_l[k]) for k in w_l)
