"""The frozen base in bf16 for a block (SynGen's decoding), adapters untouched."""

import pytest
import torch

from fedpit.adapters import LOCAL, get_state
from fedpit.lm import lowp
from fedpit.lm.batched_generation import make_generate_fn
from fedpit.lm.generation import GenerationSpec
from fedpit.lm.lowp import base_in
from tests.helpers import tiny_runtime


def _split(model):
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    base = {n: p for n, p in model.named_parameters() if "lora_" not in n}
    return base, lora


def test_inside_the_base_is_bf16_and_afterwards_exactly_what_it_was(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    base, lora = _split(rt.model)
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in base.items()}
    seen = []
    q_proj = next(m for n, m in rt.model.named_modules() if n.endswith("q_proj.base_layer"))
    q_proj.register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    x = torch.tensor([[1, 5, 9, 3]])
    with base_in(rt.model, torch.bfloat16):
        assert {p.dtype for p in base.values()} == {torch.bfloat16}
        assert {p.dtype for p in lora.values()} == {torch.float32}
        rt.model(input_ids=x)
        first_copy = next(iter(base.values())).data_ptr()
    assert seen == [(torch.bfloat16, torch.bfloat16)]
    for n, p in base.items():
        assert p.data_ptr() == before[n][0] and torch.equal(p, before[n][1])
    with pytest.raises(RuntimeError), base_in(rt.model, torch.bfloat16):
        assert next(iter(base.values())).data_ptr() == first_copy  # the copy is kept
        raise RuntimeError("inside")
    assert all(p.dtype == torch.float32 for p in base.values())  # restored after an error


def test_generating_in_bf16_leaves_the_adapters_alone(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    for n, p in rt.model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    rt.model.set_adapter(LOCAL)
    adapter = {k: v.clone() for k, v in get_state(rt.model, LOCAL).items()}
    gen = make_generate_fn(rt.model, rt.tokenizer, progress=False, base_dtype=torch.bfloat16)
    out = gen(["What is asthma", "Thirst"], GenerationSpec(max_new_tokens=6))
    assert len(out) == 2 and all(isinstance(g.text, str) for g in out)
    after = get_state(rt.model, LOCAL)
    assert all(torch.equal(after[k], adapter[k]) for k in adapter)
    assert {p.dtype for p in rt.model.parameters()} == {torch.float32}


@pytest.mark.parametrize(
    ("name", "device", "native", "expected"),
    [
        ("auto", "cpu", True, torch.bfloat16),  # a CPU with bf16 instructions
        ("auto", "cpu", False, torch.float32),  # emulated bf16 would be slower: as loaded
        ("auto", "meta", True, torch.float32),  # not a CPU: as loaded
        ("float32", "cpu", True, torch.float32),
        ("bfloat16", "cpu", False, torch.bfloat16),  # asked for: used even if emulated
    ],
)
def test_generation_dtype_resolves_auto_by_the_cpu(monkeypatch, name, device, native, expected):
    monkeypatch.setattr(lowp, "native_bf16", lambda: native)
    assert lowp.resolve_dtype(name, torch.device(device), torch.float32) == expected


def test_auto_keeps_a_base_loaded_in_another_dtype(monkeypatch):
    monkeypatch.setattr(lowp, "native_bf16", lambda: False)
    assert lowp.resolve_dtype("auto", torch.device("cpu"), torch.float16) == torch.float16


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, True), (False, True, True), (False, False, False), (None, None, False)],
)
def test_native_bf16_reads_the_cpu_checks_and_a_build_without_them(
    monkeypatch, avx512_bf16, amx, expected
):
    for name, value in (
        ("_is_avx512_bf16_supported", avx512_bf16),
        ("_is_amx_tile_supported", amx),
    ):
        if value is None:  # a PyTorch build without the private helper
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda v=value: v)
    assert lowp.native_bf16() is expected
