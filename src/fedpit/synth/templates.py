"""MedQuAD's question templates: a question's focus entity and question type.

MedQuAD questions are generated from about 16 templates ("What are the symptoms of X ?",
"Is X inherited ?", ...), derived here from the real data (qtype names as in MedQuAD's
``qtype`` field). Knowing (entity, qtype) lets the novelty filter tell a new disease
asked the same way apart from the same question reworded — which ROUGE-L cannot
("What is (are) Down Syndrome ?" vs "... Poland syndrome ?" scores 0.8).
A few paraphrases a model is likely to produce are accepted under the same qtype.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_E = r"(?P<entity>.+?)"

# Order matters: specific patterns come before the generic "what is X".
_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("information", rf"what is \(are\) {_E}"),
    ("information", rf"do you have (?:any )?information about {_E}"),
    ("symptoms", rf"what are the (?:signs and )?symptoms (?:of|for) {_E}"),
    ("treatment", rf"what are the treatments? for {_E}"),
    ("treatment", rf"what is the treatment for {_E}"),
    ("treatment", rf"how to treat {_E}"),
    ("treatment", rf"how (?:is|are|can) {_E} (?:be )?treated"),
    ("inheritance", rf"is {_E} inherited"),
    ("frequency", rf"how many people are affected by {_E}"),
    ("frequency", rf"how common (?:is|are) {_E}"),
    ("genetic changes", rf"what are the genetic changes related to {_E}"),
    ("causes", rf"what causes {_E}"),
    ("causes", rf"what are the causes of {_E}"),
    ("exams and tests", rf"how to diagnose {_E}"),
    ("exams and tests", rf"how (?:is|are) {_E} diagnosed"),
    ("research", rf"what research (?:\(or clinical trials\) )?is being done for {_E}"),
    ("outlook", rf"what is the outlook for {_E}"),
    ("susceptibility", rf"who is at risk (?:for|of) {_E}"),
    ("considerations", rf"what to do for {_E}"),
    ("prevention", rf"how to prevent {_E}"),
    ("prevention", rf"how can {_E} be prevented"),
    ("stages", rf"what are the stages of {_E}"),
    ("complications", rf"what are the complications of {_E}"),
    ("support groups", rf"where to find support for people with {_E}"),
    ("information", rf"what (?:is|are) (?!\(are\)){_E}"),
)
_COMPILED = tuple(
    (qtype, re.compile(rf"\s*{body}[\s?.!]*", re.IGNORECASE)) for qtype, body in _TEMPLATES
)


@dataclass(frozen=True)
class Parsed:
    """A question matched to a template.

    Attributes:
        entity: The focus entity as written in the question.
        qtype: The question type (MedQuAD's ``qtype`` vocabulary).
        stem: The question text before the entity (e.g. "What are the symptoms of").
    """

    entity: str
    qtype: str
    stem: str


def normalize_entity(entity: str) -> str:
    """Case-, space- and punctuation-insensitive key of an entity name."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", entity.lower()).split())


def parse_question(question: str) -> Parsed | None:
    """Match ``question`` to the first fitting template; None when none fits.

    The entity must contain a letter or digit, so "What is (are)  ?" does not match.
    """
    for qtype, pattern in _COMPILED:
        m = pattern.fullmatch(question)
        if m and normalize_entity(m["entity"]):
            stem = question[: m.start("entity")].strip()
            return Parsed(entity=m["entity"].strip(), qtype=qtype, stem=stem)
    return None
