"""SynGen's synthetic-data quality under the speed levers, over seeds: do they change it?

A faster SynGen counts only at equal synthetic-data quality. For each seed and each
variant — fp32 decoding (``synth.generation-dtype = float32``, the reference), the
frozen base in bf16 while decoding (``bfloat16``) and demonstrations shared by four response
prompts (``synth.shared-demos = 4``) — every client of the default run's split runs one
round-1 SynGen (the generator is the initial global model, i.e. the base) with the same
phase seed, through ``fedpit.fed.client.synthesize`` as a client round runs it. Recorded
per variant: the yield (kept / attempts) and each rejection reason, the kept responses'
token lengths, their IFS under one fixed scorer (the base model: the round-1 W_g), and
SynGen's seconds. Sampled decoding gives other texts under every variant, so the
comparison is of distributions: each variant's IFS and lengths against the default's as a
Mann–Whitney AUC (0.5: neither tends higher) with a bootstrap interval over candidates.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from bench.phases import synth_calls

VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"generation_dtype": "float32"},
    "bf16": {"generation_dtype": "bfloat16"},
    "shared4": {"generation_dtype": "float32", "shared_demos": 4},
}
"""Name → the ``synth`` settings it sets; ``fp32`` is the reference (``generation-dtype =
auto``, the default, resolves to one of the first two by the CPU)."""

REFERENCE = "fp32"


def auc_interval(
    a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """P(a value of ``a`` > one of ``b``) (ties ½) and a 95% bootstrap interval (pure)."""
    from fedpit.eval.attack.mia import mw_auc

    x, y = np.asarray(a, float), np.asarray(b, float)
    if not len(x) or not len(y):
        raise ValueError("both samples need at least one value")
    point = float(mw_auc(x[None, :], y[None, :])[0])
    rng = np.random.default_rng(seed)
    xs = x[rng.integers(0, len(x), size=(resamples, len(x)))]
    ys = y[rng.integers(0, len(y), size=(resamples, len(y)))]
    low, high = np.percentile(mw_auc(xs, ys), [2.5, 97.5])
    return point, float(low), float(high)


def _summed(counts: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Reason → count over cells, reasons that never occurred left out."""
    total: dict[str, int] = {}
    for c in counts:
        for reason, n in c.items():
            total[reason] = total.get(reason, 0) + int(n)
    return {k: n for k, n in total.items() if n}


def _is_retry(call: str) -> bool:
    """A response call after the first (a retry round of failed responses)."""
    return call.startswith("response ") and call != "response 1"


def summarise(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per variant: yield over seeds, rejections, IFS and lengths against the reference.

    Args:
        cells: One entry per (seed, variant, client): ``seed``, ``variant``, ``attempts``,
            ``kept``, ``rejected`` (reason → count), ``ifs`` and ``lengths`` (per kept
            candidate), ``seconds``; optionally ``response_failures`` (reason → count)
            and ``calls`` (SynGen's generate calls, :func:`bench.phases.synth_calls`).

    Returns:
        Variant → its summary (pure arithmetic on ``cells``).
    """
    variants = list(dict.fromkeys(c["variant"] for c in cells))
    pooled: dict[str, dict[str, list[float]]] = {v: {"ifs": [], "lengths": []} for v in variants}
    out: dict[str, Any] = {}
    for v in variants:
        mine = [c for c in cells if c["variant"] == v]
        seeds = sorted({c["seed"] for c in mine})
        yields, seconds = [], []
        for s in seeds:
            of_seed = [c for c in mine if c["seed"] == s]
            yields.append(sum(c["kept"] for c in of_seed) / sum(c["attempts"] for c in of_seed))
            seconds.append(sum(c["seconds"] for c in of_seed))
        for c in mine:
            pooled[v]["ifs"] += list(c["ifs"])
            pooled[v]["lengths"] += list(c["lengths"])
        reasons = _summed(c["rejected"] for c in mine)
        failures = _summed(c.get("response_failures", {}) for c in mine)
        calls = synth_calls([c["calls"] for c in mine if "calls" in c])
        out[v] = {
            "seeds": seeds,
            "yield_per_seed": yields,
            "yield_mean": statistics.fmean(yields),
            "rejected": reasons,
            "candidates": len(pooled[v]["ifs"]),
            "ifs_mean": statistics.fmean(pooled[v]["ifs"]) if pooled[v]["ifs"] else None,
            "ifs_median": statistics.median(pooled[v]["ifs"]) if pooled[v]["ifs"] else None,
            "length_mean": statistics.fmean(pooled[v]["lengths"]) if pooled[v]["lengths"] else None,
            "seconds_per_seed": seconds,
            "seconds_mean": statistics.fmean(seconds),
            "response_failures": failures,
            "synth_calls": calls,
            "retry_share": sum(c["share"] for n, c in calls.items() if _is_retry(n)),
        }
    if REFERENCE in out:
        ref = pooled[REFERENCE]
        for v in variants:
            if v == REFERENCE or not pooled[v]["ifs"] or not ref["ifs"]:
                continue
            out[v]["ifs_auc_vs_reference"] = auc_interval(pooled[v]["ifs"], ref["ifs"])
            out[v]["length_auc_vs_reference"] = auc_interval(pooled[v]["lengths"], ref["lengths"])
            out[v]["seconds_ratio_vs_reference"] = (
                out[REFERENCE]["seconds_mean"] / out[v]["seconds_mean"]
            )
    return out


def bench_quality(
    rt: Any, cfg: Any, clients: Sequence[Sequence[Any]], seeds: Sequence[int]
) -> dict[str, Any]:
    """Round-1 SynGen of every client under every variant and seed (seed-major).

    Args:
        rt: The default model's runtime; its public slot holds the initial global adapter.
        cfg: The run configuration (its ``synth`` settings are the default variant).
        clients: The clients' private examples.
        seeds: Run seeds (each gives every client its own phase seed, as runs do).

    Returns:
        The ``quality`` section of ``results.json``: the cells and their summary.
    """
    from fedpit.adapters import PUBLIC
    from fedpit.fed.client import RoundInfo, ifs_scores, synthesize

    cells = []
    for seed in seeds:
        for name, change in VARIANTS.items():
            run_cfg = replace(cfg, seed=seed, synth=replace(cfg.synth, **change))
            for k, private in enumerate(clients):
                info = RoundInfo(k, 1, cfg.fed.rounds, seed)
                t0 = time.perf_counter()
                result = synthesize(rt, run_cfg, info, private, PUBLIC)
                seconds = time.perf_counter() - t0
                scores = ifs_scores(rt, run_cfg, PUBLIC, result.examples)  # scorer: the base
                lengths = [
                    len(rt.tokenizer(e.output, add_special_tokens=False)["input_ids"])
                    for e in result.examples
                ]
                cells.append(
                    {
                        "seed": seed,
                        "variant": name,
                        "client": k,
                        "attempts": result.attempts,
                        "kept": len(result.examples),
                        "rejected": dict(result.rejected),
                        "response_failures": dict(result.response_failures),
                        "generate_calls": dict(result.generate_calls),
                        "calls": result.calls,
                        "ifs": scores,
                        "lengths": lengths,
                        "seconds": seconds,
                    }
                )
                print(
                    f"  seed {seed} {name:<8} client {k}: kept {len(result.examples)}/"
                    f"{result.attempts} in {seconds:.0f} s",
                    flush=True,
                )
    return {
        "seeds": list(seeds),
        "variants": VARIANTS,
        "summary": summarise(cells),
        "cells": cells,
    }
