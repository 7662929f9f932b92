from __future__ import annotations

import pytest

from fedpit.synth.templates import normalize_entity, parse_question


@pytest.mark.parametrize(
    ("question", "entity", "qtype", "stem"),
    [
        ("What is (are) Down Syndrome ?", "Down Syndrome", "information", "What is (are)"),
        ("Do you have information about Knee Injuries", "Knee Injuries", "information",
         "Do you have information about"),
        ("What are the symptoms of Poland syndrome ?", "Poland syndrome", "symptoms",
         "What are the symptoms of"),
        ("What are the treatments for Gout ?", "Gout", "treatment", "What are the treatments for"),
        ("Is Fabry disease inherited ?", "Fabry disease", "inheritance", "Is"),
        ("How many people are affected by Fabry disease ?", "Fabry disease", "frequency",
         "How many people are affected by"),
        ("What are the genetic changes related to Alport syndrome ?", "Alport syndrome",
         "genetic changes", "What are the genetic changes related to"),
        ("What causes Shingles ?", "Shingles", "causes", "What causes"),
        ("How to diagnose Heart Failure ?", "Heart Failure", "exams and tests", "How to diagnose"),
        ("what research (or clinical trials) is being done for Stroke ?", "Stroke", "research",
         "what research (or clinical trials) is being done for"),
        ("What is the outlook for Cerebral Palsy ?", "Cerebral Palsy", "outlook",
         "What is the outlook for"),
        ("Who is at risk for Rabies? ?", "Rabies", "susceptibility", "Who is at risk for"),
        ("What to do for Gas ?", "Gas", "considerations", "What to do for"),
        ("How to prevent Stroke ?", "Stroke", "prevention", "How to prevent"),
        ("What are the stages of Lung Cancer ?", "Lung Cancer", "stages",
         "What are the stages of"),
        ("What are the complications of Shingles ?", "Shingles", "complications",
         "What are the complications of"),
    ],
)  # fmt: skip
def test_templates_parse_entity_qtype_and_stem(
    question: str, entity: str, qtype: str, stem: str
) -> None:
    parsed = parse_question(question)
    assert parsed is not None
    assert (parsed.entity, parsed.qtype, parsed.stem) == (entity, qtype, stem)


def test_paraphrases_share_the_qtype() -> None:
    a = parse_question("What is the treatment for gout?")
    b = parse_question("How is gout treated?")
    assert a is not None and b is not None
    assert (a.entity, a.qtype) == ("gout", "treatment")
    assert (b.entity, b.qtype) == ("gout", "treatment")


def test_untemplated_and_entityless_questions_do_not_parse() -> None:
    assert parse_question("Give three tips for staying healthy.") is None
    assert parse_question("What is (are)  ?") is None


def test_normalize_entity_ignores_case_space_punctuation() -> None:
    assert normalize_entity("  Alzheimer's   Disease ") == normalize_entity("alzheimer s disease")
    assert normalize_entity("Type-2 Diabetes") == "type 2 diabetes"
