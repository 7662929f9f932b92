import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedpit.config import from_flat
from fedpit.strategy import aggregate_counters, build_strategy


def reply(arrays, n, extra=None):
    return RecordDict(
        {
            "arrays": ArrayRecord(arrays),
            "metrics": MetricRecord({"num-examples": n, **(extra or {})}),
        }
    )


def test_fedavg_weights_by_num_examples_against_numpy():
    rng = np.random.default_rng(0)
    ups = [{"w": torch.tensor(rng.normal(size=(3, 2)), dtype=torch.float32)} for _ in range(3)]
    ns = [16, 4, 12]
    agg = aggregate_arrayrecords(
        [reply(u, n) for u, n in zip(ups, ns, strict=True)], "num-examples"
    )
    expected = sum(n * u["w"].numpy() for u, n in zip(ups, ns, strict=True)) / sum(ns)
    np.testing.assert_allclose(agg["w"].numpy(), expected, rtol=1e-6)


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
    msgs = [
        Message(reply({"w": torch.ones(2) * k}, 1 + k), dst_node_id=1, message_type="train")
        for k in range(2)
    ]
    # Replies need metadata as if they came back from nodes.
    replies = [Message(m.content, reply_to=m) for m in msgs]
    arrays, _ = strat.aggregate_train(1, replies)
    assert seen and seen[0][0] == 1
    np.testing.assert_allclose(arrays["w"].numpy(), np.ones(2) * (2 / 3))
