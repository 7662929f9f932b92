import numpy as np
import pytest
import torch
from peft import PeftModel

from fedpit.adapters import (
    LOCAL,
    PUBLIC,
    get_state,
    initial_state,
    mix,
    save_adapter,
    set_state,
)
from fedpit.lm.batching import encode_pair
from fedpit.lm.train import train_adapter
from fedpit.model.resolve import load_model
from tests.helpers import TINY_LORA, examples, tiny_runtime


def test_mix_matches_hand_computed_values():
    local = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[4.0]])}
    public = {"a": torch.tensor([3.0, -2.0]), "b": torch.tensor([[0.0]])}
    out = mix(local, public, 0.25)
    assert torch.allclose(out["a"], torch.tensor([0.25 * 1 + 0.75 * 3, 0.25 * 2 + 0.75 * -2]))
    assert torch.allclose(out["b"], torch.tensor([[1.0]]))
    assert torch.equal(mix(local, public, 1.0)["a"], local["a"])
    assert torch.equal(mix(local, public, 0.0)["a"], public["a"])


def test_mix_rejects_bad_beta_and_mismatched_keys():
    t = {"a": torch.zeros(1)}
    with pytest.raises(ValueError, match="beta"):
        mix(t, t, 1.5)
    with pytest.raises(ValueError, match="keys"):
        mix(t, {"b": torch.zeros(1)}, 0.5)


def test_initial_state_is_seeded_with_zero_b(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    template = get_state(rt.model, PUBLIC)
    s1, s2, s3 = (initial_state(template, s) for s in (1, 1, 2))
    for key in template:
        assert s1[key].shape == template[key].shape
        assert torch.equal(s1[key], s2[key])
        if "lora_B" in key:
            assert torch.count_nonzero(s1[key]) == 0
        else:
            bound = 1 / np.sqrt(template[key].shape[1])
            assert s1[key].abs().max() <= bound
            assert not torch.equal(s1[key], s3[key])


def test_training_one_adapter_changes_only_its_tensors(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    set_state(rt.model, PUBLIC, initial_state(get_state(rt.model, PUBLIC), 7))
    before = {n: p.detach().clone() for n, p in rt.model.named_parameters()}
    data = [encode_pair(rt.tokenizer, rt.fmt.prompt(e), e.output, 64) for e in examples(4)]
    train_adapter(
        rt.model,
        LOCAL,
        data,
        lr=1e-2,
        epochs=1,
        batch_size=2,
        pad_id=rt.tokenizer.pad_token_id,
        seed=0,
    )
    changed = {n for n, p in rt.model.named_parameters() if not torch.equal(p, before[n])}
    local_lora = {n for n in before if "lora_" in n and ".local." in n}
    assert changed, "training changed nothing"
    assert changed <= local_lora
    # B starts at zero, so the first step moves every B; A moves once B is non-zero.
    assert {n for n in local_lora if "lora_B" in n} <= changed


def test_set_state_rejects_wrong_keys_and_shapes_without_changing_anything(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    good = get_state(rt.model, LOCAL)
    key = next(iter(good))
    with pytest.raises(ValueError, match="missing"):
        set_state(rt.model, LOCAL, {k: v for k, v in good.items() if k != key})
    bad = dict(good)
    bad[key] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="shape"):
        set_state(rt.model, LOCAL, bad)
    after = get_state(rt.model, LOCAL)
    assert all(torch.equal(after[k], good[k]) for k in good)


def test_saved_adapter_loads_with_peft_and_gives_the_same_logits(tiny_model_dir, tmp_path):
    rt = tiny_runtime(tiny_model_dir)
    state = {k: torch.randn_like(v) * 0.1 for k, v in get_state(rt.model, PUBLIC).items()}
    set_state(rt.model, PUBLIC, state)
    save_adapter(state, TINY_LORA, str(tiny_model_dir), tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(
        load_model(str(tiny_model_dir), torch.device("cpu"), torch.float32), tmp_path / "adapter"
    )
    loaded.eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    rt.model.set_adapter(PUBLIC)
    with torch.no_grad():
        assert torch.allclose(
            rt.model(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-5
        )


def test_attaching_adapters_does_not_warn(tiny_model_dir):
    """PEFT's FutureWarning about transformers' `is_gradient_checkpointing` is not shown."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_runtime(tiny_model_dir)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
