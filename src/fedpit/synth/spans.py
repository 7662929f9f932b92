r"""The verbatim-span guard: no synthetic example may repeat k words of a private one.

Synthetic examples train the public adapter, whose mix leaves the client; a span copied
word for word from a private example would leave with it. The ROUGE-L copy filter
catches near-copies of a whole example; this guard catches a single copied passage
inside an otherwise new answer (a sentence of a private answer, a phone number, a name).

Decision: spans are counted in *words*, not model tokens — lowercased runs of letters
and digits (``\w+``), so punctuation, case and whitespace do not hide a copy and the
rule reads the same for every model ("8 consecutive words"). Fields are compared one by
one (instruction, input, response), so a span never runs across two fields.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence

from fedpit.data.example import Example
from fedpit.synth.filters import COPIED_SPAN

_WORD = re.compile(r"\w+")

Span = tuple[Hashable, ...]


def word_tokens(text: str) -> list[str]:
    """The guard's tokens: lowercased runs of letters, digits and ``_``."""
    return _WORD.findall(text.lower())


def spans(tokens: Sequence[Hashable], k: int) -> set[Span]:
    """Every run of ``k`` consecutive tokens (empty when there are fewer than ``k``)."""
    return {tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1)} if k > 0 else set()


def first_shared_span(tokens: Sequence[Hashable], known: set[Span], k: int) -> Span | None:
    """The first run of ``k`` tokens of ``tokens`` that is in ``known``, or None.

    Pure and tokenizer-agnostic: works on words or on model token ids alike.
    """
    if k <= 0:
        return None
    for i in range(len(tokens) - k + 1):
        span = tuple(tokens[i : i + k])
        if span in known:
            return span
    return None


def _fields(example: Example) -> Iterable[str]:
    return (f for f in (example.instruction, example.input, example.output) if f)


class SpanGuard:
    """Blocks candidates that share ``k`` consecutive words with a private example.

    Args:
        private: The client's private examples (instruction, input and response).
        k: ``synth.max-copied-span``; 0 switches the guard off.
    """

    def __init__(self, private: Sequence[Example], k: int) -> None:
        self.k = k
        self.known: set[Span] = set()
        for example in private if k > 0 else ():
            for text in _fields(example):
                self.known |= spans(word_tokens(text), k)

    def reason(self, candidate: Example) -> str | None:
        """:data:`~fedpit.synth.filters.COPIED_SPAN` when a field repeats a private span."""
        for text in _fields(candidate):
            if first_shared_span(word_tokens(text), self.known, self.k) is not None:
                return COPIED_SPAN
        return None
