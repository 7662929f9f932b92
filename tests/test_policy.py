"""The node's own privacy policy: checked before any work, whatever the server sends."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from flwr.common import MessageType

from fedpit.errors import ConfigError
from fedpit.fed import client_app
from fedpit.fed.client import RoundInfo, run_client_round
from fedpit.fed.records import METRICS
from fedpit.lm.runtime import get_runtime
from fedpit.privacy.audit import AUDIT_FILE
from fedpit.privacy.policy import NodePolicy, PolicyError, check_train, policy_from_node_config
from tests import test_client_app
from tests.helpers import examples, tiny_runtime
from tests.test_client import start_state, tiny_cfg

message = test_client_app.message


@pytest.fixture
def node(tiny_model_dir, tmp_path):
    """test_client_app's deployment-style node, without the policy it was given."""
    cfg, context, state_dir = test_client_app.node.__wrapped__(tiny_model_dir, tmp_path)
    for key in [k for k in context.node_config if k.startswith("policy-")]:
        del context.node_config[key]
    return cfg, context, state_dir


def _files(path):
    return sorted(p.relative_to(path) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize(
    ("keys", "refused"),
    [
        ({"method": "fedpit", "fed.beta": 1.0}, "fed.beta = 1.0, this node allows at most 0.5"),
        ({"method": "fedavg"}, "method = 'fedavg', this node allows only fedpit"),
        ({"method": "fedmit"}, "method = 'fedmit'"),
        ({"method": "fedpit", "synth.max-copied-span": 0}, "synth.max-copied-span = 0"),
        ({"method": "fedpit", "synth.max-copied-span": 20}, "span guard on at 1 to 8 words"),
    ],
)
def test_the_default_policy_refuses_unmixed_uploads_before_any_work(node, keys, refused):
    cfg, context, state_dir = node
    cfg = tiny_cfg(**{"model.name": cfg.model.name, **keys})
    fingerprint = get_runtime(cfg.model, cfg.lora).fingerprint
    with pytest.raises(PolicyError, match=refused.replace("(", r"\(").replace(")", r"\)")):
        client_app.app(message(cfg, fingerprint), context)
    assert _files(state_dir) == []  # nothing trained, generated, logged or sent


def test_dp_required_by_the_node(node, tmp_path):
    cfg, context, state_dir = node
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[policy]\nmethods = ["fedavg"]\nmax-beta = 1.0\nrequire-dp = true\n'
        "min-noise-multiplier = 0.5\nmax-clip-norm = 2.0\n"
    )
    context.node_config["policy-file"] = str(policy)
    fingerprint = get_runtime(cfg.model, cfg.lora).fingerprint
    base = {"model.name": cfg.model.name, "method": "fedavg"}
    for keys, refused in (
        ({}, "dp.mode = 'off'"),
        ({"dp.mode": "client-fixed", "dp.noise-multiplier": 0.1}, "dp.noise-multiplier = 0.1"),
        ({"dp.mode": "client-fixed", "dp.clip-norm": 5.0}, "dp.clip-norm = 5.0"),
    ):
        with pytest.raises(PolicyError, match=refused):
            client_app.train(message(tiny_cfg(**base, **keys), fingerprint), context)
        assert _files(state_dir) == []
    # An allowed configuration completes, and the audit line names the policy in force.
    ok = tiny_cfg(**base, **{"dp.mode": "client-fixed", "dp.noise-multiplier": 1.0})
    reply = client_app.train(message(ok, fingerprint), context)
    assert METRICS in reply.content
    [line] = [json.loads(x) for x in (state_dir / AUDIT_FILE).read_text().splitlines()]
    assert line["policy"]["source"] == str(policy)
    assert line["policy"]["values"]["require-dp"] is True
    assert line["policy"]["sha256"] == policy_from_node_config(context.node_config, True).digest


def test_an_allowed_round_completes_and_records_the_default_policy(node):
    cfg, context, state_dir = node
    cfg = tiny_cfg(**{"model.name": cfg.model.name, "method": "fedavg-damped"})
    fingerprint = get_runtime(cfg.model, cfg.lora).fingerprint
    client_app.train(message(cfg, fingerprint), context)
    [line] = [json.loads(x) for x in (state_dir / AUDIT_FILE).read_text().splitlines()]
    assert line["policy"]["values"] == NodePolicy().values()
    assert line["policy"]["source"] == "the default policy"


def test_federated_evaluation_needs_the_nodes_permission(node, tmp_path):
    cfg, context, _ = node
    fingerprint = get_runtime(cfg.model, cfg.lora).fingerprint
    msg = message(cfg, fingerprint, kind=MessageType.EVALUATE)
    with pytest.raises(PolicyError, match="federated-eval = false"):
        client_app.evaluate(msg, context)
    held_out = tmp_path / "held-out.jsonl"
    held_out.write_text(
        "".join(
            json.dumps({"instruction": e.instruction, "input": "", "output": e.output}) + "\n"
            for e in examples(5, "t")
        )
    )
    context.node_config.update(
        {
            "test-path": str(held_out),
            "policy-federated-eval": "true",
            "policy-max-eval-examples": 2,
        }
    )
    reply = client_app.evaluate(msg, context)
    assert reply.content[METRICS]["num-examples"] == 2.0  # at most the node's limit


def test_simulated_nodes_without_a_policy_keep_todays_behaviour():
    assert policy_from_node_config({"partition-id": 0}, deployed=False) is None
    assert policy_from_node_config({"data-path": "x"}, deployed=True) == NodePolicy()
    cfg = tiny_cfg(method="fedavg")
    with pytest.raises(PolicyError):
        check_train(cfg, NodePolicy())
    check_train(cfg, dataclasses.replace(NodePolicy(), methods=("fedavg",)))


@pytest.mark.parametrize(
    ("node_config", "message_part"),
    [
        ({"policy-max-beta": "high"}, "policy max-beta = 'high'; expected float"),
        ({"policy-max-betta": 0.5}, "unknown policy key 'max-betta'"),
        ({"policy-methods": "fedavg,fedsgd"}, "policy methods has 'fedsgd'"),
        ({"policy-file": "/nonexistent/policy.toml"}, "does not exist"),
    ],
)
def test_bad_policies_are_clear_errors(node_config, message_part):
    with pytest.raises(ConfigError, match=message_part):
        policy_from_node_config(node_config, deployed=True)


def test_a_second_run_starts_from_nothing_of_the_first(node):
    cfg, context, state_dir = node
    cfg = tiny_cfg(**{"model.name": cfg.model.name, "method": "fedpit-v1", "synth.attempts": 1})
    fingerprint = get_runtime(cfg.model, cfg.lora).fingerprint
    client_app.train(message(cfg, fingerprint), context)
    first = state_dir / "runs" / "4242"
    assert (first / "adapters").is_dir()
    second = dataclasses.replace(context, run_id=5151)
    client_app.train(message(cfg, fingerprint), second)
    # Each run keeps its own private state (fedpit-v1's persisted W_l among it) …
    assert (state_dir / "runs" / "5151" / "adapters").is_dir()
    lines = [json.loads(x) for x in (first / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1  # the second run wrote nothing into the first run's record
    # … and one audit log per node covers both.
    audit = [json.loads(x) for x in (state_dir / AUDIT_FILE).read_text().splitlines()]
    assert [a["run_id"] for a in audit] == [4242, 5151]


def test_under_dp_nodes_with_different_n_k_send_identical_counters(tiny_model_dir, tmp_path):
    def counters(n):
        rt = tiny_runtime(tiny_model_dir)
        cfg = tiny_cfg(method="fedavg", **{"dp.mode": "client-fixed"})
        update = run_client_round(
            rt, cfg, RoundInfo(0, 1, 2, 0), examples(n), start_state(rt), tmp_path / str(n)
        )
        return json.dumps(update.counters, sort_keys=True).encode()

    assert counters(2) == counters(6)
    rt = tiny_runtime(tiny_model_dir)
    plain = run_client_round(
        rt,
        tiny_cfg(method="fedavg"),
        RoundInfo(0, 1, 2, 0),
        examples(6),
        start_state(rt),
        tmp_path / "p",
    )
    assert plain.counters["seconds-total"] > 0 and plain.counters["num-examples"] == 6
    assert torch.is_tensor(next(iter(plain.state.values())))


def test_a_written_policy_reads_back_and_allows_exactly_its_run(tmp_path):
    from fedpit.privacy.policy import policy_for, write_policy

    cfg = tiny_cfg(method="fedavg", **{"fed.rounds": 3, "eval.client-test-size": 2})
    path = write_policy(tmp_path / "policy.toml", policy_for(cfg))
    read = policy_from_node_config({"policy-file": str(path)}, deployed=True)
    assert read.values() == policy_for(cfg).values() and read.source == str(path)
    check_train(cfg, read)
    for other in ({"method": "fedmit"}, {"fed.rounds": 4}):
        with pytest.raises(PolicyError):
            check_train(tiny_cfg(**{"method": "fedavg", "fed.rounds": 3, **other}), read)


def strict(constant: str) -> None:
    """``json.loads`` hook: NaN and Infinity are not JSON."""
    raise AssertionError(f"{constant} written to a JSON file")


@pytest.fixture
def no_candidates(monkeypatch):
    from fedpit.fed import client as client_mod
    from fedpit.synth.pipeline import SynthResult

    monkeypatch.setattr(
        client_mod,
        "synthesize",
        lambda rt, cfg, info, private, adapter: SynthResult([], attempts=3, rejected={"format": 3}),
    )


def test_a_degenerate_round_is_said_and_uploads_the_damped_update(
    tiny_model_dir, tmp_path, no_candidates, capsys
):
    from fedpit.adapters import LOCAL, get_state, mix

    rt = tiny_runtime(tiny_model_dir)
    cfg = tiny_cfg(**{"fed.beta": 0.5})
    g = start_state(rt)
    update = run_client_round(rt, cfg, RoundInfo(0, 1, 2, 0), examples(4), g, tmp_path)
    assert update.counters["synth-empty"] == 1.0 and update.counters["synth-selected"] == 0
    expected = mix(get_state(rt.model, LOCAL), g, 0.5)
    assert all(torch.allclose(update.state[k], expected[k]) for k in g)
    assert "SynGen kept no synthetic candidate; the update is β·W_l" in capsys.readouterr().out
    # The client's private log is strict JSON: W_s's undefined loss is null, not NaN.
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line, parse_constant=strict)
        assert row["loss-public"] is None


def test_a_degenerate_round_can_be_skipped(tiny_model_dir, tmp_path, no_candidates):
    from fedpit.fed.client import SkippedRound

    rt = tiny_runtime(tiny_model_dir)
    cfg = tiny_cfg(**{"synth.on-empty": "skip"})
    with pytest.raises(SkippedRound, match=r"synth\.on-empty = skip: no update sent"):
        run_client_round(rt, cfg, RoundInfo(0, 1, 2, 0), examples(4), start_state(rt), tmp_path)
    assert not (tmp_path / "adapters").exists()


def test_the_poisoning_client_scales_its_own_update_and_a_node_refuses_to(tiny_model_dir, tmp_path):
    def upload(**keys):
        rt = tiny_runtime(tiny_model_dir)
        cfg = tiny_cfg(method="fedavg", **keys)
        g = start_state(rt)
        update = run_client_round(
            rt, cfg, RoundInfo(0, 1, 2, 0), examples(4), g, tmp_path / str(keys)
        )
        return update.state, g

    honest, g = upload()
    scaled, _ = upload(**{"attack.poison": "scale", "attack.poison-factor": 10.0})
    for k in g:
        assert torch.allclose(scaled[k], g[k] + 10.0 * (honest[k] - g[k]), atol=1e-5)
    other, _ = upload(**{"attack.poison": "flip", "attack.poison-client": 1})
    assert all(torch.equal(other[k], honest[k]) for k in g)  # client 0 is not the attacker
    cfg = tiny_cfg(method="fedavg", **{"attack.poison": "flip"})
    with pytest.raises(PolicyError, match=r"attack\.poison = 'flip'"):
        check_train(cfg, dataclasses.replace(NodePolicy(), methods=("fedavg",)))
