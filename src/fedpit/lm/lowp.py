"""The frozen base in a lower precision for a while (generation), the adapters untouched.

On CPUs with bf16 matrix instructions (AVX512-BF16, AMX) a bf16 matmul of the default
model's shapes runs 2–6× faster than fp32 (measured on the benchmark machine,
docs/benchmark.md). :func:`base_in` swaps every frozen base weight of a PEFT model for a
copy in that dtype, made once per model and kept, and swaps the fp32 weights back on
exit; the LoRA weights stay in their own dtype (PEFT adds their product in it), so the
current adapter is used exactly as it is. Only what runs inside the block is affected.
:func:`resolve_dtype` resolves ``synth.generation-dtype`` and ``train.base-dtype``:
``auto`` is bf16 only where the CPU has those instructions (elsewhere bf16 is emulated
and slower than fp32). Training inside :func:`base_in` works too: the frozen weights take
no gradient, the adapter's stay fp32.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch

_COPIES: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX tiles).

    PyTorch exposes the checks as private helpers of ``torch.cpu``; where a build lacks
    one, that instruction set counts as absent (``auto`` then keeps the loaded dtype).
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_dtype(name: str, device: torch.device, loaded: torch.dtype) -> torch.dtype:
    """The base's dtype for a setting ``name`` (``synth.generation-dtype``, ``train.base-dtype``).

    Args:
        name: ``float32``, ``bfloat16`` or ``auto`` (bf16 on a CPU with bf16 instructions,
            else the dtype the base was loaded in).
        device: Where the model runs.
        loaded: The dtype the base was loaded in.

    Returns:
        The dtype to pass to :func:`base_in`.
    """
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" and native_bf16() else loaded
    dtype = getattr(torch, name)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name!r} is not a torch dtype")
    return dtype


def _base_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The frozen, non-adapter parameters of ``model`` (LoRA weights excluded)."""
    return {n: p for n, p in model.named_parameters() if not p.requires_grad and "lora_" not in n}


@contextlib.contextmanager
def base_in(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Run the block with ``model``'s frozen base weights in ``dtype``.

    Args:
        model: A model whose base weights are frozen (``requires_grad`` False); adapter
            weights (``lora_`` in their names) are left as they are.
        dtype: The dtype of the base inside the block (its own: nothing happens).

    Yields:
        Nothing; on exit every base parameter holds its original tensor again.
    """
    params = _base_params(model)
    if not params or all(p.dtype == dtype for p in params.values()):
        yield
        return
    copies = _COPIES.get(model)
    if copies is None or copies.keys() != params.keys():
        copies = {n: p.detach().to(dtype) for n, p in params.items()}
        _COPIES[model] = copies
    originals = {n: p.data for n, p in params.items()}
    try:
        for n, p in params.items():
            p.data = copies[n]
        yield
    finally:
        for n, p in params.items():
            p.data = originals[n]
