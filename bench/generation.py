"""Self-generation speed: our batched generator vs a naive one-prompt-at-a-time loop.

Both decode the same real SynGen response-phase prompts greedily; the texts and the
generated token sequences must be equal (``outputs_equal`` in the results).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import torch


def count_new_tokens(new_ids: Sequence[int], eos_id: int | None, pad_id: int | None) -> int:
    """Tokens a sequence really generated, from its new ids (the prompt cut off).

    The end-of-sequence token counts (the model produced it); what follows it, and any
    padding a batch adds after a sequence has stopped, does not.

    Args:
        new_ids: Generated ids of one row of a ``generate`` output.
        eos_id: End-of-sequence id (None: none).
        pad_id: Padding id (None: none; may equal ``eos_id``).

    Returns:
        The number of generated tokens.
    """
    for i, tok in enumerate(new_ids):
        if eos_id is not None and tok == eos_id:
            return i + 1
        if pad_id is not None and tok == pad_id:
            return i
    return len(new_ids)


def response_prompts(cfg: Any, fmt: Any, clients: Sequence[Sequence[Any]], n: int) -> list[str]:
    """``n`` real SynGen response-phase prompts from the clients' private examples.

    Each prompt asks for the answer to one private question (round-robin over clients)
    with ``synth.response-demos`` other examples of the same client as demonstrations.

    Args:
        cfg: The run configuration (seed, ``synth.*`` settings).
        fmt: The model's prompt format.
        clients: The clients' private examples.
        n: Prompts to build.

    Returns:
        The prompts.
    """
    import random

    from fedpit.synth.responses import response_prompt

    rng = random.Random(cfg.seed)
    prompts = []
    for i in range(n):
        client = clients[i % len(clients)]
        example = client[(i // len(clients)) % len(client)]
        others = [e for e in client if e.id != example.id]
        demos = rng.sample(others, min(cfg.synth.response_demos, len(others)))
        prompts.append(
            response_prompt(example.instruction, demos, fmt, cfg.synth.demo_answer_words)
        )
    return prompts


class _Recorder:
    """A model proxy that records every ``generate`` output (to count real tokens)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.outputs: list[tuple[int, torch.Tensor]] = []

    def parameters(self) -> Iterable[torch.nn.Parameter]:
        return self.model.parameters()

    def eval(self) -> torch.nn.Module:
        return self.model.eval()

    def generate(self, **kwargs: Any) -> torch.Tensor:
        out = self.model.generate(**kwargs)
        self.outputs.append((kwargs["input_ids"].shape[1], out))
        return out


def _trim(new: list[int], eos_id: int | None, pad_id: int | None) -> list[int]:
    return new[: count_new_tokens(new, eos_id, pad_id)]


def naive_generate(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], spec: Any
) -> tuple[list[str], list[list[int]]]:
    """One ``model.generate`` call per prompt (what OpenFedLLM/Shepherd-style code does).

    Args:
        model: The model (its active adapter is used).
        tokenizer: Its tokenizer.
        prompts: Prompts, each generated for alone.
        spec: The generation spec (``max_new_tokens``, ``repetition_penalty``, ``stop``).

    Returns:
        The decoded texts (cut at end-of-sequence and the spec's stop strings) and the
        generated ids of each prompt.
    """
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    texts, ids = [], []
    model.eval()
    with torch.no_grad():
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            kwargs: dict[str, Any] = {
                "max_new_tokens": spec.max_new_tokens,
                "do_sample": False,
                "repetition_penalty": spec.repetition_penalty,
                "eos_token_id": eos_id,
                "pad_token_id": pad_id,
                "temperature": None,
                "top_p": None,
                "top_k": None,
            }
            if spec.stop:
                kwargs.update(stop_strings=list(spec.stop), tokenizer=tokenizer)
            out = model.generate(**enc, **kwargs)
            new = _trim(out[0, enc["input_ids"].shape[1] :].tolist(), eos_id, pad_id)
            ids.append(new)
            body = new[:-1] if new and new[-1] == eos_id else new
            text = tokenizer.decode(body, skip_special_tokens=True)
            for stop in spec.stop:
                text = text.split(stop, 1)[0]
            texts.append(text)
    return texts, ids


def bench_generation(
    rt: Any, cfg: Any, clients: Sequence[Sequence[Any]], n: int, max_new_tokens: int
) -> dict[str, Any]:
    """Our batched generator vs the naive loop on the same prompts, timed one after the other.

    Both run after one warm-up call, with the public adapter active (as SynGen runs).
    Whether their greedy outputs agree is reported (``outputs_equal``,
    ``mismatched_prompts``), not raised: the entry point exits non-zero on a mismatch.

    Args:
        rt: The default model's runtime (``fedpit.lm.runtime.get_runtime``).
        cfg: The run configuration (``synth.*`` settings, seed).
        clients: The clients' private examples (the default run's client split).
        n: Prompts to generate for.
        max_new_tokens: New tokens per prompt at most.

    Returns:
        The ``generation`` section of ``results.json``.
    """
    from fedpit.adapters import PUBLIC
    from fedpit.lm.batched_generation import make_generate_fn
    from fedpit.synth.responses import response_spec

    tok = rt.tokenizer
    prompts = response_prompts(cfg, rt.fmt, clients, n)
    spec = response_spec(rt.fmt, max_new_tokens, cfg.synth.repetition_penalty)
    rt.model.set_adapter(PUBLIC)  # SynGen runs with W_g in the public slot

    naive_generate(rt.model, tok, prompts[:1], replace(spec, max_new_tokens=2))  # warm-up
    recorder = _Recorder(rt.model)
    generate = make_generate_fn(recorder, tok, progress=False)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    ours = generate(prompts, spec)
    ours_s = time.perf_counter() - t0
    ours_ids = [
        _trim(out[row, width:].tolist(), tok.eos_token_id, tok.pad_token_id)
        for width, out in recorder.outputs
        for row in range(out.shape[0])
    ]

    t0 = time.perf_counter()
    naive_texts, naive_ids = naive_generate(rt.model, tok, prompts, spec)
    naive_s = time.perf_counter() - t0

    ours_texts = [g.text for g in ours]
    mismatches = [i for i, (a, b) in enumerate(zip(ours_texts, naive_texts, strict=True)) if a != b]
    same_ids = sorted(map(tuple, ours_ids)) == sorted(map(tuple, naive_ids))
    ours_tokens = sum(map(len, ours_ids))
    naive_tokens = sum(map(len, naive_ids))
    prompt_tokens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return {
        "prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "batch_size": min(16, len(prompts)),  # make_generate_fn's default batch
        "prompt_tokens_mean": statistics.fmean(prompt_tokens),
        "ours": {
            "seconds": ours_s,
            "tokens": ours_tokens,
            "tokens_per_s": ours_tokens / ours_s,
        },
        "naive": {
            "seconds": naive_s,
            "tokens": naive_tokens,
            "tokens_per_s": naive_tokens / naive_s,
        },
        "speedup": (ours_tokens / ours_s) / (naive_tokens / naive_s),
        "outputs_equal": not mismatches and same_ids,
        "mismatched_prompts": mismatches,
        "example": {"prompt_tail": prompts[0][-200:], "output": ours_texts[0][:300]},
    }
