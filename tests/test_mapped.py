"""The frozen base weights as a shared read-only file mapping."""

import torch

from fedpit.model.mapped import file_backed, map_weights, share_weights, weights_key
from fedpit.model.resolve import load_model


def _mapped_files(tensor):
    """Files whose mapping holds ``tensor``'s memory (from /proc/self/maps)."""
    ptr = tensor.untyped_storage().data_ptr()
    files = set()
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi and len(parts) > 5:
                files.add(parts[5])
    return files


def test_converted_weights_are_mapped_from_one_file(tiny_model_dir, tmp_path):
    # bfloat16 from a float32 checkpoint: transformers converts into private memory.
    model = load_model(str(tiny_model_dir), torch.device("cpu"), torch.bfloat16)
    assert file_backed(model) is False
    x = torch.tensor([[1, 5, 9, 3]])
    before = model(input_ids=x).logits
    key = weights_key(str(tiny_model_dir), torch.bfloat16)
    path = share_weights(model, key, tmp_path)
    assert path is not None and file_backed(model)
    assert torch.equal(model(input_ids=x).logits, before)
    params = dict(model.named_parameters())
    assert all(str(path) in _mapped_files(p) for p in params.values())
    assert not any(p.requires_grad for p in params.values())

    # Another worker maps the same file without rewriting it.
    stamp = path.stat().st_mtime_ns
    again = load_model(str(tiny_model_dir), torch.device("cpu"), torch.bfloat16)
    assert map_weights(again, key, tmp_path) == path and path.stat().st_mtime_ns == stamp
    assert torch.equal(again(input_ids=x).logits, before)
    assert not list(tmp_path.glob(".*partial"))


def test_weights_transformers_already_maps_are_left_alone(tiny_model_dir, tmp_path):
    model = load_model(str(tiny_model_dir), torch.device("cpu"), torch.float32)
    assert file_backed(model)  # the safetensors file itself, in the model's dtype
    assert share_weights(model, "k", tmp_path) is None and not list(tmp_path.iterdir())


def test_the_key_changes_with_the_weights_and_the_dtype(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    key = weights_key(str(tmp_path), torch.float32)
    assert key != weights_key(str(tmp_path), torch.bfloat16)
    (tmp_path / "model.safetensors").write_bytes(b"xy")
    assert weights_key(str(tmp_path), torch.float32) != key
