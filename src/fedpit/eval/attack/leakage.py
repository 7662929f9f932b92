"""Leakage scores, pure: no model, no files (used by :mod:`fedpit.eval.attack.runner`).

- Extraction: a greedy continuation against the true response (ROUGE-L, exact match,
  longest common token span), summarised over members or non-members.
- Synthetic-vs-private overlap: each synthetic text's closest private text (ROUGE-L) and
  the longest token span it copies verbatim.
- Canaries: how many were emitted, mean log-probability and exposure.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fedpit.eval.attack import mia
from fedpit.eval.metrics import exact_match, longest_common_substring_tokens
from fedpit.synth.rouge import rouge_l

Tokenize = Callable[[str], Sequence[int]]


def longest_shared_span(tokens: Sequence[int], references: Sequence[Sequence[int]]) -> int:
    """Length of the longest run of ``tokens`` found verbatim in any one reference.

    The same number as the maximum of :func:`longest_common_substring_tokens` over the
    references, fast enough for every synthetic text against all of a client's data.
    Binary search on the length; each probe is a C-speed substring search, with token
    ids mapped to characters and the references joined by a separator no token maps to.
    """
    text = "".join(chr(t + 1) for t in tokens)
    hay = "\x00".join("".join(chr(t + 1) for t in ref) for ref in references)

    def shared(k: int) -> bool:
        return any(text[i : i + k] in hay for i in range(len(text) - k + 1))

    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if shared(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def extraction_rows(
    generations: Sequence[str], references: Sequence[str], tokenize: Tokenize
) -> list[dict[str, Any]]:
    """Per-example extraction scores of each generation against its true response."""
    return [
        {
            "rouge_l": rouge_l(gen, ref),
            "exact_match": exact_match(gen, ref),
            "lcs_tokens": longest_common_substring_tokens(tokenize(gen), tokenize(ref)),
        }
        for gen, ref in zip(generations, references, strict=True)
    ]


def summarise_extraction(rows: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Mean ROUGE-L, exact-match rate, mean and max longest common token span."""
    if not rows:
        return None
    return {
        "rouge_l": statistics.fmean(r["rouge_l"] for r in rows),
        "exact_match": statistics.fmean(float(r["exact_match"]) for r in rows),
        "lcs_tokens": statistics.fmean(r["lcs_tokens"] for r in rows),
        "lcs_tokens_max": max(r["lcs_tokens"] for r in rows),
    }


SPAN_TOKENS = 8
"""A synthetic text sharing this many consecutive tokens with a private one counts as
touching private text (the default verbatim-span guard blocks 8 words)."""


def touches_canary(text: str, canaries: Sequence[tuple[str, str]]) -> bool:
    """Whether ``text`` names a canary's patient or quotes its secret."""
    return any(name in text or secret in text for name, secret in canaries)


def synthetic_overlap(
    synthetic: Mapping[str, Sequence[str]],
    private: Mapping[str, Sequence[str]],
    tokenize: Tokenize,
    canaries: Sequence[tuple[str, str]] = (),
) -> dict[str, float] | None:
    """How close each client's synthetic texts come to that client's private texts.

    For every synthetic text: ROUGE-L against its closest private text, and the longest
    token span it copies verbatim from any one of them; how many share at least
    :data:`SPAN_TOKENS` consecutive tokens with one, and how many name a planted canary's
    patient or quote its secret (``canaries``: (patient name, secret) pairs). ``None``
    when there is no synthetic text.
    """
    scores: list[float] = []
    spans: list[int] = []
    touching = 0
    for client, texts in synthetic.items():
        refs = private.get(client, [])
        ref_tokens = [tokenize(r) for r in refs]
        for text in texts:
            scores.append(max((rouge_l(text, r) for r in refs), default=0.0))
            spans.append(longest_shared_span(tokenize(text), ref_tokens))
            touching += touches_canary(text, canaries)
    if not scores:
        return None
    return {
        "n": len(scores),
        "rouge_l_mean": statistics.fmean(scores),
        "rouge_l_max": max(scores),
        "longest_span_tokens": max(spans),
        "span_share": sum(s >= SPAN_TOKENS for s in spans) / len(spans),
        "canary_touches": touching,
    }


def canary_summary(
    emitted: Sequence[bool],
    logprobs: Sequence[float],
    reference_logprobs: Sequence[Sequence[float]],
) -> dict[str, float] | None:
    """Count emitted canaries; mean log-probability (nats) and exposure (bits)."""
    if not logprobs:
        return None
    return {
        "n": len(logprobs),
        "emitted": sum(emitted),
        "mean_logprob": statistics.fmean(logprobs),
        "mean_exposure": statistics.fmean(
            mia.exposure(lp, refs) for lp, refs in zip(logprobs, reference_logprobs, strict=True)
        ),
    }
