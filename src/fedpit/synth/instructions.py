"""The instruction phase: a Self-Instruct prompt over local questions, and its parser.

Layout (the best one found with the default model; plain text, no chat
template, which made the model copy a shown question)::

    Come up with a series of tasks:
    Task 1: <local question>
    ...
    Task 8: <local question>
    Task 9: <stem of one shown question>

Greedy decoding gives one continuation per prompt, so diversity comes from re-sampling
and re-ordering the demonstrations and the stem for every attempt.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from fedpit.data.example import Example
from fedpit.lm.generation import GenerationSpec
from fedpit.synth.filters import looks_like_refusal
from fedpit.synth.templates import parse_question

HEADER = "Come up with a series of tasks:\n"
_NEXT_TASK = re.compile(r"\s*\bTask\s*\d+\s*:", re.IGNORECASE)


def question_stem(example: Example) -> str:
    """The words of a question before its focus entity ("What are the symptoms of").

    Uses ``meta["focus"]`` when it occurs in the instruction, else the MedQuAD template
    the question matches. Otherwise no stem (""): the first words of an arbitrary task
    would mostly lead the model to repeat that task.
    """
    question = example.instruction
    focus = example.meta.get("focus", "")
    at = question.lower().find(focus.lower()) if focus else -1
    if at >= 0:
        return question[:at].strip()
    parsed = parse_question(question)
    return parsed.stem if parsed else ""


def instruction_prompt(questions: Sequence[str], stem: str) -> str:
    """The Self-Instruct prompt: numbered ``questions``, then the next task opened with ``stem``.

    The prompt never ends in a space: BPE tokenizers attach a space to the word after
    it, so a trailing one would push the model off its usual tokens.
    """
    lines = [f"Task {i}: {q.strip()}\n" for i, q in enumerate(questions, start=1)]
    opening = f"Task {len(questions) + 1}:" + (f" {stem}" if stem else "")
    return HEADER + "".join(lines) + opening


def sample_instruction_prompt(
    private: Sequence[Example], rng: random.Random, num_demos: int = 8
) -> tuple[str, str]:
    """Sample demonstrations (random order) and a stem; return ``(prompt, stem)``."""
    demos = rng.sample(list(private), min(num_demos, len(private)))
    stem = question_stem(rng.choice(demos))
    return instruction_prompt([d.instruction for d in demos], stem), stem


def instruction_spec(
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> GenerationSpec:
    """Decoding for the instruction phase: one line, no repetition penalty."""
    return GenerationSpec(
        max_new_tokens=max_new_tokens,
        stop=("\n",),
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
    )


def parse_instruction(stem: str, continuation: str) -> str:
    """The new instruction: ``stem`` + the continuation's first line, stripped.

    A trailing "Task 10:"-like tail is dropped. Returns "" for malformed output: a blank
    continuation (the stem alone is no new task) or one that opens like a refusal.
    """
    line = continuation.split("\n", 1)[0]
    line = _NEXT_TASK.split(line, maxsplit=1)[0]
    if not line.strip() or looks_like_refusal(line):
        return ""
    if stem and not line[0].isspace() and line[0].isalnum():
        line = " " + line  # the stem ends on a word; keep the next word apart
    return (stem + line).strip()
