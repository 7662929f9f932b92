import math

import pytest
import torch

from fedpit.adapters import LOCAL, get_state
from fedpit.lm.batching import IGNORE_INDEX, Encoded, encode_pair, micro_batches
from fedpit.lm.scoring import response_nll
from fedpit.lm.train import cosine_lr, train_adapter
from tests.helpers import by_name, examples, record_optimizer_steps, tiny_runtime


def test_cosine_lr_reference_values():
    assert cosine_lr(1.0, 0.0, 1, 4) == pytest.approx(1.0)
    assert cosine_lr(1.0, 0.0, 3, 4) == pytest.approx(0.5)
    assert cosine_lr(2e-3, 1e-4, 2, 4) == pytest.approx(
        1e-4 + 0.5 * 1.9e-3 * (1 + math.cos(math.pi / 4))
    )
    assert all(cosine_lr(1.0, 0.0, r, 10) > 0 for r in range(1, 11))
    with pytest.raises(ValueError):
        cosine_lr(1.0, 0.0, 0, 4)


def test_encode_pair_masks_the_prompt_and_truncates_the_response(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    enc = encode_pair(rt.tokenizer, "What is asthma ?", " Asthma is a chronic disease.", 1000)
    n_prompt = len(rt.tokenizer("What is asthma ?", add_special_tokens=False)["input_ids"])
    assert enc.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    short = encode_pair(rt.tokenizer, "What is asthma ?", " Asthma is a chronic disease." * 20, 24)
    assert len(short.input_ids) == 24 and short.num_target_tokens >= 6


def test_training_lowers_the_loss_on_its_data(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    data = examples(4)
    prompts, outs = [rt.fmt.prompt(e) for e in data], [e.output for e in data]
    rt.model.set_adapter(LOCAL)
    before = sum(response_nll(rt.model, rt.tokenizer, prompts, outs, 96))
    enc = [encode_pair(rt.tokenizer, p, o, 96) for p, o in zip(prompts, outs, strict=True)]
    stats = train_adapter(
        rt.model,
        LOCAL,
        enc,
        lr=2e-2,
        epochs=5,
        batch_size=2,
        pad_id=rt.tokenizer.pad_token_id,
        seed=0,
    )
    after = sum(response_nll(rt.model, rt.tokenizer, prompts, outs, 96))
    assert stats.steps == 10 and stats.examples == 20
    assert after < before


def test_the_proximal_term_adds_mu_times_w_minus_anchor_to_each_gradient(
    tiny_model_dir, monkeypatch
):
    """∇(μ/2·‖w − a‖²) = μ·(w − a), on a hand-made offset w − a (one step, no clipping)."""
    runs = record_optimizer_steps(monkeypatch)
    mu = 0.3

    def first_step(proximal_mu):
        rt = tiny_runtime(tiny_model_dir)
        enc = [encode_pair(rt.tokenizer, rt.fmt.prompt(e), e.output, 64) for e in examples(2)]
        lora = {n: p for n, p in rt.model.named_parameters() if f"lora_A.{LOCAL}." in n}
        lora |= {n: p for n, p in rt.model.named_parameters() if f"lora_B.{LOCAL}." in n}
        offset = {n: torch.linspace(-1.0, 2.0, p.numel()).reshape(p.shape) for n, p in lora.items()}
        anchor = {n: p.detach() - offset[n] for n, p in lora.items()}
        train_adapter(
            rt.model,
            LOCAL,
            enc,
            lr=5e-2,
            epochs=1,
            batch_size=2,
            pad_id=rt.tokenizer.pad_token_id,
            seed=0,
            max_grad_norm=0.0,
            proximal_mu=proximal_mu,
            anchor=anchor,
        )
        (step,) = runs[-1]
        return by_name(rt.model, step), offset

    plain, _ = first_step(0.0)
    prox, offset = first_step(mu)
    assert set(prox) == set(offset)  # every LoRA tensor of the adapter, nothing else
    for name, (w, grad) in prox.items():
        assert torch.equal(w, plain[name][0])
        torch.testing.assert_close(grad - plain[name][1], mu * offset[name], atol=1e-6, rtol=1e-5)


def test_micro_batches_give_the_same_update_as_one_batch(tiny_model_dir):
    def run(micro):
        rt = tiny_runtime(tiny_model_dir)
        enc = [encode_pair(rt.tokenizer, rt.fmt.prompt(e), e.output, 64) for e in examples(6)]
        train_adapter(
            rt.model,
            LOCAL,
            enc,
            lr=5e-2,
            epochs=2,
            batch_size=6,
            pad_id=rt.tokenizer.pad_token_id,
            seed=0,
            micro_batch_size=micro,
        )
        return get_state(rt.model, LOCAL)

    whole, micro = run(0), run(2)
    assert all(torch.allclose(whole[k], micro[k], atol=1e-5) for k in whole)


def test_micro_batches_group_by_length_and_keep_every_example():
    lengths = [9, 2, 7, 3, 8, 1]
    items = [Encoded(list(range(n)), [IGNORE_INDEX] * n) for n in lengths]
    chunks = micro_batches(items, 2)
    assert [[len(e.input_ids) for e in c] for c in chunks] == [[1, 2], [3, 7], [8, 9]]
    assert sorted(id(e) for c in chunks for e in c) == sorted(id(e) for e in items)

    # Padded tokens paid: sorted (2 + 7 + 9) · 2 = 36 vs (9 + 7 + 8) · 2 = 48 in input order.
    def padded(groups):
        return sum(max(len(e.input_ids) for e in g) * len(g) for g in groups)

    assert padded(chunks) == 36
    assert padded([items[k : k + 2] for k in range(0, 6, 2)]) == 48
    assert [len(c) for c in micro_batches(items, 0)] == [6]
