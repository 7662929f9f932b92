import torch

from fedpit.adapters import LOCAL
from fedpit.scoring import response_nll
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
