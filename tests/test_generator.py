import torch

from fedpit.adapters import LOCAL
from fedpit.lm.batched_generation import _cut, make_generate_fn
from fedpit.lm.generation import GenerationSpec
from tests.helpers import tiny_runtime


def naive(rt, prompt, max_new):
    ids = rt.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = rt.model.generate(
        **ids,
        max_new_tokens=max_new,
        do_sample=False,
        pad_token_id=rt.tokenizer.pad_token_id,
        eos_token_id=rt.tokenizer.eos_token_id,
    )
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    if rt.tokenizer.eos_token_id in new:
        new = new[: new.index(rt.tokenizer.eos_token_id)]
    return rt.tokenizer.decode(new, skip_special_tokens=True)


def test_batched_greedy_equals_the_naive_loop(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    # Random LoRA B so the adapter matters, then compare with the same adapter active.
    for n, p in rt.model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    rt.model.set_adapter(LOCAL)
    prompts = [
        "What is asthma",
        "Task 1: What are the symptoms of gout ?\nTask 2: How",
        "Is Down syndrome inherited ? Most",
        "Thirst",
    ]
    gen = make_generate_fn(rt.model, rt.tokenizer, batch_size=3, progress=False)
    out = gen(prompts, GenerationSpec(max_new_tokens=12))
    assert [g.text for g in out] == [naive(rt, p, 12) for p in prompts]


def test_stop_strings_cut_the_text_and_mark_it_finished():
    assert _cut("What is gout ?\nTask 10:", ("\n",)) == ("What is gout ?", True)
    assert _cut("no stop here", ("\n",)) == ("no stop here", False)
    assert _cut("a ### b", ("###", "b")) == ("a ", True)


def test_generation_cut_by_max_tokens_is_not_finished(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    # Make end-of-sequence impossible so that only the token budget ends generation.
    eos = rt.tokenizer.eos_token_id

    def no_eos(module, inputs, output):
        output[..., eos] = -1e9
        return output

    rt.model.get_output_embeddings().register_forward_hook(no_eos)
    gen = make_generate_fn(rt.model, rt.tokenizer, progress=False)
    out = gen(["What is asthma"], GenerationSpec(max_new_tokens=5))
    assert out[0].finished is False
    assert len(rt.tokenizer(out[0].text, add_special_tokens=False)["input_ids"]) >= 3


def test_top_p_reaches_the_sampler(tiny_model_dir):
    """A nucleus of one token samples the greedy continuation, even at a hot temperature."""
    rt = tiny_runtime(tiny_model_dir)
    for n, p in rt.model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    rt.model.set_adapter(LOCAL)
    prompts = ["What is asthma", "Is Down syndrome inherited ? Most", "Thirst"]
    gen = make_generate_fn(rt.model, rt.tokenizer, progress=False)
    greedy = [g.text for g in gen(prompts, GenerationSpec(max_new_tokens=12))]
    torch.manual_seed(0)
    hot = GenerationSpec(max_new_tokens=12, do_sample=True, temperature=5.0)
    assert [g.text for g in gen(prompts, hot)] != greedy  # sampling does differ here
    torch.manual_seed(0)
    nucleus = GenerationSpec(max_new_tokens=12, do_sample=True, temperature=5.0, top_p=1e-6)
    assert [g.text for g in gen(prompts, nucleus)] == greedy


def test_length_batches_put_the_longest_prompts_first():
    from fedpit.lm.batched_generation import length_batches

    assert length_batches([3, 9, 1, 9, 5], 2) == [[1, 3], [4, 0], [2]]  # ties keep order
    assert length_batches([], 4) == []
    assert sorted(i for b in length_batches([4, 2, 8, 1, 1], 3) for i in b) == [0, 1, 2, 3, 4]
