"""The client round: IFS under the right adapter, the uploaded mix, and the methods.

The expectations are computed by hand, beside the round rather than from it: W_l and
W_s are trained afresh in a second runtime through the public training function (same
seed, same data), and IFS is scored afresh with the public scoring function. A round
that scores with the wrong adapter, inverts the ratio, mixes the wrong adapters or trains
W_s on the wrong data therefore disagrees with them.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from fedpit.adapters import LOCAL, PUBLIC, get_state, initial_state, set_state
from fedpit.config.load import from_flat
from fedpit.data.example import Example
from fedpit.fed import client as client_mod
from fedpit.fed.client import RoundInfo, phase_seed, run_client_round
from fedpit.lm import lowp
from fedpit.lm.batching import encode_pair
from fedpit.lm.runtime import DTYPES
from fedpit.lm.scoring import response_nll
from fedpit.lm.train import cosine_lr, train_adapter
from fedpit.privacy.allowlist import ALLOWED_COUNTERS, NUM_EXAMPLES
from fedpit.synth.pipeline import SynthResult
from tests.helpers import TINY_LORA, by_name, examples, record_optimizer_steps, tiny_runtime


def tiny_cfg(**kw):
    base = {
        "model.max-length": 96,
        "train.batch-size": 2,
        "train.lr": 5e-2,
        "synth.keep": 2,
        "synth.selection": "ifs",  # the paper's selection: these tests check it by hand
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
ROUND_1 = RoundInfo(0, 1, 2, 0)
ROUND_2 = RoundInfo(0, 2, 2, 0)


@pytest.fixture
def scripted_synth(monkeypatch):
    """Replace SynGen with a scripted result (generation itself is tested elsewhere)."""
    calls = []

    def fake(rt, cfg, info, private, adapter):
        calls.append(adapter)
        return SynthResult(examples=list(SYNTHETIC), attempts=5, rejected={"not_novel": 2})

    monkeypatch.setattr(client_mod, "synthesize", fake)
    return calls


@pytest.fixture
def trained_on(monkeypatch):
    """Record what every training call of a client round trained: (adapter, token ids)."""
    seen = []
    real = client_mod.train_adapter

    def spy(model, adapter, data, **kwargs):
        seen.append((adapter, [list(e.input_ids) for e in data]))
        return real(model, adapter, data, **kwargs)

    monkeypatch.setattr(client_mod, "train_adapter", spy)
    return seen


def start_state(rt):
    return initial_state(get_state(rt.model, PUBLIC), 3)


def for_training(rt, cfg, exs):
    """``exs`` encoded as a client trains on them (prompt, response and end text)."""
    n = cfg.model.max_length
    return [encode_pair(rt.tokenizer, rt.fmt.prompt(e), e.output + rt.fmt.end_text, n) for e in exs]


def encoded(rt, cfg, exs):
    """The token ids of :func:`for_training`."""
    return [list(e.input_ids) for e in for_training(rt, cfg, exs)]


def train_by_hand(rt, cfg, info, adapter, exs, phase, start, public=False):
    """``adapter`` trained from ``start`` on ``exs`` as the round's ``phase`` trains it."""
    set_state(rt.model, adapter, start)
    lr0, epochs = cfg.train.lr, cfg.train.local_epochs
    if public:
        lr0, epochs = cfg.train.public_lr or lr0, cfg.train.public_epochs or epochs
    seed = phase_seed(info, phase)
    torch.manual_seed(seed)
    # The base in train.base-dtype as the round trains it (auto: bf16 on a CPU with bf16).
    dtype = lowp.resolve_dtype(cfg.train.base_dtype, rt.model.device, DTYPES[cfg.model.dtype])
    with lowp.base_in(rt.model, dtype):
        train_adapter(
            rt.model,
            adapter,
            for_training(rt, cfg, exs),
            lr=cosine_lr(lr0, min(cfg.train.lr_min, lr0), info.server_round, info.num_rounds),
            epochs=epochs,
            batch_size=cfg.train.batch_size,
            pad_id=rt.tokenizer.pad_token_id,
            seed=seed,
            weight_decay=cfg.train.weight_decay,
            max_grad_norm=cfg.train.max_grad_norm,
            micro_batch_size=cfg.train.micro_batch_size,
        )
    return get_state(rt.model, adapter)


def ifs_by_hand(rt, cfg, state, candidates):
    """L(y|x) / L(y) of each candidate with ``state`` loaded (into the local slot)."""
    set_state(rt.model, LOCAL, state)
    rt.model.set_adapter(LOCAL)
    n = cfg.model.max_length
    prompts, ys = [rt.fmt.prompt(c) for c in candidates], [c.output for c in candidates]
    given_x = response_nll(rt.model, rt.tokenizer, prompts, ys, n)
    # L(y) after the bare response header, on the same response tokens as L(y|x).
    pairs = zip(prompts, ys, strict=True)
    tokens = [encode_pair(rt.tokenizer, p, y, n).num_target_tokens for p, y in pairs]
    header = [rt.fmt.response_header()] * len(ys)
    alone = response_nll(rt.model, rt.tokenizer, header, ys, n, max_response=tokens)
    scores = [a / b for a, b in zip(given_x, alone, strict=True)]
    # Far enough from 1 that the inverted ratio L(y)/L(y|x) fails the checks' tolerance.
    assert all(abs(s - 1 / s) > 1e-4 for s in scores), scores
    return scores


def lowest(candidates, scores, k):
    return [c for _, c in sorted(zip(scores, candidates, strict=True), key=lambda t: t[0])][:k]


def logged(state_dir, server_round):
    """The round's synthetic candidates as the client logged them (its own directory)."""
    path = state_dir / "synthetic" / f"round-{server_round:03d}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def saved(state_dir, name):
    return load_file(str(state_dir / "adapters" / name / "adapter_model.safetensors"))


def assert_same(got, want, atol=0.0):
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k].float(), want[k].float(), rtol=0, atol=atol, msg=k)


def assert_far(a, b):
    """``a`` and ``b`` differ by far more than the tolerance of the checks above."""
    assert all(x != pytest.approx(y, rel=1e-4) for x, y in zip(a, b, strict=True)), (a, b)


def test_fedpit_selects_the_lowest_ifs_scored_by_the_fresh_w_l(
    tiny_model_dir, tmp_path, scripted_synth
):
    rt = tiny_runtime(tiny_model_dir)
    cfg, private, g = tiny_cfg(**{"fed.beta": 0.3}), examples(4), start_state(rt)
    run_client_round(rt, cfg, ROUND_1, private, g, tmp_path)
    rows = logged(tmp_path, 1)

    ref = tiny_runtime(tiny_model_dir)
    w_l = train_by_hand(ref, cfg, ROUND_1, LOCAL, private, "local", g)
    want = ifs_by_hand(ref, cfg, w_l, SYNTHETIC)
    assert [r["id"] for r in rows] == [c.id for c in SYNTHETIC]
    assert [r["ifs"] for r in rows] == pytest.approx(want, rel=1e-5)
    # The check can tell the adapters apart: W_g scores these candidates otherwise.
    assert_far(want, ifs_by_hand(ref, cfg, g, SYNTHETIC))
    picked = {c.id for c in lowest(SYNTHETIC, want, 2)}
    assert {r["id"] for r in rows if r["selected"]} == picked
    # …and the inverted ratio L(y)/L(y|x) would keep another pair.
    assert {c.id for c in lowest(SYNTHETIC, [1 / s for s in want], 2)} != picked


def test_fedpit_uploads_the_mix_of_w_l_and_w_s_trained_by_hand(
    tiny_model_dir, tmp_path, scripted_synth, trained_on
):
    rt = tiny_runtime(tiny_model_dir)
    cfg, private, g = tiny_cfg(**{"fed.beta": 0.3}), examples(4), start_state(rt)
    update = run_client_round(rt, cfg, ROUND_1, private, g, tmp_path)

    ref = tiny_runtime(tiny_model_dir)
    w_l = train_by_hand(ref, cfg, ROUND_1, LOCAL, private, "local", g)
    selected = lowest(SYNTHETIC, ifs_by_hand(ref, cfg, w_l, SYNTHETIC), 2)
    w_s = train_by_hand(ref, cfg, ROUND_1, PUBLIC, selected, "public", g, public=True)
    assert_same(update.state, {k: 0.3 * w_l[k] + 0.7 * w_s[k] for k in g}, atol=1e-7)
    # W_l and W_s themselves: as trained by hand, and kept or sent as such.
    assert_same(saved(tmp_path, LOCAL), w_l)
    assert_same(get_state(rt.model, PUBLIC), w_s)
    assert_same(saved(tmp_path, "upload"), update.state)  # the client's copy of what it sent
    # What each adapter was trained on: W_l the private data, W_s the selected synthetic
    # examples (in IFS order), never a private one.
    assert trained_on == [(LOCAL, encoded(rt, cfg, private)), (PUBLIC, encoded(rt, cfg, selected))]
    assert not set(map(tuple, trained_on[1][1])) & set(map(tuple, encoded(rt, cfg, private)))
    assert scripted_synth == [PUBLIC]  # SynGen with W_g
    # Only allowlisted numeric counters; n_k is the private set size.
    assert set(update.counters) == ALLOWED_COUNTERS
    assert update.counters[NUM_EXAMPLES] == 4
    assert update.counters["synth-selected"] == 2 and update.counters["synth-attempts"] == 5
    assert update.counters["synth-kept"] == 3 and update.counters["synth-rejected-not_novel"] == 2
    # The synthetic text stays in the client's own directory.
    assert [(r["instruction"], r["output"]) for r in logged(tmp_path, 1)] == [
        (c.instruction, c.output) for c in SYNTHETIC
    ]


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


def test_fedprox_adds_mu_times_the_distance_to_w_g_to_every_gradient(
    tiny_model_dir, tmp_path, monkeypatch
):
    """∇(μ/2·‖w − w_g‖²) = μ·(w − w_g): FedProx's gradients minus FedAvg's, step by step."""
    runs = record_optimizer_steps(monkeypatch)
    mu, private = 0.37, examples(4)

    def run(method):
        rt = tiny_runtime(tiny_model_dir)
        cfg = tiny_cfg(method=method, **{"fed.proximal-mu": mu, "train.max-grad-norm": 0.0})
        g = start_state(rt)
        run_client_round(rt, cfg, ROUND_1, private, g, tmp_path / method)
        return g, [by_name(rt.model, step) for step in runs[-1]]

    g, avg = run("fedavg")
    _, prox = run("fedprox")
    assert len(runs) == 2 and len(avg) == len(prox) == 2  # 4 examples, batch 2: 2 steps
    first, second = prox
    assert set(first) == set(avg[0]) and all(f".{LOCAL}." in n for n in first)
    for name, (w, grad) in first.items():
        assert torch.equal(w, g[name.replace(f".{LOCAL}.", ".")])  # training starts at W_g
        assert torch.equal(grad, avg[0][name][1])  # where the proximal term is zero
    moved = 0.0
    for name, (w, grad) in second.items():
        w_avg, grad_avg = avg[1][name]
        assert torch.equal(w, w_avg)  # the same first step: the same data gradient now
        pull = mu * (w - first[name][0])
        torch.testing.assert_close(grad - grad_avg, pull, rtol=1e-4, atol=1e-6, msg=name)
        moved = max(moved, float(pull.abs().max()))
    assert moved > 1e-3  # far above the tolerance: a term with μ ignored would show


def test_fedpit_v1_keeps_w_l_bit_for_bit_and_continues_from_it(
    tiny_model_dir, tmp_path, scripted_synth
):
    rt = tiny_runtime(tiny_model_dir)
    cfg, private, g = tiny_cfg(method="fedpit-v1"), examples(4), start_state(rt)
    first = run_client_round(rt, cfg, ROUND_1, private, g, tmp_path)
    kept = saved(tmp_path, LOCAL)
    assert_same(kept, get_state(rt.model, LOCAL))  # the kept W_l is the round's, exactly
    second = run_client_round(rt, cfg, ROUND_2, private, first.state, tmp_path)

    ref = tiny_runtime(tiny_model_dir)
    # Round 1: no W_l kept yet, so W_g scores; W_l learns private + selected data.
    scores = ifs_by_hand(ref, cfg, g, SYNTHETIC)
    assert [r["ifs"] for r in logged(tmp_path, 1)] == pytest.approx(scores, rel=1e-5)
    chosen = lowest(SYNTHETIC, scores, 2)
    w_s = train_by_hand(ref, cfg, ROUND_1, PUBLIC, chosen, "public", g, public=True)
    assert_same(first.state, w_s)  # v1 uploads W_s
    assert_same(kept, train_by_hand(ref, cfg, ROUND_1, LOCAL, [*private, *chosen], "local", g))
    # Round 2: the kept W_l scores (not the new W_g) and is trained further.
    rows = logged(tmp_path, 2)
    scores = ifs_by_hand(ref, cfg, kept, SYNTHETIC)
    assert [r["ifs"] for r in rows] == pytest.approx(scores, rel=1e-5)
    assert_far(scores, ifs_by_hand(ref, cfg, first.state, SYNTHETIC))
    chosen = lowest(SYNTHETIC, scores, 2)
    assert {r["id"] for r in rows if r["selected"]} == {c.id for c in chosen}
    w_s = train_by_hand(ref, cfg, ROUND_2, PUBLIC, chosen, "public", first.state, public=True)
    assert_same(second.state, w_s)
    w_l = train_by_hand(ref, cfg, ROUND_2, LOCAL, [*private, *chosen], "local", kept)
    assert_same(saved(tmp_path, LOCAL), w_l)


def test_damped_fedavg_uploads_beta_w_l_plus_one_minus_beta_w_g(tiny_model_dir, tmp_path):
    """The no-synthetic control: W_l trained by hand, damped towards W_g by β."""
    private = examples(4)
    rt = tiny_runtime(tiny_model_dir)
    cfg, g, info = tiny_cfg(method="fedavg-damped", **{"fed.beta": 0.25}), start_state(rt), ROUND_1
    damped = run_client_round(rt, cfg, info, private, g, tmp_path)
    w_l = train_by_hand(tiny_runtime(tiny_model_dir), cfg, info, LOCAL, private, "local", g)
    assert_same(damped.state, {k: 0.25 * w_l[k] + 0.75 * g[k] for k in g}, atol=1e-7)
    assert damped.counters["synth-attempts"] == 0
    # W_s is never trained: the public slot still holds W_g.
    assert_same(get_state(rt.model, PUBLIC), g)
    # The client keeps W_l (which is not what it sent) as its private attack target.
    assert_same(saved(tmp_path, LOCAL), w_l)


@pytest.mark.parametrize(("native", "want"), [(True, torch.bfloat16), (False, torch.float32)])
def test_syngen_decodes_in_the_resolved_dtype_and_the_client_logs_it(
    tiny_model_dir, tmp_path, monkeypatch, native, want
):
    """``synth.generation-dtype = auto`` (the default): bf16 only on a CPU that has it."""
    monkeypatch.setattr(lowp, "native_bf16", lambda: native)
    asked = []
    real = client_mod.make_generate_fn

    def spy(model, tokenizer, base_dtype=None, **kwargs):
        asked.append(base_dtype)
        return real(model, tokenizer, base_dtype=base_dtype, **kwargs)

    monkeypatch.setattr(client_mod, "make_generate_fn", spy)
    rt = tiny_runtime(tiny_model_dir)
    cfg = tiny_cfg(**{"synth.attempts": 1, "synth.max-response-tokens": 4})
    assert cfg.synth.generation_dtype == "auto"
    run_client_round(rt, cfg, ROUND_1, examples(4), start_state(rt), tmp_path)
    assert asked == [want]
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["generation-dtype"] == str(want).removeprefix("torch.")
    # The private log times every SynGen generate call (one instruction call first).
    assert line["synth-calls"][0]["phase"] == "instruction"
    assert {c["phase"] for c in line["synth-calls"]} <= {"instruction", "response"}


@pytest.mark.parametrize(
    ("setting", "native", "want"),
    [
        ("float32", True, torch.float32),
        ("bfloat16", False, torch.bfloat16),
        ("auto", True, torch.bfloat16),
        ("auto", False, torch.float32),
    ],
)
def test_training_runs_on_the_base_in_train_base_dtype_and_restores_it(
    tiny_model_dir, tmp_path, monkeypatch, setting, native, want
):
    """``train.base-dtype``: the frozen base in that dtype while an adapter trains (``auto``,
    the default: bf16 only on a CPU that has it); the adapter stays fp32 and trains, the
    base is back in fp32 and unchanged afterwards."""
    monkeypatch.setattr(lowp, "native_bf16", lambda: native)
    seen = []
    real = client_mod.train_adapter

    def spy(model, adapter, *args, **kwargs):
        base = [p for n, p in model.named_parameters() if "lora_" not in n]
        lora = [p for n, p in model.named_parameters() if "lora_" in n and adapter in n]
        seen.append(({p.dtype for p in base}, {p.dtype for p in lora}))
        return real(model, adapter, *args, **kwargs)

    monkeypatch.setattr(client_mod, "train_adapter", spy)
    rt = tiny_runtime(tiny_model_dir)
    frozen = {n: p.detach().clone() for n, p in rt.model.named_parameters() if "lora_" not in n}
    overrides = {} if setting == "auto" else {"train.base-dtype": setting}
    cfg = tiny_cfg(method="fedavg", **overrides)
    assert cfg.train.base_dtype == setting
    g = start_state(rt)
    update = run_client_round(rt, cfg, ROUND_1, examples(4), g, tmp_path)
    assert seen == [({want}, {torch.float32})]
    assert all(v.dtype == torch.float32 for v in update.state.values())
    assert any(not torch.equal(update.state[k], g[k]) for k in g)  # W_l trained
    after = dict(rt.model.named_parameters())
    for name, value in frozen.items():
        assert after[name].dtype == torch.float32
        assert torch.equal(after[name].detach(), value), name
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["train-dtype"] == str(want).removeprefix("torch.")


def test_bf16_base_trains_an_adapter_close_to_fp32(tiny_model_dir, tmp_path):
    """The same round with the base in bf16: the same loss and update up to bf16 rounding."""
    cfg32 = tiny_cfg(method="fedavg", **{"train.base-dtype": "float32"})  # not auto's bf16
    cfg16 = tiny_cfg(method="fedavg", **{"train.base-dtype": "bfloat16"})
    rt = tiny_runtime(tiny_model_dir)
    g = start_state(rt)
    a = run_client_round(rt, cfg32, ROUND_1, examples(4), g, tmp_path / "a")
    b = run_client_round(
        tiny_runtime(tiny_model_dir), cfg16, ROUND_1, examples(4), g, tmp_path / "b"
    )
    delta_a = torch.cat([(a.state[k] - g[k]).flatten() for k in g])
    delta_b = torch.cat([(b.state[k] - g[k]).flatten() for k in g])
    assert not torch.equal(delta_a, delta_b)  # two dtypes, not one run twice
    assert torch.nn.functional.cosine_similarity(delta_a, delta_b, dim=0) > 0.95
    loss = [
        json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[-1])["loss-local"]
        for d in "ab"
    ]
    assert loss[1] == pytest.approx(loss[0], rel=0.02)
