"""Self-generation speed: our decoding loop vs ``generate`` on the same batches vs a naive loop.

All three decode the same real SynGen response-phase prompts greedily; the texts and the
generated token sequences must be equal (``outputs_equal`` in the results).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from bench.timing import alternate

SHARED_DEMOS = 4
"""Prompts per demonstration set in the shared-demonstrations row."""


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


def response_prompts(
    cfg: Any, fmt: Any, clients: Sequence[Sequence[Any]], n: int, shared: int = 1
) -> list[str]:
    """``n`` real SynGen response-phase prompts from the clients' private examples.

    Each prompt asks for the answer to one private question (round-robin over clients)
    with ``synth.response-demos`` other examples of the same client as demonstrations.

    Args:
        cfg: The run configuration (seed, ``synth.*`` settings).
        fmt: The model's prompt format.
        clients: The clients' private examples.
        n: Prompts to build.
        shared: Consecutive prompts of a client that show the same demonstrations
            (``synth.shared-demos``), drawn from the client's other examples; 1 draws
            per prompt.

    Returns:
        The prompts.
    """
    import random

    from fedpit.synth.responses import response_prompt

    rng = random.Random(cfg.seed)
    prompts = []
    drawn: dict[tuple[int, int], list[Any]] = {}
    for i in range(n):
        c = i % len(clients)
        client = clients[c]
        j = i // len(clients)
        example = client[j % len(client)]
        group = j // shared
        if (c, group) not in drawn:
            asked = {
                client[k % len(client)].id for k in range(group * shared, (group + 1) * shared)
            }
            others = [e for e in client if e.id not in asked]
            drawn[c, group] = rng.sample(others, min(cfg.synth.response_demos, len(others)))
        prompts.append(
            response_prompt(example.instruction, drawn[c, group], fmt, cfg.synth.demo_answer_words)
        )
    return prompts


def prefill_tokens(ids: Sequence[Sequence[int]], batch_size: int = 16) -> int:
    """Prompt tokens the decoder computes, prefix reuse counted.

    Each prompt less the prefix :mod:`fedpit.lm.decoding` reuses from an earlier prompt of
    its batch (length-sorted batches, as :func:`batched` runs them).
    """
    from fedpit.lm.batched_generation import length_batches
    from fedpit.lm.decoding import _prefix_source

    total = 0
    for idx in length_batches([len(x) for x in ids], batch_size):
        batch = [ids[i] for i in idx]
        total += sum(len(row) - _prefix_source(batch, k)[1] for k, row in enumerate(batch))
    return total


def _trim(new: list[int], eos_id: int | None, pad_id: int | None) -> list[int]:
    return new[: count_new_tokens(new, eos_id, pad_id)]


def batched(
    run: Any, tokenizer: Any, prompts: Sequence[str], spec: Any, batch_size: int = 16
) -> tuple[list[str], list[list[int]]]:
    """Length-sorted batches of ``prompts`` through ``run`` (as ``make_generate_fn`` does).

    Args:
        run: ``run(prompts, ids, spec)`` → per prompt (new ids without end-of-sequence,
            ended by end-of-sequence or a stop string).
        tokenizer: The tokenizer.
        prompts: The prompts.
        spec: The generation spec.
        batch_size: Prompts per batch.

    Returns:
        The texts (cut at the spec's stop strings) and each prompt's generated ids, the
        end-of-sequence id appended where it ended on it (as the naive loop counts).
    """
    from fedpit.lm.batched_generation import _cut, length_batches

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    texts: list[str] = [""] * len(prompts)
    out: list[list[int]] = [[] for _ in prompts]
    for idx in length_batches([len(x) for x in ids], batch_size):
        rows = run([prompts[i] for i in idx], [ids[i] for i in idx], spec)
        for i, (new, ended) in zip(idx, rows, strict=True):
            texts[i] = _cut(tokenizer.decode(new, skip_special_tokens=True), spec.stop)[0]
            hit_eos = ended and not _cut(tokenizer.decode(new), spec.stop)[1]
            out[i] = [*new, tokenizer.eos_token_id] if hit_eos else list(new)
    return texts, out


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
    """Our generator (fp32 and bf16 alternated), ``generate`` on the same batches, the naive loop.

    All run after one warm-up call, with the public adapter active (as SynGen runs), on
    SynGen's response prompts decoded greedily with the repetition penalty of the paper's
    pipeline (1.2), so that their outputs can be compared. Whether they agree is
    reported (``outputs_equal``, ``mismatched_prompts``), not raised: the entry point
    exits non-zero on a mismatch.

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
    from fedpit.lm.batched_generation import _hf_generate, _stop_check
    from fedpit.lm.decoding import decode
    from fedpit.synth.responses import response_spec

    tok = rt.tokenizer
    prompts = response_prompts(cfg, rt.fmt, clients, n)
    spec = response_spec(rt.fmt, max_new_tokens, 1.2)
    rt.model.set_adapter(PUBLIC)  # SynGen runs with W_g in the public slot

    def ours_run(texts: Sequence[str], ids: Sequence[Sequence[int]], s: Any) -> Any:
        return decode(rt.model, ids, s, tok.eos_token_id, _stop_check(tok, s.stop))

    def generate_run(texts: Sequence[str], ids: Sequence[Sequence[int]], s: Any) -> Any:
        return _hf_generate(rt.model, tok, texts, s)

    from fedpit.lm.lowp import base_in

    naive_generate(rt.model, tok, prompts[:1], replace(spec, max_new_tokens=2))  # warm-up
    batched(ours_run, tok, prompts[:2], replace(spec, max_new_tokens=2))
    with base_in(rt.model, torch.bfloat16):  # makes the bf16 copy once, outside the timing
        batched(ours_run, tok, prompts[:2], replace(spec, max_new_tokens=2))

    def ours_fp32() -> Any:
        return batched(ours_run, tok, prompts, spec)

    def ours_bf16() -> Any:
        with base_in(rt.model, torch.bfloat16):
            return batched(ours_run, tok, prompts, spec)

    # fp32 and bf16 alternate, so that both see the same load: one run of each, one after
    # the other, once gave a bf16 rate no faster than fp32's (docs/benchmark.md).
    runs = alternate({"ours": ours_fp32, "ours_bf16": ours_bf16})
    once = {
        "generate": lambda: batched(generate_run, tok, prompts, spec),
        "naive": lambda: naive_generate(rt.model, tok, prompts, spec),
    }
    runs |= alternate(once, repetitions=1)
    timed: dict[str, dict[str, Any]] = {}
    outputs: dict[str, tuple[list[str], list[list[int]]]] = {}
    for name, reps in runs.items():
        outputs[name] = reps[0][1]  # greedy: every repetition decodes the same
        seconds = [t for t, _ in reps]
        tokens = sum(map(len, outputs[name][1]))
        timed[name] = {
            "seconds": statistics.fmean(seconds),
            "tokens": tokens,
            "tokens_per_s": tokens / statistics.fmean(seconds),
            "repetitions_s": seconds,
        }
    # Greedy texts equal to the fp32 ones (bf16 changes the logits a little).
    timed["ours_bf16"]["same_text_share"] = statistics.fmean(
        a == b for a, b in zip(outputs["ours_bf16"][0], outputs["ours"][0], strict=True)
    )

    # synth.shared-demos = 4: groups of 4 prompts of a client show the same demonstrations.
    shared_prompts = response_prompts(cfg, rt.fmt, clients, n, shared=SHARED_DEMOS)
    t0 = time.perf_counter()
    _, shared_ids = batched(ours_run, tok, shared_prompts, spec)
    seconds = time.perf_counter() - t0
    tokens = sum(map(len, shared_ids))
    encode = [tok(p, add_special_tokens=False)["input_ids"] for p in (*prompts, *shared_prompts)]
    timed["ours_shared"] = {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "shared_demos": SHARED_DEMOS,
        "prefill_tokens": prefill_tokens(encode[n:]),
        "prefill_tokens_unshared": prefill_tokens(encode[:n]),
    }

    ours_texts, ours_ids = outputs["ours"]
    mismatches = sorted(
        {i for other in ("generate", "naive") for i, (a, b) in
         enumerate(zip(ours_texts, outputs[other][0], strict=True)) if a != b}
    )  # fmt: skip
    same_ids = all(
        sorted(map(tuple, ours_ids)) == sorted(map(tuple, outputs[o][1]))
        for o in ("generate", "naive")
    )
    prompt_tokens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return {
        "prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "batch_size": min(16, len(prompts)),  # make_generate_fn's default batch
        "prompt_tokens_mean": statistics.fmean(prompt_tokens),
        "prompt_tokens_total": sum(prompt_tokens),
        **timed,
        "speedup": timed["ours"]["tokens_per_s"] / timed["naive"]["tokens_per_s"],
        "speedup_vs_generate": timed["ours"]["tokens_per_s"] / timed["generate"]["tokens_per_s"],
        "speedup_bf16": timed["ours_bf16"]["tokens_per_s"] / timed["naive"]["tokens_per_s"],
        "speedup_shared": timed["ours_shared"]["tokens_per_s"] / timed["naive"]["tokens_per_s"],
        "outputs_equal": not mismatches and same_ids,
        "mismatched_prompts": mismatches,
        "example": {"prompt_tail": prompts[0][-200:], "output": ours_texts[0][:300]},
    }
