"""ROUGE-L F-measure, the one similarity used by every SynGen filter.

It comes from Google's ``rouge_score`` (the reference implementation), which lowercases
and keeps only alphanumeric tokens, so punctuation and case never count.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer


@lru_cache(maxsize=1)
def _scorer() -> RougeScorer:
    # Imported on first use: rouge_score pulls in nltk and scipy (≈ 1.3 s), which the
    # configuration and the command line (`fedpit --help`) must not wait for.
    from rouge_score.rouge_scorer import RougeScorer

    # Stateless after construction, so one shared instance is safe across clients.
    return RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(text: str, reference: str) -> float:
    """ROUGE-L F-measure between ``text`` and ``reference`` (symmetric, in [0, 1])."""
    return float(_scorer().score(reference, text)["rougeL"].fmeasure)


def max_rouge_l(text: str, references: Sequence[str]) -> float:
    """The highest ROUGE-L F-measure of ``text`` against any of ``references``.

    Returns 0.0 when there are no references.
    """
    return max((rouge_l(text, ref) for ref in references), default=0.0)
