"""The decoding loop against transformers' own generate and logits processors."""

import pytest
import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import DynamicLayer

from fedpit.adapters import LOCAL
from fedpit.lm import batched_generation
from fedpit.lm.batched_generation import make_generate_fn
from fedpit.lm.decoding import BufferedLayer, decode, next_token_scores, supports
from fedpit.lm.generation import GenerationSpec
from tests.helpers import tiny_runtime

PROMPTS = [
    "What is asthma",
    "Task 1: What are the symptoms of gout ?\nTask 2: How",
    "Is Down syndrome inherited ? Most",
    "Thirst",
]


def _hf(seen, logits, processors):
    return LogitsProcessorList(processors)(seen, logits.clone())


@pytest.mark.parametrize(
    ("spec", "processors"),
    [
        (GenerationSpec(8), []),
        (GenerationSpec(8, repetition_penalty=1.3), [RepetitionPenaltyLogitsProcessor(1.3)]),
        (
            GenerationSpec(8, repetition_penalty=1.2, do_sample=True, temperature=0.7, top_p=0.9),
            [
                RepetitionPenaltyLogitsProcessor(1.2),
                TemperatureLogitsWarper(0.7),
                TopPLogitsWarper(0.9),
            ],
        ),
        (
            GenerationSpec(8, do_sample=True, temperature=1.0, top_p=0.5),
            [TopPLogitsWarper(0.5)],
        ),
    ],
)
def test_scores_equal_the_transformers_processors(spec, processors):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 50, generator=g) * 3
    seen = torch.randint(0, 50, (5, 12), generator=g)
    ours = next_token_scores(logits, seen, spec)
    want = _hf(seen, logits, processors)
    assert torch.equal(torch.isinf(ours), torch.isinf(want))
    torch.testing.assert_close(ours[~torch.isinf(ours)], want[~torch.isinf(want)])


def test_buffered_layer_returns_what_concatenation_returns():
    ours, theirs = BufferedLayer(), DynamicLayer()
    g = torch.Generator().manual_seed(1)
    first = torch.randn(3, 2, 4, 5, generator=g)
    ours.reserve(5, first)  # room for 5 positions: the writes below grow it (9 in all)
    for n in (4, 1, 1, 3):
        k, v = torch.randn(3, 2, n, 5, generator=g), torch.randn(3, 2, n, 5, generator=g)
        got, want = ours.update(k, v), theirs.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert ours.get_seq_length() == theirs.get_seq_length() == 9
    rows = torch.tensor([2, 0])
    ours.batch_select_indices(rows)
    theirs.batch_select_indices(rows)
    k, v = torch.randn(2, 2, 1, 5, generator=g), torch.randn(2, 2, 1, 5, generator=g)
    got, want = ours.update(k, v), theirs.update(k, v)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def _runtime(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    for n, p in rt.model.named_parameters():  # random LoRA B: the adapter matters
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    rt.model.set_adapter(LOCAL)
    return rt


def _alone(rt, prompt, spec):
    """transformers' generate on one prompt (no padding), the ids it generated."""
    ids = rt.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = rt.model.generate(
        **ids,
        max_new_tokens=spec.max_new_tokens,
        do_sample=False,
        repetition_penalty=spec.repetition_penalty,
        pad_token_id=rt.tokenizer.pad_token_id,
        eos_token_id=rt.tokenizer.eos_token_id,
    )
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    eos = rt.tokenizer.eos_token_id
    return (new[: new.index(eos)], True) if eos in new else (new, False)


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_decode_equals_generate_prompt_by_prompt(tiny_model_dir, penalty):
    rt = _runtime(tiny_model_dir)
    spec = GenerationSpec(12, repetition_penalty=penalty)
    ids = [rt.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    assert len({len(x) for x in ids}) == len(ids)  # different lengths: padding is exercised
    assert decode(rt.model, ids, spec, rt.tokenizer.eos_token_id) == [
        _alone(rt, p, spec) for p in PROMPTS
    ]


def test_rows_that_stop_early_leave_the_others_unchanged(tiny_model_dir):
    rt = _runtime(tiny_model_dir)
    spec = GenerationSpec(10)
    ids = [rt.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    full = decode(rt.model, ids, spec, rt.tokenizer.eos_token_id)

    # Rows 1 and 3 stop after 2 and 4 tokens: they leave the batch, the others go on.
    stops = {len(full[1][0][:2]): tuple(full[1][0][:2]), 4: tuple(full[3][0][:4])}

    def stop(new):
        return stops.get(len(new)) == tuple(new)

    cut = decode(rt.model, ids, spec, rt.tokenizer.eos_token_id, stop)
    assert cut[1] == (full[1][0][:2], True) and cut[3] == (full[3][0][:4], True)
    assert cut[0] == full[0] and cut[2] == full[2]


def test_sampling_is_reproducible_with_a_generator(tiny_model_dir):
    rt = _runtime(tiny_model_dir)
    spec = GenerationSpec(10, do_sample=True, temperature=2.0)
    ids = [rt.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]

    def run(seed):
        return decode(rt.model, ids, spec, None, generator=torch.Generator().manual_seed(seed))

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert all(len(new) == 10 and not ended for new, ended in run(3))  # no eos: the limit


def test_unsupported_models_fall_back_to_generate(tiny_model_dir, monkeypatch):
    rt = _runtime(tiny_model_dir)
    assert supports(rt.model)
    spec = GenerationSpec(12, stop=("e",))
    fast = [g for g in make_generate_fn(rt.model, rt.tokenizer, 3, False)(PROMPTS, spec)]
    monkeypatch.setattr(batched_generation, "supports", lambda model: False)
    calls = []
    real = rt.model.generate
    monkeypatch.setattr(rt.model, "generate", lambda **kw: calls.append(1) or real(**kw))
    slow = make_generate_fn(rt.model, rt.tokenizer, 3, False)(PROMPTS, spec)
    assert calls and slow == fast


def test_sliding_window_models_are_not_driven(tiny_model_dir):
    rt = _runtime(tiny_model_dir)
    config = rt.model.get_base_model().config
    config.sliding_window, config.use_sliding_window = 4, True
    assert not supports(rt.model)
    config.use_sliding_window = False
    assert supports(rt.model)
    config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    assert not supports(rt.model)


def test_prompts_sharing_a_prefix_decode_as_they_do_alone(tiny_model_dir, monkeypatch):
    from fedpit.lm import decoding

    rt = _runtime(tiny_model_dir)
    spec = GenerationSpec(10, repetition_penalty=1.2)
    shared = ["What is asthma ? It is", "What is asthma ? Most", "What is asthma ? It is"]
    prompts = [*shared, "What is", "Thirst"]
    ids = [rt.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    computed = []
    real = rt.model.forward
    monkeypatch.setattr(
        rt.model, "forward", lambda **kw: computed.append(kw["input_ids"].shape) or real(**kw)
    )
    out = decode(rt.model, ids, spec, rt.tokenizer.eos_token_id)
    prefill = [shape[1] for shape in computed[: len(prompts)]]
    start = decoding.common_prefix(ids[0], ids[1])
    assert start > 2 and prefill[:3] == [len(ids[0]), len(ids[1]) - start, 1]
    assert out == [_alone(rt, p, spec) for p in prompts]


def test_common_prefix():
    from fedpit.lm.decoding import common_prefix

    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([7], [8]) == 0
