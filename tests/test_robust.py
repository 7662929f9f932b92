"""Norm bounding and the poisoning harness, by hand."""

import numpy as np
import pytest
import torch

from fedpit.fed.robust import bound_norms, poison, update_norm

G = {"w": np.zeros(4)}


def test_update_norm_and_bound_by_hand():
    ups = [
        {"w": np.array([3.0, 4.0, 0, 0])},
        {"w": np.array([0, 0, 6.0, 8.0])},
        {"w": np.full(4, 50.0)},
    ]
    assert [update_norm(u, G) for u in ups] == pytest.approx([5.0, 10.0, 100.0])
    out, scales = bound_norms(ups, G, 1.5)  # median 10 → bound 15
    assert scales == pytest.approx([1.0, 1.0, 0.15])
    assert out[2]["w"] == pytest.approx(np.full(4, 7.5))
    assert update_norm(out[2], G) == pytest.approx(15.0)
    assert out[0]["w"] == pytest.approx(ups[0]["w"])
    with pytest.raises(ValueError):
        bound_norms(ups, G, 0.0)


def test_poison_scales_or_flips_the_update_around_the_global_model():
    g = {"w": np.array([1.0, 1.0])}
    u = {"w": np.array([2.0, 0.0])}
    assert poison(u, g, "scale", 10.0)["w"] == pytest.approx([11.0, -9.0])
    assert poison(u, g, "flip", 10.0)["w"] == pytest.approx([0.0, 2.0])
    with pytest.raises(ValueError, match="unknown poisoning"):
        poison(u, g, "noise", 1.0)


def test_poison_keeps_torch_tensors_and_their_dtype():
    g = {"w": torch.tensor([1.0, 1.0], dtype=torch.bfloat16)}
    u = {"w": torch.tensor([2.0, 0.0], dtype=torch.bfloat16)}
    out = poison(u, g, "scale", 10.0)["w"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    assert out.tolist() == [11.0, -9.0]
