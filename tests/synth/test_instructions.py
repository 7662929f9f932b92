from __future__ import annotations

import random
import re

import pytest

from fedpit.data.example import Example
from fedpit.synth.instructions import (
    HEADER,
    instruction_prompt,
    instruction_spec,
    parse_instruction,
    question_stem,
    sample_instruction_prompt,
)


def ex(i: int, question: str, focus: str = "") -> Example:
    meta = {"focus": focus} if focus else {}
    return Example(f"p{i}", question, "", "An answer.", meta)


PRIVATE = [
    ex(0, "What are the symptoms of Gout ?", "Gout"),
    ex(1, "Is Fabry disease inherited ?", "Fabry disease"),
    ex(2, "What is (are) Asthma ?", "Asthma"),
    ex(3, "How to prevent Stroke ?", "Stroke"),
    ex(4, "What causes Shingles ?", "Shingles"),
    ex(5, "What are the treatments for Lupus ?", "Lupus"),
    ex(6, "How many people are affected by Rett syndrome ?", "Rett syndrome"),
    ex(7, "What is the outlook for Cerebral Palsy ?", "Cerebral Palsy"),
    ex(8, "What to do for Gas ?", "Gas"),
    ex(9, "What are the stages of Lung Cancer ?", "Lung Cancer"),
]


def test_question_stem_from_focus_then_template_else_nothing() -> None:
    assert question_stem(PRIVATE[0]) == "What are the symptoms of"
    assert question_stem(ex(0, "Is Fabry disease inherited ?", "fabry DISEASE")) == "Is"
    assert question_stem(ex(0, "How to diagnose Gout ?")) == "How to diagnose"  # no meta
    assert question_stem(ex(0, "Give three tips for staying healthy.")) == ""


def test_instruction_prompt_layout() -> None:
    prompt = instruction_prompt(["Q one ?", "Q two ?"], "What causes")
    assert (
        prompt
        == "Come up with a series of tasks:\nTask 1: Q one ?\nTask 2: Q two ?\nTask 3: What causes"
    )
    assert instruction_prompt(["Q one ?"], "").endswith("\nTask 2:")


def test_sampled_prompt_shows_eight_shuffled_questions_and_a_shown_stem() -> None:
    rng = random.Random(0)
    prompts = [sample_instruction_prompt(PRIVATE, rng, 8) for _ in range(5)]
    for prompt, stem in prompts:
        assert prompt.startswith(HEADER)
        lines = prompt[len(HEADER) :].split("\n")
        assert [int(re.match(r"Task (\d+):", line)[1]) for line in lines] == list(range(1, 10))
        shown = [line.split(": ", 1)[1] for line in lines[:8]]
        assert len(set(shown)) == 8 and set(shown) <= {p.instruction for p in PRIVATE}
        assert lines[8] == f"Task 9: {stem}"
        assert any(q.startswith(stem + " ") for q in shown)
    orders = {p for p, _ in prompts}
    assert len(orders) > 1  # re-sampled and re-ordered for each attempt


def test_small_private_set_shows_all_questions() -> None:
    prompt, _ = sample_instruction_prompt(PRIVATE[:3], random.Random(1), 8)
    assert "Task 3: " in prompt and "Task 4: " in prompt and "Task 5" not in prompt


def test_instruction_spec_is_greedy_single_line() -> None:
    spec = instruction_spec(32)
    assert (spec.max_new_tokens, spec.stop, spec.do_sample, spec.repetition_penalty) == (
        32, ("\n",), False, 1.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("stem", "continuation", "expected"),
    [
        ("What are the symptoms of", " Lyme disease ?", "What are the symptoms of Lyme disease ?"),
        ("What are the symptoms of", "Lyme disease ?", "What are the symptoms of Lyme disease ?"),
        ("Is", " Gout inherited ? Task 10: What causes", "Is Gout inherited ?"),
        ("", " How to prevent Gout ?\nTask 10: x", "How to prevent Gout ?"),
        ("", "What causes Gout ?task 10:", "What causes Gout ?"),
        ("What causes", "", ""),
        ("What causes", "   \t ", ""),
        ("What causes", " Task 10: What is (are) Gout ?", ""),
        ("", "\nTask 10: What causes Gout ?", ""),
        ("What causes", " I'm sorry, I cannot do that.", ""),
        ("", "Sorry, as an AI I cannot", ""),
    ],
)
def test_parse_instruction(stem: str, continuation: str, expected: str) -> None:
    assert parse_instruction(stem, continuation) == expected
