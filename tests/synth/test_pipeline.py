from __future__ import annotations

import random
import re
from collections.abc import Sequence

import pytest

from fedpit.data.example import Example
from fedpit.errors import ConfigError
from fedpit.lm.generation import Generation, GenerationSpec
from fedpit.model.prompts import PromptFormat
from fedpit.synth import filters as f
from fedpit.synth.instructions import HEADER
from fedpit.synth.pipeline import SynthSettings, generate_synthetic


def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    text = "".join(f"<{m['role']}>{m['content']}</>" for m in messages)
    return text + ("<assistant>" if add_generation_prompt else "")


CHAT = PromptFormat("chat", "</>", render_chat=lambda m, g: render(m, g))
ALPACA = PromptFormat("alpaca", "<eos>")
_LAST_QUESTION = {
    "chat": re.compile(r"<user>([^<]*)</><assistant>$"),
    "alpaca": re.compile(r"### Instruction:\n(.*)\n\n### Response:\n$"),
}

NURSE = (
    "Nurses sort patients by how urgent their condition is, using vital signs, the "
    "main complaint and a standard scale, so that the sickest people are seen first "
    "and everyone else waits safely."
)
# Untemplated questions without a focus: no stem, so scripted continuations are whole.
PRIVATE = [
    Example("p0", "Describe how nurses triage patients in an emergency room.", "", NURSE),
    Example("p1", "Explain why hand washing matters in hospitals.", "", "Hands carry germs. " * 6),
    Example("p2", "List three habits that protect the heart.", "", "Exercise, diet, no smoking."),
    Example("p3", "Summarize the role of a pharmacist on a ward.", "", "They check drugs."),
]
ANSWER = "Lyme disease is an infection spread by ticks that causes fever, rash and joint pain."


def ok(text: str) -> Generation:
    return Generation(text, True)


class ScriptedGenerate:
    """Instruction outputs in order; responses popped per question, one per call."""

    def __init__(self, kind: str, instructions: list[Generation],
                 responses: dict[str, list[Generation]]) -> None:  # fmt: skip
        self.kind = kind
        self.instructions = instructions
        self.responses = {q: list(rs) for q, rs in responses.items()}
        self.calls: list[tuple[list[str], GenerationSpec]] = []

    def __call__(self, prompts: Sequence[str], spec: GenerationSpec) -> list[Generation]:
        self.calls.append((list(prompts), spec))
        if prompts[0].startswith(HEADER):
            assert len(prompts) == len(self.instructions)
            return list(self.instructions)
        out = []
        for p in prompts:
            m = _LAST_QUESTION[self.kind].search(p)
            assert m is not None, p
            out.append(self.responses[m[1]].pop(0))
        return out


def scripted(kind: str) -> ScriptedGenerate:
    instructions = [
        ok(" What are the symptoms of Lyme disease ?"),  # 0 kept
        ok("   "),  # 1 empty
        ok(" As an AI, I cannot write tasks."),  # 2 refusal
        ok(" Gout facts?"),  # 3 too short
        ok(" Gout is a painful disease."),  # 4 not a task
        Generation(" What are the longest words in the", False),  # 5 truncated
        ok(" what are the signs and symptoms of lyme-disease?"),  # 6 not novel (same as 0)
        ok(" Is Lyme disease inherited ?"),  # 7 kept after one retry
        ok(" How to prevent Lyme disease ?"),  # 8 format failure, 3 times
        ok(" What causes Lyme disease ? Task 10: What"),  # 9 copy of a private answer
    ]
    responses = {
        "What are the symptoms of Lyme disease ?": [ok(ANSWER)],
        "Is Lyme disease inherited ?": [Generation(ANSWER, False), ok(" " + ANSWER + "\n")],
        "How to prevent Lyme disease ?": [ok("Avoid ticks."), ok("ticks bite " * 8), ok("No.")],
        "What causes Lyme disease ?": [ok(NURSE)],
    }
    return ScriptedGenerate(kind, instructions, responses)


@pytest.mark.parametrize("fmt", [CHAT, ALPACA], ids=["chat", "alpaca"])
def test_pipeline_end_to_end(fmt: PromptFormat) -> None:
    gen = scripted(fmt.kind)
    settings = SynthSettings(attempts=10, novelty="focus", trim_unfinished=False)
    result = generate_synthetic(PRIVATE, gen, fmt, settings, random.Random(3))

    assert [e.id for e in result.examples] == ["syn-0", "syn-7"]
    assert [e.instruction for e in result.examples] == [
        "What are the symptoms of Lyme disease ?",
        "Is Lyme disease inherited ?",
    ]
    assert all(e.output == ANSWER and e.input == "" for e in result.examples)
    assert all(e.meta["synthetic"] == "true" for e in result.examples)

    expected = dict.fromkeys(f.REJECTION_REASONS, 0) | {
        f.EMPTY: 1, f.REFUSAL: 1, f.TOO_SHORT: 1, f.NOT_A_TASK: 1, f.TRUNCATED: 1,
        f.NOT_NOVEL: 1, f.FORMAT: 1, f.COPY: 1,
    }  # fmt: skip
    assert result.rejected == expected
    assert result.attempts == 10 == len(result.examples) + sum(result.rejected.values())
    assert result.response_failures == dict.fromkeys(f.RESPONSE_REASONS, 0) | {
        f.UNFINISHED: 1, f.RESPONSE_SHORT: 2, f.DEGENERATE: 1,
    }  # fmt: skip

    # Batching: one call for all instructions, one per retry round for the responses.
    assert [len(prompts) for prompts, _ in gen.calls] == [10, 4, 2, 1]
    assert result.generate_calls == {"instruction": 1, "response": 3}
    # Each call is timed, in order, with its phase and batch (where SynGen's time goes).
    assert [(c["phase"], c["prompts"]) for c in result.calls] == [
        ("instruction", 10), ("response", 4), ("response", 2), ("response", 1),
    ]  # fmt: skip
    assert all(isinstance(c["seconds"], float) and c["seconds"] >= 0 for c in result.calls)
    instruction_spec, response_spec = gen.calls[0][1], gen.calls[1][1]
    assert (instruction_spec.stop, instruction_spec.max_new_tokens) == (("\n",), 32)
    # The defaults sample both phases at T = 1 with no repetition penalty.
    for spec in (instruction_spec, response_spec):
        assert (spec.do_sample, spec.temperature, spec.repetition_penalty) == (True, 1.0, 1.0)
    assert response_spec.max_new_tokens == 160
    assert response_spec.stop == (("###",) if fmt.kind == "alpaca" else ())
    # Every instruction prompt shows all 4 private questions (fewer than 8).
    assert all(p.count("\nTask ") == 5 for p in gen.calls[0][0])
    # Retries re-sample the demonstrations of the failed instruction.
    retry_prompts = {prompts[-1] for prompts, _ in gen.calls[1:]}
    assert len(retry_prompts) > 1


def test_each_response_prompt_shows_two_private_demos() -> None:
    gen = scripted("chat")
    generate_synthetic(PRIVATE, gen, CHAT, SynthSettings(attempts=10), random.Random(3))
    for prompt in gen.calls[1][0]:
        assert prompt.count("<user>") == 3 and prompt.count("<assistant>") == 3
        shown = re.findall(r"<user>([^<]*)</>", prompt)[:2]
        assert set(shown) <= {e.instruction for e in PRIVATE}


@pytest.mark.parametrize(("novelty", "kept"), [("rouge", 0), ("focus", 1)])
def test_novelty_choice_on_templated_questions(novelty: str, kept: int) -> None:
    private = [
        Example("p0", "What is (are) Poland syndrome ?", "", NURSE, {"focus": "Poland syndrome"})
    ]
    gen = ScriptedGenerate(
        "chat", [ok(" Down Syndrome ?")], {"What is (are) Down Syndrome ?": [ok(ANSWER)]}
    )
    result = generate_synthetic(
        private, gen, CHAT, SynthSettings(attempts=1, novelty=novelty), random.Random(0)
    )
    assert len(result.examples) == kept
    assert result.rejected[f.NOT_NOVEL] == 1 - kept
    assert gen.calls[0][0][0].endswith("Task 2: What is (are)")


def test_same_seed_same_result_and_no_private_no_work() -> None:
    a = generate_synthetic(PRIVATE, scripted("chat"), CHAT, SynthSettings(attempts=10),
                           random.Random(5))  # fmt: skip
    b = generate_synthetic(PRIVATE, scripted("chat"), CHAT, SynthSettings(attempts=10),
                           random.Random(5))  # fmt: skip
    assert a == b
    gen = scripted("chat")
    empty = generate_synthetic([], gen, CHAT, SynthSettings(), random.Random(0))
    assert (empty.examples, empty.attempts, gen.calls) == ([], 0, [])


@pytest.mark.parametrize("seed", range(5))
def test_every_attempt_is_accounted_for(seed: int) -> None:
    rng = random.Random(seed)
    pool = [
        " What is (are) Lyme disease ?",
        "",
        " Sorry no",
        " Is Gout inherited ?",
        " How to prevent Gout ?",
        " Explain why hand washing matters in hospitals.",
    ]
    answers = [ANSWER, "short", NURSE, "loop loop loop " * 9]

    def generate(prompts: Sequence[str], spec: GenerationSpec) -> list[Generation]:
        texts = answers if spec.stop != ("\n",) else pool
        return [Generation(rng.choice(texts), rng.random() > 0.2) for _ in prompts]

    settings = SynthSettings(attempts=20, format_retries=2)
    result = generate_synthetic(PRIVATE, generate, CHAT, settings, random.Random(seed))
    assert result.attempts == len(result.examples) + sum(result.rejected.values())
    assert result.generate_calls["response"] <= 2
    assert len({e.instruction for e in result.examples}) == len(result.examples)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"novelty": "bleu"}, r"synth.novelty = 'bleu'.*rouge, focus"),
        ({"attempts": 0}, r"synth.attempts = 0"),
        ({"format_retries": 0}, r"synth.format-retries = 0"),
        ({"copy_threshold": 1.5}, r"synth.copy-threshold = 1.5"),
    ],
)
def test_invalid_settings_fail_fast(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SynthSettings(**kwargs)  # type: ignore[arg-type]
