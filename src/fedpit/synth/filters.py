"""SynGen filters: each check returns a rejection reason (a named constant) or None.

A candidate's life ends either kept or under exactly one of :data:`REJECTION_REASONS`.
Response checks have their own finer reasons (:data:`RESPONSE_REASONS`); the pipeline
retries those and, when retries run out, counts the instruction under :data:`FORMAT`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from fedpit.config.schema import NOVELTY_CHECKS
from fedpit.data.example import Example
from fedpit.errors import ConfigError
from fedpit.lm.generation import Generation
from fedpit.model.prompts import ALPACA
from fedpit.synth.rouge import max_rouge_l
from fedpit.synth.templates import normalize_entity, parse_question

# Instruction phase.
EMPTY = "empty"  # nothing usable generated (blank output or the stem alone)
TOO_SHORT = "too_short"
REFUSAL = "refusal"  # starts like a refusal or a persona line
NOT_A_TASK = "not_a_task"
TRUNCATED = "truncated"  # the instruction was cut by max_new_tokens
NOT_NOVEL = "not_novel"
# Response phase, after all retries.
FORMAT = "format"
# Complete example.
COPY = "copy"
COPIED_SPAN = "copied_span"  # shares synth.max-copied-span words with a private example

REJECTION_REASONS: tuple[str, ...] = (
    EMPTY, TOO_SHORT, REFUSAL, NOT_A_TASK, TRUNCATED, NOT_NOVEL, FORMAT, COPY, COPIED_SPAN,
)  # fmt: skip

# Why one response generation failed (each is retried; see FORMAT).
RESPONSE_EMPTY = "response_empty"
UNFINISHED = "unfinished"  # cut by max_new_tokens
NEW_SECTION = "new_section"  # Alpaca only: the model started another "### " block
RESPONSE_SHORT = "response_short"
DEGENERATE = "degenerate"  # looping text: few distinct word trigrams
RESPONSE_REASONS: tuple[str, ...] = (
    RESPONSE_EMPTY, UNFINISHED, NEW_SECTION, RESPONSE_SHORT, DEGENERATE,
)  # fmt: skip


_REFUSAL_PREFIXES = (
    "as a ", "as an ", "as your ", "sorry", "i'm sorry", "i am sorry", "i cannot",
    "i can't", "i can not", "i apologize", "i'm unable", "i am unable", "i'm an ai",
    "i am an ai", "unfortunately",
)  # fmt: skip
# A task-like line asks a question or gives an order; the first word is checked
# against these short lists (MedQuAD's question words plus common Alpaca task verbs).
_QUESTION_WORDS = frozenset((
    "what", "how", "why", "when", "where", "which", "who", "whom", "whose", "is", "are",
    "was", "were", "do", "does", "did", "can", "could", "should", "would", "will", "may",
    "might", "has", "have",
))  # fmt: skip
_TASK_VERBS = frozenset((
    "describe", "explain", "list", "name", "give", "tell", "define", "summarize",
    "summarise", "compare", "write", "identify", "outline", "suggest", "provide",
    "discuss", "classify", "recommend",
))  # fmt: skip


def looks_like_refusal(text: str) -> bool:
    """Whether ``text`` opens like a refusal or a persona line ("As an AI ...", "Sorry")."""
    lowered = text.strip().lower().replace("\u2019", "'")
    return lowered.startswith(_REFUSAL_PREFIXES)


def is_task_like(text: str) -> bool:
    """Whether ``text`` reads as a question or a task.

    Deliberately simple: it ends with "?", or its first word is a question word
    ("what", "is", "how", ...) or a common task verb ("describe", "list", ...).
    """
    words = re.findall(r"[a-z']+", text.lower())
    return text.rstrip().endswith("?") or (
        bool(words) and (words[0] in _QUESTION_WORDS or words[0] in _TASK_VERBS)
    )


def instruction_reason(instruction: str, min_words: int = 3) -> str | None:
    """Why a parsed instruction is malformed, or None when it is well formed."""
    text = instruction.strip()
    if not text:
        return EMPTY
    if len(text.split()) < min_words:
        return TOO_SHORT
    if looks_like_refusal(text):
        return REFUSAL
    if not is_task_like(text):
        return NOT_A_TASK
    return None


def distinct_trigram_ratio(text: str) -> float:
    """Distinct word trigrams / all word trigrams (1.0 for fewer than 3 words)."""
    words = text.lower().split()
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    return len(set(trigrams)) / len(trigrams) if trigrams else 1.0


def response_reason(
    generation: Generation,
    kind: str,
    min_words: int = 10,
    min_distinct_trigram_ratio: float = 0.5,
) -> str | None:
    """Why a generated response fails the format checks, or None when it passes.

    Args:
        generation: The response continuation.
        kind: The prompt format's kind; ``alpaca`` responses must not open a new
            "### " section.
        min_words: Fewest words in a valid response.
        min_distinct_trigram_ratio: Lower bound of :func:`distinct_trigram_ratio`.
    """
    text = generation.text.strip()
    if not text:
        return RESPONSE_EMPTY
    if not generation.finished:
        return UNFINISHED
    if kind == ALPACA and "### " in text:
        return NEW_SECTION
    if len(text.split()) < min_words:
        return RESPONSE_SHORT
    if distinct_trigram_ratio(text) < min_distinct_trigram_ratio:
        return DEGENERATE
    return None


def example_text(example: Example) -> str:
    """Instruction, input and output of an example as one text (for the copy filter)."""
    return "\n".join(p for p in (example.instruction, example.input, example.output) if p)


def copy_reason(candidate: Example, local: Sequence[Example], threshold: float = 0.7) -> str | None:
    """:data:`COPY` when the candidate's ROUGE-L to any local example exceeds ``threshold``.

    This is both a copy filter and a leakage guard: synthetic data may be shared
    through the public adapter, so it must not reproduce a private example.
    """
    score = max_rouge_l(example_text(candidate), [example_text(e) for e in local])
    return COPY if score > threshold else None


class Novelty(Protocol):
    """A round's novelty check: local instructions plus those accepted so far."""

    def reason(self, instruction: str) -> str | None:
        """:data:`NOT_NOVEL` when ``instruction`` repeats a known one, else None."""
        ...

    def accept(self, instruction: str) -> None:
        """Remember ``instruction`` as accepted this round."""
        ...


class RougeNovelty:
    """The paper's check: reject above ``threshold`` ROUGE-L to any known instruction."""

    def __init__(self, local_instructions: Sequence[str], threshold: float = 0.7) -> None:
        self.known = list(local_instructions)
        self.threshold = threshold

    def reason(self, instruction: str) -> str | None:
        """:data:`NOT_NOVEL` when too similar to a known instruction, else None."""
        return NOT_NOVEL if max_rouge_l(instruction, self.known) > self.threshold else None

    def accept(self, instruction: str) -> None:
        """Add ``instruction`` to the known ones."""
        self.known.append(instruction)


class FocusNovelty:
    """Reject a templated question whose (entity, question type) is already known.

    Measured on MedQuAD's templated questions: ROUGE-L rejects a new disease asked the
    same way and accepts a reworded copy; the (entity, qtype) pair gets both right.
    Questions that match no template fall back to the ROUGE-L rule.
    """

    def __init__(self, local_instructions: Sequence[str], threshold: float = 0.7) -> None:
        self.rouge = RougeNovelty([], threshold)
        self.pairs: set[tuple[str, str]] = set()
        for text in local_instructions:
            self.accept(text)

    def reason(self, instruction: str) -> str | None:
        """:data:`NOT_NOVEL` when the pair (or, untemplated, the text) is known."""
        parsed = parse_question(instruction)
        if parsed is None:
            return self.rouge.reason(instruction)
        key = (normalize_entity(parsed.entity), parsed.qtype)
        return NOT_NOVEL if key in self.pairs else None

    def accept(self, instruction: str) -> None:
        """Add ``instruction`` (its pair, and its text for the fallback)."""
        parsed = parse_question(instruction)
        if parsed is not None:
            self.pairs.add((normalize_entity(parsed.entity), parsed.qtype))
        self.rouge.accept(instruction)


def make_novelty(name: str, local_instructions: Sequence[str], threshold: float) -> Novelty:
    """Build the novelty check named by ``synth.novelty`` (``rouge`` or ``focus``)."""
    if name == "rouge":
        return RougeNovelty(local_instructions, threshold)
    if name == "focus":
        return FocusNovelty(local_instructions, threshold)
    raise ConfigError(f"synth.novelty = {name!r}; allowed: {', '.join(NOVELTY_CHECKS)}")
