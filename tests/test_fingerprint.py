"""The base-model fingerprint: stable across loads, sensitive to each component."""

import pytest
import torch

from fedpit.adapters import LOCAL, get_state, set_state
from fedpit.errors import BaseModelMismatchError
from fedpit.lm.fingerprint import (
    BaseFingerprint,
    base_fingerprint,
    base_tensors,
    check_base,
    tensors_sha256,
    tokenizer_sha256,
    weights_sha256,
)
from fedpit.model.prompts import make_prompt_format
from fedpit.model.resolve import load_model
from tests.helpers import tiny_runtime


def fingerprint_of(rt):
    return base_fingerprint(rt.model, rt.tokenizer, rt.fmt)


def test_equal_across_two_loads_and_cached_per_runtime(tiny_model_dir):
    a, b = tiny_runtime(tiny_model_dir), tiny_runtime(tiny_model_dir)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint.digest == b.fingerprint.digest
    assert len(a.fingerprint.digest) == 64 and int(a.fingerprint.digest, 16) >= 0
    assert a.fingerprint is a.fingerprint  # computed once per runtime


def test_weights_are_the_bare_models_without_lora(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    bare = load_model(str(tiny_model_dir), torch.device("cpu"), torch.float32)
    assert set(base_tensors(rt.model)) == set(bare.state_dict())
    assert weights_sha256(rt.model) == weights_sha256(bare)
    # Training the adapters does not change the base fingerprint.
    before = fingerprint_of(rt)
    lora = get_state(rt.model, LOCAL)
    set_state(rt.model, LOCAL, {k: v + 1.0 for k, v in lora.items()})
    assert fingerprint_of(rt) == before


def test_one_changed_weight_changes_only_the_weights_component(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    before = fingerprint_of(rt)
    layer = rt.model.get_base_model().model.layers[1].mlp.down_proj
    with torch.no_grad():
        layer.weight[3, 5] += 1e-6
    assert fingerprint_of(rt).differing(before) == ["weights"]


def test_tokenizer_change_is_detected_but_not_its_padding_state(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    before = fingerprint_of(rt)
    rt.tokenizer(["What is gout ?", "Why ?"], padding=True, truncation=True, max_length=8)
    assert tokenizer_sha256(rt.tokenizer) == before.tokenizer  # use leaves no trace
    rt.tokenizer.add_tokens(["<|new-token|>"])
    assert fingerprint_of(rt).differing(before) == ["tokenizer"]


def test_template_change_is_detected(tiny_model_dir):
    rt = tiny_runtime(tiny_model_dir)
    chat = fingerprint_of(rt)
    alpaca = base_fingerprint(rt.model, rt.tokenizer, make_prompt_format("alpaca", rt.tokenizer))
    assert alpaca.differing(chat) == ["template"]
    assert alpaca.digest != chat.digest


def test_tensors_sha256_covers_names_dtypes_shapes_and_values_not_order():
    a = {"x": torch.arange(6, dtype=torch.float32), "y": torch.ones(2, 3)}
    digest = tensors_sha256(a)
    assert tensors_sha256({"y": a["y"], "x": a["x"]}) == digest
    assert tensors_sha256({"z": a["x"], "y": a["y"]}) != digest
    assert tensors_sha256({"x": a["x"].double(), "y": a["y"]}) != digest
    assert tensors_sha256({"x": a["x"].reshape(2, 3), "y": a["y"]}) != digest
    changed = a["x"].clone()
    changed[5] = 5.000001
    assert tensors_sha256({"x": changed, "y": a["y"]}) != digest
    # Tied tensors (one storage under two names) hash like separate equal copies.
    tied = {"x": a["x"], "x2": a["x"]}
    assert tensors_sha256(tied) == tensors_sha256({"x": a["x"], "x2": a["x"].clone()})


def test_check_base_names_the_base_and_every_differing_component():
    server = BaseFingerprint("a" * 64, "b" * 64, "c" * 64)
    check_base(server, BaseFingerprint("a" * 64, "b" * 64, "c" * 64), "smollm2")
    node = BaseFingerprint("a" * 64, "d" * 64, "e" * 64)
    with pytest.raises(BaseModelMismatchError) as err:
        check_base(server, node, "smollm2")
    text = str(err.value)
    assert "'smollm2'" in text and "in its tokenizer and template (" in text
    assert "weights" not in text.split(";")[0]
    assert "server bbbbbbbbbbbb" in text and "node dddddddddddd" in text
    with pytest.raises(BaseModelMismatchError, match="sent no base-model fingerprint"):
        check_base(None, node, "smollm2")
