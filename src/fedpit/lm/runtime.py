"""The per-process model runtime: one frozen base model with the two named adapters.

Simulated clients share a worker process; they share this frozen, read-only base (the
cache below is keyed by everything that shapes it) and nothing else: callers set both
adapters explicitly at the start of every round. On the CPU the base weights are a
read-only file mapping (:mod:`fedpit.model.mapped`), so the worker processes of one
machine share one copy of them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from peft import PeftModel

from fedpit.adapters import attach_adapters
from fedpit.config.schema import LoraSettings, ModelConfig
from fedpit.lm.fingerprint import BaseFingerprint, base_fingerprint
from fedpit.model import resolve as model_lib
from fedpit.model.mapped import share_weights, weights_key
from fedpit.model.prompts import PromptFormat, make_prompt_format

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class Runtime:
    """A loaded model ready for generation, scoring and adapter training."""

    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    fmt: PromptFormat
    base_name: str

    @functools.cached_property
    def fingerprint(self) -> BaseFingerprint:
        """The base model's fingerprint (computed on first use, then kept with the runtime).

        The base is frozen, so computing it once is exact; the adapters are not part of it.
        """
        return base_fingerprint(self.model, self.tokenizer, self.fmt)


def set_threads(threads: int) -> None:
    """Use ``threads`` torch threads (0: one per CPU this process may use)."""
    if threads <= 0:
        threads = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_memory() -> None:
    """Hand freed activation memory back to the operating system.

    glibc keeps the memory of freed tensors in its heaps: after one training step of the
    default model a worker still holds ≈ 3.3 GB resident although live tensors need ≈ 0.6
    (measured). Simulation workers sit idle between phases and rounds, so without this
    every parallel worker would hold its peak and their peaks would add up.
    """
    gc.collect()
    libc = _libc()
    if libc is not None:  # glibc only; elsewhere the allocator decides
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def get_runtime(model_cfg: ModelConfig, lora: LoraSettings) -> Runtime:
    """Load (once per process) the base model with ``local`` and ``public`` adapters."""
    path = model_lib.prepare(model_cfg.name)
    tokenizer = model_lib.load_tokenizer(path)
    device = model_lib.pick_device(model_cfg.device)
    base = model_lib.load_model(path, device, DTYPES[model_cfg.dtype])
    if device.type == "cpu" and share_weights(base, weights_key(path, DTYPES[model_cfg.dtype])):
        release_memory()  # one copy of the frozen weights per machine: the private one goes
    peft_model = attach_adapters(base, lora, seed=0)
    fmt = make_prompt_format(model_cfg.template, tokenizer)
    return Runtime(peft_model, tokenizer, fmt, model_cfg.name)
