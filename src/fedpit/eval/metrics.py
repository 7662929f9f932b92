"""Answer-vs-reference metrics: ROUGE-L, token F1, semantic similarity, verbatim overlap.

Pure functions on strings (and an injected embedder), shared by utility evaluation and
the extraction attack.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from fedpit.data.partition import embed_minilm
from fedpit.synth.rouge import rouge_l

__all__ = [
    "Embed",
    "exact_match",
    "longest_common_substring_tokens",
    "normalize_answer",
    "rouge_l",
    "semantic_similarity",
    "token_f1",
]

Embed = Callable[[list[str]], np.ndarray]
"""Texts → one embedding row per text (``embed_minilm`` or a fake in tests)."""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation and articles, squeeze spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 of ``prediction`` against ``reference``.

    Tokens are the whitespace-separated words after :func:`normalize_answer`; overlap
    counts shared tokens with multiplicity. As in the SQuAD v2 script, two answers with
    no tokens score 1.0 and one empty answer against a non-empty one scores 0.0.
    """
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred)
    recall = common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> bool:
    """Whether the two texts are equal after collapsing whitespace (case and punctuation count)."""
    return prediction.split() == reference.split()


def longest_common_substring_tokens(a: Sequence[object], b: Sequence[object]) -> int:
    """Length of the longest contiguous run of tokens that ``a`` and ``b`` share.

    Dynamic programming over one row, O(len(a)·len(b)) time, O(len(b)) memory.
    """
    best = 0
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            if token == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def semantic_similarity(
    predictions: Sequence[str], references: Sequence[str], embed: Embed = embed_minilm
) -> list[float]:
    """Cosine similarity of each prediction with its reference, pair by pair.

    Both sides are embedded in one call; rows are re-normalised so any embedder works
    (a zero row gives similarity 0).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return []
    vectors = np.asarray(embed([*predictions, *references]), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms == 0, 1.0, norms)
    n = len(predictions)
    cosines = np.sum(vectors[:n] * vectors[n:], axis=1)
    return [float(c) for c in np.clip(cosines, -1.0, 1.0)]
