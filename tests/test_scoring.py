import pytest
import torch

from fedpit.adapters import LOCAL
from fedpit.lm.batching import collate, encode_pair, per_example_nll
from fedpit.lm.scoring import common_prefix_length, response_nll, shared_prefix_logprobs
from tests.helpers import tiny_runtime


def test_response_nll_matches_a_manual_computation_and_is_batch_invariant(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    rt.model.set_adapter(LOCAL)
    prompts = ["What is asthma ?", "Task 1: What are the symptoms of gout ?\nTask 2:", "x"]
    responses = [" Asthma is a disease.", " What is lupus ?", " Thirst and fatigue, often."]
    batched = response_nll(rt.model, rt.tokenizer, prompts, responses, 128, batch_size=3)
    singles = [
        response_nll(rt.model, rt.tokenizer, [p], [r], 128)[0]
        for p, r in zip(prompts, responses, strict=True)
    ]
    assert torch.allclose(torch.tensor(batched), torch.tensor(singles), atol=1e-4)

    p_ids = rt.tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
    r_ids = rt.tokenizer(responses[0], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + r_ids])
    with torch.no_grad():
        logp = torch.log_softmax(rt.model(input_ids=ids).logits[0], dim=-1)
    manual = -sum(logp[len(p_ids) - 1 + j, t] for j, t in enumerate(r_ids)) / len(r_ids)
    assert abs(batched[0] - float(manual)) < 1e-4


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[5, 6], [5, 6]]) == 2
    assert common_prefix_length([[1], [2]]) == 0
    assert common_prefix_length([]) == 0


def _full_logprobs(rt, encoded):
    # Reference: every sequence scored whole, one at a time.
    out = []
    for e in encoded:
        batch = collate([e], rt.tokenizer.pad_token_id)
        with torch.no_grad():
            nll, _ = per_example_nll(rt.model, batch)
        out.append(-float(nll[0]))
    return out


def test_shared_prefix_logprobs_equal_scoring_each_sequence_whole(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    rt.model.set_adapter(LOCAL)
    torch.manual_seed(0)
    for name, param in rt.model.named_parameters():
        if f"lora_B.{LOCAL}" in name:  # a non-zero adapter, so the LoRA path is exercised
            param.data.normal_(0.0, 0.2)
    prompt = "Patient: Amara Szabo. What number is on file ?"
    # A canary and same-format references: a long shared prefix reaching into the
    # response, suffixes of different lengths (right padding inside a batch).
    responses = [
        " The number on file is 0123456789.",
        " The number on file is 99.",
        " The number on file is 555123.",
        " The number on file was never given.",
        " The number on file is 0123456789.",
    ]
    encoded = [encode_pair(rt.tokenizer, prompt, r, 128) for r in responses]
    assert common_prefix_length([e.input_ids for e in encoded]) > len(prompt) // 2
    reference = _full_logprobs(rt, encoded)
    for batch_size in (1, 2, 32):
        got = shared_prefix_logprobs(rt.model, encoded, rt.tokenizer.pad_token_id, batch_size)
        assert torch.allclose(torch.tensor(got), torch.tensor(reference), atol=1e-4)
    assert got[0] == pytest.approx(got[4], abs=1e-4)  # identical sequences, equal scores


def test_shared_prefix_logprobs_without_a_shared_prefix(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    encoded = [
        encode_pair(rt.tokenizer, "A", " first answer.", 64),
        encode_pair(rt.tokenizer, "B", " second one.", 64),
    ]
    got = shared_prefix_logprobs(rt.model, encoded, rt.tokenizer.pad_token_id)
    assert torch.allclose(torch.tensor(got), torch.tensor(_full_logprobs(rt, encoded)), atol=1e-4)
    assert shared_prefix_logprobs(rt.model, [], 0) == []
