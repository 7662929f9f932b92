"""Reuse the base model's outputs across runs.

Every attacked or evaluated run also scores the base model alone (the floor): its greedy
answers and canary log-probabilities. Those depend only on the base model, the prompts and
the decoding settings, not on the run, so the cells of a sweep that share a data split
would compute them again and again (≈ 2 CPU minutes per cell for the default model).
The server's held-out test loss of the round-0 global model (the base model: a LoRA
adapter with zero B matrices) is kept here too.
This cache keeps them on disk under ``$FEDPIT_CACHE/base-outputs`` (default
``~/.cache/fedpit``), keyed by a sha256 of everything that shapes them:

- the base model's fingerprint (weights, tokenizer, prompt template);
- the inputs (prompts, references) and settings (decoding spec, lengths, seeds);
- the versions of torch and transformers and the source of FedPIT's generation and
  scoring modules (a code change there starts a fresh cache).

Set ``FEDPIT_NO_BASE_CACHE=1`` to bypass it; deleting the folder is always safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

from fedpit.cachedir import cache_root
from fedpit.lm.generation import GenerateFn, Generation, GenerationSpec
from fedpit.lm.runtime import Runtime
from fedpit.runs.rundir import write_json

OFF_ENV = "FEDPIT_NO_BASE_CACHE"
FOLDER = "base-outputs"
# The modules whose code decides the cached values.
SOURCES = (
    "fedpit.lm.generation",
    "fedpit.lm.batched_generation",
    "fedpit.lm.scoring",
    "fedpit.lm.batching",
)

T = TypeVar("T")


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 over the library versions and the source of the modules in :data:`SOURCES`."""
    import importlib

    import torch
    import transformers

    digest = hashlib.sha256(f"torch {torch.__version__} tf {transformers.__version__}".encode())
    for name in SOURCES:
        module = importlib.import_module(name)
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def cache_path(rt: Runtime, kind: str, key: dict[str, Any]) -> Path:
    """Where the value of ``kind`` for ``key`` under ``rt``'s base model is kept."""
    doc = {"kind": kind, "base": rt.fingerprint.digest, "code": code_version(), "key": key}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return cache_root() / FOLDER / f"{kind}-{digest[:40]}.json"


def cached(rt: Runtime, kind: str, key: dict[str, Any], compute: Callable[[], T]) -> T:
    """``compute()``, or its stored value for the same base model, ``kind`` and ``key``.

    The value must survive a JSON round trip (lists, strings, floats: floats round-trip
    exactly). An unreadable entry is recomputed and rewritten (atomically).
    """
    if os.environ.get(OFF_ENV, "").strip() not in ("", "0"):
        return compute()
    path = cache_path(rt, kind, key)
    try:
        # The entry was written from compute()'s value for the same kind and key.
        return cast(T, json.loads(path.read_text())["value"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = compute()
    write_json(path, {"kind": kind, "value": value})
    return value


def base_generate(rt: Runtime, generate: GenerateFn) -> GenerateFn:
    """``generate`` for the base model, answering repeated calls from the cache."""

    def cached_generate(prompts: Sequence[str], spec: GenerationSpec) -> list[Generation]:
        key = {"prompts": list(prompts), "spec": dataclasses.asdict(spec)}
        rows: list[list[Any]] = cached(
            rt, "generate", key, lambda: [[g.text, g.finished] for g in generate(prompts, spec)]
        )
        return [Generation(text, finished) for text, finished in rows]

    return cached_generate
