"""The machine's facts and limits, and the bounds they set on the model's speed.

Facts: CPUs, torch threads, load average. Limits: fp32 matmul FLOP/s (the compute
peak) and copy bandwidth. Bounds: the weight-streaming bound of decoding and the model
FLOP utilisation (MFU) of training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil
import torch


def machine_facts() -> dict[str, Any]:
    """Torch threads, CPUs and the load average now (the head of ``results.json``)."""
    return {
        "torch_threads": torch.get_num_threads(),
        "cpus": psutil.cpu_count(),
        "load_average_at_start": load_average(),
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return list(psutil.getloadavg())


def best_of(fn: Callable[[], None], repeats: int) -> float:
    """The shortest wall time of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s of an n×n product (best of ``repeats``, current threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    seconds = best_of(lambda: torch.mm(a, b, out=out), repeats)
    return 2.0 * n**3 / seconds


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Copy bandwidth in bytes/s (bytes read + bytes written) of a large fp32 tensor."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    seconds = best_of(lambda: dst.copy_(src), repeats)
    return 2.0 * src.numel() * 4 / seconds


def machine_limits(quick: bool) -> dict[str, float]:
    """Matmul FLOP/s and memory bandwidth of this machine, as this process uses it."""
    flops = matmul_flops(1024 if quick else 2048, 2 if quick else 5)
    bandwidth = memory_bandwidth(128 if quick else 512, 2 if quick else 5)
    return {
        "threads": torch.get_num_threads(),
        "matmul_flops": flops,
        "bandwidth_bytes_per_s": bandwidth,
    }


def model_size(model_name: str, base: torch.nn.Module) -> dict[str, Any]:
    """Name, parameters and weight bytes of the base model (tied weights count once).

    Args:
        model_name: The configured model name (``model.name``).
        base: The base model (the PEFT model's ``get_base_model()``).

    Returns:
        ``name``, ``params`` and ``weight_bytes``.
    """
    params = sum(p.numel() for p in base.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    return {"name": model_name, "params": params, "weight_bytes": weight_bytes}


def decode_bound(weight_bytes: float, bandwidth: float, batch: int = 1) -> float:
    """Most tokens/s memory bandwidth allows when every step reads all weights once.

    A decoding step streams the weights once for the whole batch, so batch ``B`` divides
    the bytes read per generated token by ``B`` (the bound ignores the KV cache and
    compute, so it holds only while decoding stays memory bound).

    Args:
        weight_bytes: Bytes of weights read per decoding step.
        bandwidth: Memory bandwidth in bytes/s.
        batch: Sequences decoded together.

    Returns:
        The bound in generated tokens per second.
    """
    return bandwidth * batch / weight_bytes if weight_bytes > 0 else 0.0


def model_flops_utilisation(
    tokens: int, seconds: float, params: int, peak_flops: float
) -> dict[str, float]:
    """Training model FLOP/s and their share of the measured matmul peak.

    Uses the usual approximation of 6·N FLOPs per token for forward + backward (N the
    base model's parameters). With a frozen base and LoRA the backward skips the base
    weight gradients, so the real count is nearer 4·N: the 6·N figure is the convention
    that makes numbers comparable, not an exact count.

    Args:
        tokens: Non-padding tokens trained on.
        seconds: Wall time.
        params: Base model parameters N.
        peak_flops: Measured matmul FLOP/s of this machine.

    Returns:
        ``model_flops_per_s`` and ``mfu`` (a fraction of ``peak_flops``).
    """
    flops = 6.0 * params * tokens / seconds if seconds > 0 else 0.0
    return {"model_flops_per_s": flops, "mfu": flops / peak_flops if peak_flops > 0 else 0.0}


def add_decode_bounds(
    gen: dict[str, Any], limits: dict[str, float], weight_bytes: float, params: int = 0
) -> None:
    """Add the decode bounds and each generator's share of its bound to ``gen``, in place.

    The naive loop decodes one sequence at a time (bound at batch 1); ours decodes
    ``gen["batch_size"]`` together (bound at that batch).

    Args:
        gen: The generation section (``bench.generation.bench_generation``).
        limits: The machine limits (``machine_limits``).
        weight_bytes: The base model's weight bytes (``model_size``).
        params: The base model's parameters (``model_size``; 0: no compute bound).
    """
    bw = limits["bandwidth_bytes_per_s"]
    gen["bound_batch1"] = decode_bound(weight_bytes, bw, 1)
    gen["bound_batched"] = decode_bound(weight_bytes, bw, gen["batch_size"])
    gen["naive"]["share_of_bound"] = gen["naive"]["tokens_per_s"] / gen["bound_batch1"]
    gen["ours"]["share_of_bound"] = gen["ours"]["tokens_per_s"] / gen["bound_batched"]
    if params and "prompt_tokens_total" in gen:
        gen["compute_bound"] = compute_bound(
            gen["prompt_tokens_total"], gen["ours"]["tokens"], params, limits["matmul_flops"]
        )
        for who in ("ours", "ours_bf16", "generate", "naive"):
            if who in gen:
                gen[who]["share_of_compute_bound"] = gen[who]["tokens_per_s"] / gen["compute_bound"]


def compute_bound(prompt_tokens: int, generated: int, params: int, peak_flops: float) -> float:
    """Most generated tokens/s the matmul peak allows once the prompts' prefill is counted.

    Every prompt token and every generated token costs about 2·N FLOPs (N the base
    model's parameters; one forward pass), so ``generated`` tokens after
    ``prompt_tokens`` of prompts take at least 2·N·(prompt + generated) / peak seconds.

    Args:
        prompt_tokens: Tokens of all prompts.
        generated: Tokens generated for them.
        params: Base model parameters N.
        peak_flops: Measured matmul FLOP/s of this machine.

    Returns:
        The bound in generated tokens per second.
    """
    flops = 2.0 * params * (prompt_tokens + generated)
    return peak_flops * generated / flops if flops > 0 else 0.0


def add_training_mfu(train: dict[str, Any], limits: dict[str, float], params: int) -> None:
    """Add model FLOP/s and MFU to both trainers of ``train``, in place.

    Args:
        train: The training section (``bench.training.bench_training``).
        limits: The machine limits (``machine_limits``).
        params: The base model's parameters (``model_size``).
    """
    peak = limits["matmul_flops"]
    for who in ("ours", "trl"):
        secs = train[who]["seconds"]
        train[who].update(model_flops_utilisation(train["tokens"], secs, params, peak))
