from __future__ import annotations

import pytest

from fedpit.data.example import Example
from fedpit.errors import ConfigError
from fedpit.lm.generation import Generation
from fedpit.synth import filters as f
from fedpit.synth.rouge import max_rouge_l, rouge_l

LOCAL = ["What is (are) Poland syndrome ?", "What are the symptoms of Gout ?"]


def test_rouge_l_on_templated_questions() -> None:
    # Hand-computed: one word differs out of five tokens → F = 0.8.
    assert rouge_l("What is (are) Down Syndrome ?", LOCAL[0]) == pytest.approx(0.8)
    assert max_rouge_l("What is (are) Down Syndrome ?", LOCAL) == pytest.approx(0.8)
    assert max_rouge_l("anything", []) == 0.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", f.EMPTY),
        ("   ", f.EMPTY),
        ("Gout symptoms?", f.TOO_SHORT),
        ("As an AI language model, what is gout?", f.REFUSAL),
        ("As a doctor, explain gout to me.", f.REFUSAL),
        ("Sorry, I cannot answer that question.", f.REFUSAL),
        ("I\u2019m sorry but I can't help.", f.REFUSAL),
        ("I can't think of another task here.", f.REFUSAL),
        ("Gout is a painful form of arthritis.", f.NOT_A_TASK),
        ("What are the symptoms of Gout ?", None),
        ("Describe the treatment options for gout.", None),
        ("Gout in older adults: what changes ?", None),
    ],
)
def test_instruction_reason(text: str, reason: str | None) -> None:
    assert f.instruction_reason(text, min_words=3) == reason


def test_rouge_novelty_rejects_another_disease_asked_the_same_way() -> None:
    novelty = f.make_novelty("rouge", LOCAL, 0.7)
    assert novelty.reason("What is (are) Down Syndrome ?") == f.NOT_NOVEL
    assert novelty.reason("How to prevent Down Syndrome ?") is None


def test_focus_novelty_accepts_new_entity_rejects_same_entity_and_qtype() -> None:
    novelty = f.make_novelty("focus", LOCAL, 0.7)
    assert novelty.reason("What is (are) Down Syndrome ?") is None
    # Same entity and qtype, reworded, different case/punctuation: a copy.
    assert novelty.reason("Do you have information about POLAND-syndrome") == f.NOT_NOVEL
    assert novelty.reason("what are the signs and symptoms of gout?") == f.NOT_NOVEL
    # Same entity, other question type: new.
    assert novelty.reason("Is Poland syndrome inherited ?") is None


def test_novelty_remembers_accepted_instructions() -> None:
    for name in ("rouge", "focus"):
        novelty = f.make_novelty(name, LOCAL, 0.7)
        assert novelty.reason("Is Down syndrome inherited ?") is None
        novelty.accept("Is Down syndrome inherited ?")
        assert novelty.reason("Is Down Syndrome inherited?") == f.NOT_NOVEL


def test_focus_novelty_falls_back_to_rouge_for_untemplated_questions() -> None:
    novelty = f.make_novelty("focus", ["Give three tips for staying healthy."], 0.7)
    assert novelty.reason("Give three tips for staying healthy at work.") == f.NOT_NOVEL
    assert novelty.reason("Explain how vaccines train the immune system.") is None


def test_make_novelty_names_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"synth.novelty = 'bleu'.*rouge, focus"):
        f.make_novelty("bleu", LOCAL, 0.7)


GOOD = "Gout is a form of arthritis caused by uric acid crystals that build up in joints."


@pytest.mark.parametrize(
    ("gen", "kind", "reason"),
    [
        (Generation(GOOD, True), "chat", None),
        (Generation(GOOD, True), "alpaca", None),
        (Generation("  \n", True), "chat", f.RESPONSE_EMPTY),
        (Generation(GOOD, False), "chat", f.UNFINISHED),
        (Generation(GOOD + "\n\n### Instruction:\nNext", True), "alpaca", f.NEW_SECTION),
        (Generation(GOOD + "\n\n### Instruction:\nNext", True), "chat", None),
        (Generation("Gout hurts a lot.", True), "chat", f.RESPONSE_SHORT),
        (Generation("the pain is bad " * 10, True), "chat", f.DEGENERATE),
    ],
)
def test_response_reason(gen: Generation, kind: str, reason: str | None) -> None:
    assert f.response_reason(gen, kind, min_words=10, min_distinct_trigram_ratio=0.5) == reason


def test_distinct_trigram_ratio() -> None:
    assert f.distinct_trigram_ratio("a b c d") == 1.0
    assert f.distinct_trigram_ratio("a b a b a b") == pytest.approx(2 / 4)
    assert f.distinct_trigram_ratio("two words") == 1.0


def test_copy_filter_uses_instruction_input_and_output() -> None:
    local = [Example("p1", "What causes gout ?", "", GOOD)]
    copy = Example("syn-0", "What causes gout ?", "", GOOD.replace("form", "kind"))
    new = Example("syn-1", "Is asthma inherited ?", "", "Asthma often runs in families, " * 2)
    assert f.copy_reason(copy, local, 0.7) == f.COPY
    assert f.copy_reason(new, local, 0.7) is None
    assert f.example_text(Example("x", "I", "In", "Out")) == "I\nIn\nOut"


def test_rejection_reasons_are_unique() -> None:
    assert len(set(f.REJECTION_REASONS)) == len(f.REJECTION_REASONS)
    assert not set(f.REJECTION_REASONS) & set(f.RESPONSE_REASONS)
