"""Client-level DP on the upload: ε against a reference, the clipping bound, the noise."""

import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from fedpit.config.load import default_flat, from_flat
from fedpit.errors import ConfigError
from fedpit.fed.strategy import RoundFailedError, build_strategy
from fedpit.privacy.accounting import projected_epsilon
from fedpit.privacy.allowlist import ALLOWED_COUNTERS
from fedpit.privacy.dp import (
    UnclippedUpdateError,
    clip_update,
    epsilon_spent,
    update_norm,
)
from tests.helpers import FakeGrid

pytestmark = pytest.mark.usefixtures("flower_task")


def dp_strategy(global_state, clients=3, **dp):
    flat = {"method": "fedpit", "data.num-clients": clients}
    flat.update({k if "." in k else f"dp.{k.replace('_', '-')}": v for k, v in dp.items()})
    seen = []
    template = {k: v.numpy() for k, v in global_state.items()}
    strat = build_strategy(from_flat(flat), lambda r, a, m: seen.append(a), template=template)
    return strat, seen


def one_round(strat, global_state, uploads, server_round=1, weights=None):
    """configure_train → one reply per upload (DP clients report weight 1) → aggregate."""
    msgs = strat.configure_train(
        server_round, ArrayRecord(global_state), ConfigRecord(), FakeGrid(len(uploads))
    )
    msgs = sorted(msgs, key=lambda m: m.metadata.dst_node_id)
    replies = []
    for i, (msg, upload) in enumerate(zip(msgs, uploads, strict=True)):
        counters = {k: 0.0 for k in ALLOWED_COUNTERS}
        counters["num-examples"] = 1.0 if weights is None else weights[i]
        content = RecordDict({"arrays": ArrayRecord(upload), "metrics": MetricRecord(counters)})
        replies.append(Message(content, reply_to=msg))
    arrays, _ = strat.aggregate_train(server_round, replies)
    return msgs, {k: torch.from_numpy(a.numpy()) for k, a in arrays.items()}


def rdp_epsilon(noise_multiplier, rounds, delta):
    """Reference, written from the literature rather than Flower's or dp-accounting's code.

    The Gaussian mechanism with noise multiplier z is (α, α/2z²)-RDP (Mironov 2017,
    Prop. 7); RDP adds up over rounds; (α, ρ)-RDP gives (ε, δ)-DP with
    ε = ρ + log(1 − 1/α) − log(δ·α)/(α − 1) (Canonne, Kamath, Steinke 2020, Prop. 12),
    minimised over the usual grid of orders.
    """
    orders = np.array(
        [1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024], float
    )
    rdp = rounds * orders / (2 * noise_multiplier**2)
    return float(np.min(rdp + np.log1p(-1 / orders) - np.log(delta * orders) / (orders - 1)))


def exact_gaussian_epsilon(noise_multiplier, rounds, delta):
    """The tight ε of ``rounds`` Gaussian releases (Balle & Wang 2018, Thm. 8), by bisection.

    ``rounds`` releases at multiplier z compose to one with μ = √rounds / z, whose
    δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ). Any valid accountant reports ε ≥ this.
    """
    mu = math.sqrt(rounds) / noise_multiplier

    def phi(x):
        return 0.5 * math.erfc(-x / math.sqrt(2))

    lo, hi = 0.0, 100.0
    for _ in range(200):
        eps = (lo + hi) / 2
        if phi(mu / 2 - eps / mu) - math.exp(eps) * phi(-mu / 2 - eps / mu) > delta:
            lo = eps
        else:
            hi = eps
    return hi


GLOBAL = {"a": torch.zeros(4, 3), "b": torch.ones(3, 4)}


def big_uploads(global_state, n, scale=10.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in global_state.items()}
        for _ in range(n)
    ]


# (a) ε for a known configuration ------------------------------------------------------


def test_epsilon_after_each_round_equals_the_rdp_reference():
    z, delta = 1.1, 1e-5
    strat, _ = dp_strategy(GLOBAL, mode="central-fixed", noise_multiplier=z, delta=delta)
    assert epsilon_spent(strat) == 0.0  # nothing released yet
    one_round(strat, GLOBAL, big_uploads(GLOBAL, 3))
    assert epsilon_spent(strat) == pytest.approx(rdp_epsilon(z, 1, delta), rel=1e-9)
    one_round(strat, GLOBAL, big_uploads(GLOBAL, 3, seed=1), server_round=2)
    eps = epsilon_spent(strat)
    # Hand-checked constant: the same formula evaluated once, kept as a regression value.
    assert eps == pytest.approx(6.327364712808747, rel=1e-9)
    assert eps == pytest.approx(rdp_epsilon(z, 2, delta), rel=1e-9)
    # RDP is an upper bound on the tight value, and close to it for the Gaussian.
    tight = exact_gaussian_epsilon(z, 2, delta)
    assert tight < eps < 1.1 * tight
    assert projected_epsilon(z, 2, delta) == pytest.approx(eps, rel=1e-12)


def test_sampling_gives_no_amplification_credit_and_a_resumed_run_keeps_its_epsilon():
    z, delta = 2.0, 1e-5
    # One of three clients per round: ε is still that of a full Gaussian release.
    sampled, _ = dp_strategy(
        GLOBAL, mode="client-fixed", noise_multiplier=z, **{"fed.clients-per-round": 1}
    )
    msgs = list(sampled.configure_train(1, ArrayRecord(GLOBAL), ConfigRecord(), FakeGrid(3)))
    assert len(msgs) == 1
    counters = {**{k: 0.0 for k in ALLOWED_COUNTERS}, "num-examples": 1.0}
    content = RecordDict({"arrays": ArrayRecord(GLOBAL), "metrics": MetricRecord(counters)})
    sampled.aggregate_train(1, [Message(content, reply_to=msgs[0])])
    assert epsilon_spent(sampled) == pytest.approx(rdp_epsilon(z, 1, delta), rel=1e-9)
    # Resumed after one round: the accountant starts with that release composed.
    flat = {"method": "fedavg", "data.num-clients": 2}
    flat.update({"dp.mode": "central-fixed", "dp.noise-multiplier": z})
    resumed = build_strategy(from_flat(flat), print, round_offset=1)
    assert epsilon_spent(resumed) == pytest.approx(rdp_epsilon(z, 1, delta), rel=1e-9)
    one_round(resumed, GLOBAL, big_uploads(GLOBAL, 2))
    assert epsilon_spent(resumed) == pytest.approx(rdp_epsilon(z, 2, delta), rel=1e-9)


# (b) the clipping bound and the noise ---------------------------------------------------


def test_without_noise_the_aggregate_is_the_mean_of_clipped_updates_within_the_bound():
    clip = 0.5
    strat, seen = dp_strategy(GLOBAL, mode="central-fixed", clip_norm=clip, noise_multiplier=0.0)
    uploads = big_uploads(GLOBAL, 3)
    small = {k: v + 1e-3 for k, v in GLOBAL.items()}  # already within the bound
    _, agg = one_round(strat, GLOBAL, [*uploads[:2], small])
    assert update_norm(agg, GLOBAL) <= clip + 1e-6
    # NumPy reference: the update is upload − global, clipped, then an unweighted mean.
    deltas = []
    for up in [*uploads[:2], small]:
        d = {k: (up[k] - GLOBAL[k]).double().numpy() for k in GLOBAL}
        norm = math.sqrt(sum(float((x**2).sum()) for x in d.values()))
        deltas.append({k: x * min(1.0, clip / norm) for k, x in d.items()})
    for k in GLOBAL:
        expected = GLOBAL[k].double().numpy() + sum(d[k] for d in deltas) / 3
        np.testing.assert_allclose(agg[k].numpy(), expected, atol=1e-6)
    assert seen and seen[0]["a"].numpy().dtype == np.float32


def test_noise_changes_the_aggregate_with_the_calibrated_spread():
    clip, z = 0.5, 1.0
    shape_global = {"w": torch.zeros(200, 50)}
    uploads = big_uploads(shape_global, 3)
    quiet, _ = dp_strategy(shape_global, mode="central-fixed", clip_norm=clip, noise_multiplier=0.0)
    noisy, _ = dp_strategy(shape_global, mode="central-fixed", clip_norm=clip, noise_multiplier=z)
    _, clean = one_round(quiet, shape_global, uploads)
    _, noised = one_round(noisy, shape_global, uploads)
    noise = (noised["w"] - clean["w"]).numpy()
    assert not np.allclose(noise, 0)
    assert noise.std() == pytest.approx(z * clip / 3, rel=0.05)  # σ = z·C/m on the mean


def test_server_clipping_pairs_tensors_by_key_not_by_position():
    # The round-1 global is sorted; PEFT lists layers.2 before layers.10.
    global_state = {"layers.10.w": torch.zeros(2, 2), "layers.2.w": torch.full((2, 2), 5.0)}
    upload = {"layers.2.w": torch.full((2, 2), 5.0), "layers.10.w": torch.full((2, 2), 3.0)}
    strat, _ = dp_strategy(global_state, clients=1, mode="central-fixed", noise_multiplier=0.0)
    _, agg = one_round(strat, global_state, [upload])
    np.testing.assert_allclose(agg["layers.2.w"].numpy(), 5.0)  # unchanged layer stays put
    np.testing.assert_allclose(update_norm(agg, global_state), 1.0, rtol=1e-6)


def test_client_clipping_bounds_the_update_and_keeps_direction_order_and_dtype():
    gen = torch.Generator().manual_seed(0)
    global_state = {"b": torch.randn(3, 2, generator=gen), "a": torch.randn(2, 3, generator=gen)}
    upload = {k: v + 4 * torch.randn(v.shape, generator=gen) for k, v in global_state.items()}
    clipped = clip_update(upload, global_state, 0.25)
    assert list(clipped) == list(upload) and all(t.dtype == torch.float32 for t in clipped.values())
    assert update_norm(clipped, global_state) == pytest.approx(0.25, rel=1e-5)
    ratio = (clipped["a"] - global_state["a"]) / (upload["a"] - global_state["a"])
    np.testing.assert_allclose(ratio.numpy(), ratio.numpy().flat[0], rtol=1e-4)  # same direction
    near = {k: v + 1e-4 for k, v in global_state.items()}
    for k in near:
        torch.testing.assert_close(clip_update(near, global_state, 0.25)[k], near[k])


def test_client_fixed_sends_the_clip_norm_and_only_adds_noise():
    strat, _ = dp_strategy(GLOBAL, mode="client-fixed", clip_norm=0.3, noise_multiplier=0.0)
    pre_clipped = [clip_update(u, GLOBAL, 0.3) for u in big_uploads(GLOBAL, 3)]
    msgs, agg = one_round(strat, GLOBAL, pre_clipped)
    assert all(m.content["config"][KEY_CLIPPING_NORM] == 0.3 for m in msgs)
    for k in GLOBAL:
        expected = sum(u[k] for u in pre_clipped) / 3
        torch.testing.assert_close(agg[k], expected)


def test_client_fixed_refuses_an_update_the_client_did_not_clip():
    strat, seen = dp_strategy(GLOBAL, mode="client-fixed", clip_norm=0.3)
    with pytest.raises(UnclippedUpdateError, match=r"> dp.clip-norm = 0.3; with dp.mode"):
        one_round(strat, GLOBAL, big_uploads(GLOBAL, 3))
    assert not seen


def test_dp_rounds_need_every_sampled_client_and_equal_weights():
    strat, seen = dp_strategy(GLOBAL, mode="central-fixed", **{"fed.min-clients": 1})
    msgs = list(strat.configure_train(1, ArrayRecord(GLOBAL), ConfigRecord(), FakeGrid(3)))
    counters = {**{k: 0.0 for k in ALLOWED_COUNTERS}, "num-examples": 1.0}
    content = RecordDict({"arrays": ArrayRecord(GLOBAL), "metrics": MetricRecord(counters)})
    with pytest.raises(RoundFailedError, match="2 valid update"):
        strat.aggregate_train(1, [Message(content, reply_to=m) for m in msgs[:2]])
    weighted, _ = dp_strategy(GLOBAL, mode="central-fixed")
    with pytest.raises(ValueError, match="equal client weights"):
        one_round(weighted, GLOBAL, big_uploads(GLOBAL, 3), weights=[16.0, 4.0, 1.0])
    assert not seen


# (c) configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flat", "fragment"),
    [
        ({"dp.mode": "local"}, "dp.mode = 'local' is invalid; allowed: off, central-fixed"),
        ({"dp.clip-norm": 0.0}, "dp.clip-norm = 0.0 is invalid"),
        ({"dp.clip-norm": float("inf")}, "dp.clip-norm = inf is invalid"),
        ({"dp.noise-multiplier": -1.0}, "dp.noise-multiplier = -1.0 is invalid"),
        ({"dp.delta": 0.0}, "dp.delta = 0.0 is invalid; allowed: a number in (0, 1)"),
        ({"dp.delta": 1.0}, "dp.delta = 1.0 is invalid"),
        ({"dp.max-epsilon": -2.0}, "dp.max-epsilon = -2.0 is invalid"),
        ({"dp.noise-multiplier": "lots"}, "dp.noise-multiplier = 'lots': expected float"),
        ({"dp.mode": "central-fixed", "method": "fedadam"}, "method = 'fedadam' is invalid"),
        ({"dp.mode": "client-fixed", "method": "local"}, "method = 'local' is invalid"),
        (
            {"dp.mode": "central-fixed", "dp.noise-multiplier": 0.0, "dp.max-epsilon": 8.0},
            "dp.noise-multiplier = 0.0 is invalid; allowed: > 0 when dp.max-epsilon is set",
        ),
        (
            {"dp.mode": "central-fixed", "dp.noise-multiplier": 1.1, "dp.max-epsilon": 6.0},
            "≥ the ε of the whole run, 6.327 at δ = 1e-05 for fed.rounds = 2",
        ),
    ],
)
def test_bad_dp_values_are_refused_with_the_key_and_what_is_allowed(flat, fragment):
    with pytest.raises(ConfigError) as err:
        from_flat(flat)
    assert fragment in str(err.value)


def test_dp_is_off_by_default_and_a_budget_that_fits_is_accepted():
    assert default_flat()["dp.mode"] == "off"
    cfg = from_flat({"dp.mode": "central-fixed", "dp.noise-multiplier": 1.1, "dp.max-epsilon": 6.4})
    assert cfg.dp.enabled and cfg.dp.max_epsilon == 6.4


# Under Flower's Simulation Engine -------------------------------------------------------


def test_client_fixed_dp_run_clips_each_upload_and_records_epsilon(tiny_model_dir, tmp_path):
    import json

    from safetensors.torch import load_file

    from fedpit.adapters import PUBLIC, get_state, initial_state
    from fedpit.cli.main import main
    from fedpit.runs.rundir import read_jsonl
    from tests.helpers import tiny_runtime
    from tests.test_simulation import tiny_args, write_data

    clip, run_dir = 0.01, tmp_path / "dp"  # a tiny-model update is ≈ 0.04
    dp_keys = ("dp.mode=client-fixed", f"dp.clip-norm={clip}", "dp.noise-multiplier=1.0")
    args = tiny_args(tiny_model_dir, write_data(tmp_path), run_dir, "fed.rounds=1", *dp_keys)
    assert main(args) == 0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["dp_epsilon"] for r in rows] == [0.0, pytest.approx(projected_epsilon(1.0, 1, 1e-5))]
    assert rows[1]["clients"]["num-examples"] == 2  # weight 1 per client: n_k stayed home
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dp"]["mode"] == "client-fixed"
    assert summary["dp"]["epsilon"] == pytest.approx(rows[1]["dp_epsilon"])
    # What each node kept as its upload is the round-1 global plus an update of norm ≤ C.
    template = get_state(tiny_runtime(tiny_model_dir).model, PUBLIC)
    sent = initial_state(template, seed=0)
    for client in ("0", "1"):
        upload = load_file(
            str(run_dir / "clients" / client / "adapters" / "upload" / "adapter_model.safetensors")
        )
        assert set(upload) == set(sent)
        assert update_norm(upload, sent) == pytest.approx(clip, rel=1e-4)  # clipping engaged
