import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedpit.config.load import from_flat
from fedpit.fed.server_state import ServerState, load_server_state, save_server_state
from fedpit.fed.strategy import (
    CLIENTS,
    FAILED,
    REJECTED,
    RoundFailedError,
    aggregate_counters,
    build_strategy,
)
from fedpit.privacy.allowlist import ALLOWED_COUNTERS
from tests.helpers import FakeGrid

pytestmark = pytest.mark.usefixtures("flower_task")


def reply(arrays, n, extra=None):
    return RecordDict(
        {
            "arrays": ArrayRecord(arrays),
            "metrics": MetricRecord({"num-examples": n, **(extra or {})}),
        }
    )


def counters(n):
    return {**{k: 0.0 for k in ALLOWED_COUNTERS}, "num-examples": float(n)}


GLOBAL = {"a": torch.zeros(2, 3), "b": torch.zeros(3, 2)}
TEMPLATE = {k: v.numpy() for k, v in GLOBAL.items()}


def configure(strat, server_round=1, n_nodes=3, arrays=None):
    """configure_train as Flower's loop calls it; returns the messages by node id."""
    msgs = strat.configure_train(
        server_round, ArrayRecord(arrays or GLOBAL), ConfigRecord(), FakeGrid(n_nodes)
    )
    return sorted(msgs, key=lambda m: m.metadata.dst_node_id)


def answer(msg, arrays, n=4):
    """A node's reply to ``msg``: the upload ``arrays`` with the full counter set."""
    return Message(reply(arrays, 0, counters(n)), reply_to=msg)


def fail(msg, reason="Traceback ... RuntimeError: disk full"):
    return Message(Error(code=2, reason=reason), reply_to=msg)


def strategy(method="fedavg", clients=3, **extra):
    seen = []
    cfg = from_flat({"method": method, "data.num-clients": clients, **extra})
    strat = build_strategy(cfg, lambda r, a, m: seen.append((r, a, m)), template=TEMPLATE)
    return strat, seen


@pytest.mark.parametrize("method", ["fedpit", "fedpit-v1", "fedavg-damped", "fedavg", "fedprox"])
def test_our_server_averages_the_uploads_weighted_by_n_k(method):
    strat, seen = strategy(method)
    rng = np.random.default_rng(0)
    ups = [
        {k: torch.tensor(rng.normal(size=v.shape)).float() for k, v in GLOBAL.items()}
        for _ in "abc"
    ]
    ns = [16, 4, 12]
    msgs = configure(strat)
    arrays, metrics = strat.aggregate_train(
        1, [answer(m, u, n) for m, u, n in zip(msgs, ups, ns, strict=True)]
    )
    for key in GLOBAL:
        by_hand = sum(n * u[key].double().numpy() for u, n in zip(ups, ns, strict=True)) / 32
        np.testing.assert_allclose(arrays[key].numpy(), by_hand, rtol=1e-6, atol=1e-7)
    assert metrics["num-examples"] == 32 and metrics[CLIENTS] == 3
    ((server_round, saved, _),) = seen  # the round hook saves exactly the aggregate
    assert server_round == 1 and all(
        np.array_equal(saved[k].numpy(), arrays[k].numpy()) for k in GLOBAL
    )


def test_fedadam_moves_the_global_adapter_by_adam_steps_computed_by_hand():
    """Two rounds of Reddi et al.'s FedAdam from the n_k-weighted mean delta, by hand."""
    eta, tau, b1, b2 = 0.05, 0.02, 0.9, 0.99  # β₁, β₂: Flower's defaults, which FedPIT keeps
    strat, seen = strategy("fedadam", 2, **{"fed.server-lr": eta, "fed.server-tau": tau})
    rng = np.random.default_rng(1)
    x = {k: rng.normal(size=v.shape) for k, v in GLOBAL.items()}
    m = {k: np.zeros(v.shape) for k, v in GLOBAL.items()}
    v = {k: np.zeros(s.shape) for k, s in GLOBAL.items()}
    for server_round in (1, 2):
        msgs = configure(strat, server_round, 2, arrays={k: torch.tensor(a) for k, a in x.items()})
        ups = [{k: (a + rng.normal(0, 0.1, a.shape)).astype(np.float32) for k, a in x.items()}]
        ups.append({k: (a - 0.3).astype(np.float32) for k, a in x.items()})
        replies = [
            answer(msg, {k: torch.tensor(a) for k, a in up.items()}, n)
            for msg, up, n in zip(msgs, ups, (3, 1), strict=True)
        ]
        arrays, _ = strat.aggregate_train(server_round, replies)
        scale = eta * np.sqrt(1 - b2 ** (server_round + 1)) / (1 - b1 ** (server_round + 1))
        for k in x:
            delta = (3 * ups[0][k].astype(np.float64) + ups[1][k]) / 4 - x[k]
            m[k] = b1 * m[k] + (1 - b1) * delta
            v[k] = b2 * v[k] + (1 - b2) * delta**2
            by_hand = x[k] + scale * m[k] / (np.sqrt(v[k]) + tau)
            np.testing.assert_allclose(arrays[k].numpy(), by_hand, rtol=1e-5, atol=1e-6)
            assert np.abs(by_hand - x[k]).mean() > 1e-3  # steps far above the tolerance
        x = {k: a.numpy() for k, a in arrays.items()}
    assert [r for r, _, _ in seen] == [1, 2]


def test_counters_are_summed_and_timings_averaged():
    recs = [
        reply({"w": torch.zeros(1)}, 16, {"synth-kept": 5, "seconds-total": 10.0}),
        reply({"w": torch.zeros(1)}, 8, {"synth-kept": 2, "seconds-total": 30.0}),
    ]
    out = aggregate_counters(recs, "num-examples")
    assert out["synth-kept"] == 7 and out["num-examples"] == 24 and out["seconds-total"] == 20.0
    assert out["clients"] == 2


def test_strategy_per_method_and_the_round_hook():
    seen = []
    cfg = from_flat(
        {
            "method": "fedprox",
            "fed.proximal-mu": 0.1,
            "data.num-clients": 4,
            "fed.clients-per-round": 2,
        }
    )
    strat = build_strategy(cfg, lambda r, a, m: seen.append((r, m)))
    assert type(strat).__name__ == "FedProx" and strat.proximal_mu == 0.1
    assert strat.min_train_nodes == 2 and strat.fraction_train == 0.5
    assert type(build_strategy(from_flat({"method": "fedadam"}), print)).__name__ == "FedAdam"
    assert type(build_strategy(from_flat({"method": "fedpit"}), print)).__name__ == "FedAvg"
    msgs = configure(strat, n_nodes=4, arrays={"w": torch.zeros(2)})
    assert len(msgs) == 2
    # Replies need metadata as if they came back from nodes.
    replies = [answer(m, {"w": torch.ones(2) * k}, 1 + k) for k, m in enumerate(msgs)]
    arrays, _ = strat.aggregate_train(1, replies)
    assert seen and seen[0][0] == 1
    np.testing.assert_allclose(arrays["w"].numpy(), np.ones(2) * (2 / 3))


@pytest.mark.parametrize("method", ["fedavg", "fedprox", "fedadam"])
def test_invalid_uploads_are_dropped_before_aggregation(method):
    strat, seen = strategy(method)
    problems = []
    strat.on_problems = lambda r, p: problems.append((r, p))
    nan_node, shape_node, good_node = configure(strat)
    good = {"a": torch.full((2, 3), 0.5), "b": torch.full((3, 2), -0.25)}
    replies = [
        answer(nan_node, {"a": torch.full((2, 3), float("nan")), "b": torch.ones(3, 2)}, 100),
        answer(shape_node, {"a": torch.ones(3, 3), "b": torch.ones(3, 2)}, 100),
        answer(good_node, good),
    ]
    arrays, metrics = strat.aggregate_train(1, replies)

    alone, _ = strategy(method)  # the same strategy given only the valid reply
    (only,) = [
        m for m in configure(alone) if m.metadata.dst_node_id == good_node.metadata.dst_node_id
    ]
    expected, _ = alone.aggregate_train(1, [answer(only, good)])
    for key in GLOBAL:
        np.testing.assert_array_equal(arrays[key].numpy(), expected[key].numpy())
    assert np.isfinite(arrays["a"].numpy()).all()
    assert metrics[CLIENTS] == 1 and metrics[REJECTED] == 2 and metrics[FAILED] == 0
    recorded = {p["node"]: p for p in strat.problems[1]}
    assert recorded[nan_node.metadata.dst_node_id]["kind"] == "rejected"
    assert "NaN/Inf" in recorded[nan_node.metadata.dst_node_id]["reason"]
    assert recorded[shape_node.metadata.dst_node_id]["reason"] == "a: shape (3, 3), expected (2, 3)"
    assert problems == [(1, strat.problems[1])] and seen[0][0] == 1


def test_a_crashed_and_a_silent_client_are_recorded_and_the_round_completes():
    strat, seen = strategy()
    crashed, silent, good = configure(strat)
    arrays, metrics = strat.aggregate_train(1, [fail(crashed), answer(good, GLOBAL)])
    assert arrays is not None and seen
    assert metrics[CLIENTS] == 1 and metrics[FAILED] == 2 and metrics[REJECTED] == 0
    kinds = {p["node"]: (p["kind"], p["reason"]) for p in strat.problems[1]}
    assert kinds[crashed.metadata.dst_node_id] == ("error", "Traceback ... RuntimeError: disk full")
    assert kinds[silent.metadata.dst_node_id] == ("timeout", "no reply in time")


def test_fewer_valid_updates_than_min_clients_fail_the_round_clearly():
    strat, seen = strategy(**{"fed.min-clients": 2})
    crashed, bad, good = configure(strat)
    bad_upload = {"a": torch.zeros(2, 3), "b": torch.zeros(3, 2, dtype=torch.float64)}
    replies = [fail(crashed, "boom"), answer(bad, bad_upload), answer(good, GLOBAL)]
    with pytest.raises(RoundFailedError) as err:
        strat.aggregate_train(1, replies)
    message = str(err.value)
    assert "round 1: 1 valid update(s) from 3 sampled client(s)" in message
    assert "fewer than fed.min-clients = 2" in message and "nothing was aggregated" in message
    assert f"node {crashed.metadata.dst_node_id} error: boom" in message
    assert "b: dtype float64, expected float32" in message
    assert not seen  # no global adapter was produced


def test_a_resumed_strategy_keeps_the_true_round_numbers():
    cfg = from_flat({"method": "fedavg", "data.num-clients": 2})
    seen = []
    strat = build_strategy(cfg, lambda r, a, m: seen.append(r), round_offset=3)
    msgs = strat.configure_train(1, ArrayRecord(GLOBAL), ConfigRecord(), FakeGrid(2))
    assert {m.content["config"]["server-round"] for m in msgs} == {4}
    strat.aggregate_train(1, [answer(m, GLOBAL) for m in msgs])
    assert seen == [4] and 4 in strat.problems


def test_fedadam_moments_survive_a_saved_and_restored_server_state(tmp_path):
    def uploads(msgs, k):
        return [
            answer(m, {key: torch.full_like(v, 0.1 * k * (i + 1)) for key, v in GLOBAL.items()})
            for i, m in enumerate(msgs)
        ]

    kwargs = {"fed.server-lr": 0.05}
    full, _ = strategy("fedadam", 2, **kwargs)
    arrays1, _ = full.aggregate_train(1, uploads(configure(full, 1, 2), 1))
    state = ServerState(1, {k: a.numpy() for k, a in arrays1.items()}, full.optimizer_state())
    assert set(state.optimizer) == {f"{m}/{k}" for m in ("m_t", "v_t") for k in GLOBAL}
    save_server_state(tmp_path / "state.safetensors", state)

    loaded = load_server_state(tmp_path / "state.safetensors")
    cfg = from_flat({"method": "fedadam", "data.num-clients": 2, **kwargs})
    resumed = build_strategy(cfg, print, round_offset=loaded.round, template=TEMPLATE)
    resumed.load_optimizer_state(loaded.optimizer)
    global1 = {k: torch.tensor(v) for k, v in loaded.arrays.items()}
    arrays2_resumed, _ = resumed.aggregate_train(1, uploads(configure(resumed, 1, 2, global1), 2))
    arrays2_full, _ = full.aggregate_train(2, uploads(configure(full, 2, 2, global1), 2))
    for key in GLOBAL:
        np.testing.assert_array_equal(arrays2_resumed[key].numpy(), arrays2_full[key].numpy())
    # Without the moments, the second step differs: the test would catch a lost state.
    fresh = build_strategy(cfg, print, round_offset=1, template=TEMPLATE)
    arrays2_fresh, _ = fresh.aggregate_train(1, uploads(configure(fresh, 1, 2, global1), 2))
    assert not np.array_equal(arrays2_fresh["a"].numpy(), arrays2_full["a"].numpy())


def test_server_side_counters_are_not_client_counters():
    # A client cannot claim them: validation refuses counters outside the allowlist.
    assert not {CLIENTS, REJECTED, FAILED} & ALLOWED_COUNTERS


def test_federated_evaluation_without_held_out_examples_is_skipped():
    # Every node replies with weight 0 (no private held-out set): no metrics, no crash.
    seen = []
    cfg = from_flat({"method": "fedavg", "data.num-clients": 2})
    strat = build_strategy(cfg, print, lambda r, m: seen.append((r, m)))
    msgs = strat.configure_evaluate(1, ArrayRecord(GLOBAL), ConfigRecord(), FakeGrid(2))
    replies = [
        Message(
            RecordDict({"metrics": MetricRecord({"num-examples": 0.0, "eval-loss": 0.0})}),
            reply_to=m,
        )
        for m in msgs
    ]
    assert strat.aggregate_evaluate(1, replies) is None
    assert seen == [(1, None)]
    # With one weighted reply the loss is that node's.
    replies[0] = Message(
        RecordDict({"metrics": MetricRecord({"num-examples": 3.0, "eval-loss": 1.5})}),
        reply_to=msgs[0],
    )
    assert strat.aggregate_evaluate(2, replies)["eval-loss"] == pytest.approx(1.5)


def _round(strat, uploads, n=4):
    msgs = configure(strat, n_nodes=len(uploads))
    arrays, _ = strat.aggregate_train(
        1, [answer(m, u, n) for m, u in zip(msgs, uploads, strict=True)]
    )
    return {k: v.numpy() for k, v in arrays.items()}


HONEST = [
    {"a": torch.full((2, 3), v), "b": torch.full((3, 2), v)} for v in (1.0, 1.2, 0.8, 1.1, 0.9, 1.0)
]
ATTACK = {"a": torch.full((2, 3), 100.0), "b": torch.full((3, 2), 100.0)}  # scaled ×100


@pytest.mark.parametrize(
    ("aggregation", "flower_class"),
    [
        ("trimmed-mean", "FedTrimmedAvg"),
        ("median", "FedMedian"),
        ("krum", "Krum"),
        ("multi-krum", "MultiKrum"),
        ("bulyan", "Bulyan"),
    ],
)
def test_robust_aggregators_are_flowers_and_resist_one_scaled_update(aggregation, flower_class):
    # 7 clients: Bulyan needs n ≥ 4f + 3 for f = 1 malicious client.
    strat, _ = strategy(clients=7, **{"fed.aggregation": aggregation, "fed.trim-fraction": 0.2})
    assert type(strat).__name__ == flower_class
    plain, _ = strategy(clients=7)
    poisoned = _round(plain, [*HONEST, ATTACK])["a"]
    robust = _round(strat, [*HONEST, ATTACK])["a"]
    assert poisoned.mean() > 15  # the mean follows the attacker
    assert 0.7 < robust.mean() < 1.3  # the robust aggregate stays with the honest ones


def test_the_norm_bound_caps_an_update_at_a_multiple_of_the_median():
    strat, _ = strategy(clients=5, **{"fed.norm-bound": 2.0})
    got = _round(strat, [*HONEST[:4], ATTACK])
    # Norms: ‖Δ‖ = v·√12 for the honest, 100·√12 for the attacker; median 1.1·√12, so the
    # attacker is scaled to 2.2·√12, i.e. every entry 2.2; the mean is (4.1 + 2.2) / 5.
    assert got["a"] == pytest.approx(np.full((2, 3), (1.0 + 1.2 + 0.8 + 1.1 + 2.2) / 5))


def test_robust_aggregation_needs_an_averaging_method_without_dp():
    with pytest.raises(Exception, match=r"fed\.aggregation = 'median'"):
        from_flat({"method": "fedadam", "fed.aggregation": "median"})
    with pytest.raises(Exception, match=r"dp\.mode = off"):
        from_flat({"method": "fedavg", "fed.norm-bound": 3.0, "dp.mode": "client-fixed"})
