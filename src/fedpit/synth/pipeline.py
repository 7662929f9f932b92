"""SynGen for one client and round: instructions, responses, filters — batched.

Reads top to bottom: (1) one batched ``generate`` call for every attempt's instruction,
then the instruction filters in order, novelty against the local instructions and those
accepted so far; (2) one batched call per retry round for the responses, re-sampling
the demonstrations of the failed ones; (3) the copy filter, then the verbatim-span guard
(:mod:`fedpit.synth.spans`). Every attempt ends kept or counted under exactly one of
:data:`~fedpit.synth.filters.REJECTION_REASONS`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedpit.data.example import Example
from fedpit.errors import ConfigError
from fedpit.generation import GenerateFn, Generation, GenerationSpec
from fedpit.prompts import PromptFormat
from fedpit.synth.filters import (
    FORMAT,
    NOVELTY_CHECKS,
    REFUSAL,
    REJECTION_REASONS,
    RESPONSE_REASONS,
    TRUNCATED,
    copy_reason,
    instruction_reason,
    looks_like_refusal,
    make_novelty,
    response_reason,
)
from fedpit.synth.instructions import (
    instruction_spec,
    parse_instruction,
    sample_instruction_prompt,
)
from fedpit.synth.responses import response_prompt, response_spec, trim_to_sentence
from fedpit.synth.spans import SpanGuard

SYNTHETIC_META = {"synthetic": "true"}
SELECTIONS = ("ifs", "random")
ON_EMPTY = ("damped", "skip")


@dataclass(frozen=True)
class SynthSettings:
    """SynGen settings (run-config section ``synth``); defaults from FACTS.md.

    Attributes:
        attempts: Instruction prompts per round (candidates before filtering).
        keep: M, the candidates kept after IFS selection (the lowest scores).
        novelty: Instruction novelty check, ``focus`` (entity + question type) or
            ``rouge`` (the paper's ROUGE-L rule).
        novelty_threshold: ROUGE-L above which an instruction is not novel.
        copy_threshold: ROUGE-L to a local example above which a candidate is dropped.
        max_copied_span: A candidate sharing this many consecutive words with a private
            example is dropped (the verbatim-span guard; 0 = off).
        format_retries: Response generations per instruction before dropping it.
        instruction_demos: Local questions shown in the instruction prompt.
        response_demos: Local examples shown in the response prompt.
        demo_answer_words: Demonstration answers are cut to about this many words.
        max_instruction_tokens: New-token limit of the instruction phase.
        max_response_tokens: New-token limit of the response phase.
        repetition_penalty: Response phase only (answers loop without it).
        min_instruction_words: Fewest words in an instruction.
        min_response_words: Fewest words in a response.
        min_distinct_trigram_ratio: Responses below it count as degenerate.
        trim_unfinished: Salvage a response cut by ``max_response_tokens`` by trimming it
            to its last full sentence (False: count it as a format failure and retry).
        do_sample: Sample instead of greedy decoding (both phases).
        temperature: Sampling temperature (with ``do_sample`` only).
        top_p: Nucleus sampling threshold (with ``do_sample`` only; 1.0 = off).
        selection: How the M kept candidates are chosen: ``ifs`` (the paper's lowest
            IFS under the fresh local model) or ``random`` (a control of IFS).
        ifs_same_tokens: Score L(y) on exactly the response tokens that L(y|x) scores
            (a response cut by ``model.max-length`` after its prompt is cut alike for
            L(y)); False scores L(y) on the whole response, which biases the ranking
            against long candidates.
        on_empty: What a FedPIT client uploads in a round where SynGen kept no
            candidate (W_s stays W_g): ``damped`` (β·W_l + (1−β)·W_g, as the mix then
            is) or ``skip`` (no upload: the client reports the round as failed).
        distill_top_k: 0 trains W_s on the sampled tokens; k > 0 trains it on the
            teacher's top-k token distributions over each kept response
            (soft-label context distillation; the teacher is the global model with the
            demonstrations the response was generated with in context).
    """

    attempts: int = 12
    keep: int = 8
    novelty: str = "focus"
    novelty_threshold: float = 0.7
    copy_threshold: float = 0.7
    max_copied_span: int = 8
    format_retries: int = 3
    instruction_demos: int = 8
    response_demos: int = 2
    demo_answer_words: int = 80
    max_instruction_tokens: int = 32
    max_response_tokens: int = 160
    repetition_penalty: float = 1.2
    min_instruction_words: int = 3
    min_response_words: int = 10
    min_distinct_trigram_ratio: float = 0.5
    trim_unfinished: bool = True
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 1.0
    selection: str = "ifs"
    ifs_same_tokens: bool = True
    distill_top_k: int = 0
    on_empty: str = "damped"

    def __post_init__(self) -> None:
        checks = [
            ("attempts", self.attempts >= 1, "an integer ≥ 1"),
            ("novelty", self.novelty in NOVELTY_CHECKS, ", ".join(NOVELTY_CHECKS)),
            ("novelty-threshold", 0 <= self.novelty_threshold <= 1, "[0, 1]"),
            ("copy-threshold", 0 <= self.copy_threshold <= 1, "[0, 1]"),
            ("max-copied-span", self.max_copied_span >= 0, "an integer ≥ 0 (0 = off)"),
            ("format-retries", self.format_retries >= 1, "an integer ≥ 1"),
            ("instruction-demos", self.instruction_demos >= 1, "an integer ≥ 1"),
            ("response-demos", self.response_demos >= 0, "an integer ≥ 0"),
            ("demo-answer-words", self.demo_answer_words >= 1, "an integer ≥ 1"),
            (
                "max-instruction-tokens",
                self.max_instruction_tokens >= 1,
                "an integer ≥ 1",
            ),
            ("max-response-tokens", self.max_response_tokens >= 1, "an integer ≥ 1"),
            ("repetition-penalty", self.repetition_penalty > 0, "> 0"),
            (
                "min-distinct-trigram-ratio",
                0 <= self.min_distinct_trigram_ratio <= 1,
                "[0, 1]",
            ),
            ("temperature", self.temperature > 0, "> 0"),
            ("top-p", 0 < self.top_p <= 1, "(0, 1]"),
            ("selection", self.selection in SELECTIONS, ", ".join(SELECTIONS)),
            ("distill-top-k", self.distill_top_k >= 0, "an integer ≥ 0 (0 = hard labels)"),
            ("on-empty", self.on_empty in ON_EMPTY, ", ".join(ON_EMPTY)),
        ]
        for key, ok, allowed in checks:
            if not ok:
                value = getattr(self, key.replace("-", "_"))
                raise ConfigError(f"synth.{key} = {value!r} is invalid; allowed: {allowed}")


@dataclass
class SynthResult:
    """What one round of SynGen produced (stays on the client except the counters).

    Attributes:
        examples: Kept candidates (input "", ``meta`` marks them synthetic), in attempt
            order; ids are ``syn-<attempt index>``.
        attempts: Instruction attempts made.
        rejected: Attempts dropped, by reason (every reason present, zeros included).
        response_failures: Failed response generations by finer reason, retries
            included (a diagnostic: one instruction may fail several times).
        generate_calls: Batched ``generate`` calls per phase.
        prompts: The response prompt each kept candidate was generated from, by id
            (its demonstrations are private: the teacher of context distillation).
    """

    examples: list[Example]
    attempts: int
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECTION_REASONS, 0))
    response_failures: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(RESPONSE_REASONS, 0)
    )
    generate_calls: dict[str, int] = field(
        default_factory=lambda: {"instruction": 0, "response": 0}
    )
    prompts: dict[str, str] = field(default_factory=dict)


def _generate(
    generate: GenerateFn,
    prompts: Sequence[str],
    spec: GenerationSpec,
    phase: str,
    result: SynthResult,
) -> list[Generation]:
    outputs = generate(prompts, spec)
    result.generate_calls[phase] += 1
    if len(outputs) != len(prompts):
        raise ValueError(f"generate returned {len(outputs)} outputs for {len(prompts)} prompts")
    return outputs


def _instructions(
    private: Sequence[Example],
    generate: GenerateFn,
    settings: SynthSettings,
    rng: random.Random,
    result: SynthResult,
) -> dict[int, str]:
    """Phase 1: attempt index → accepted instruction."""
    sampled = [
        sample_instruction_prompt(private, rng, settings.instruction_demos)
        for _ in range(settings.attempts)
    ]
    spec = instruction_spec(
        settings.max_instruction_tokens, settings.do_sample, settings.temperature, settings.top_p
    )
    outputs = _generate(generate, [p for p, _ in sampled], spec, "instruction", result)
    novelty = make_novelty(
        settings.novelty, [e.instruction for e in private], settings.novelty_threshold
    )
    accepted: dict[int, str] = {}
    for i, ((_, stem), out) in enumerate(zip(sampled, outputs, strict=True)):
        instruction = parse_instruction(stem, out.text)
        reason = instruction_reason(instruction, settings.min_instruction_words)
        if not instruction and looks_like_refusal(out.text):
            reason = REFUSAL  # the parser drops refusals; count them as such
        if reason is None and not out.finished:
            reason = TRUNCATED
        if reason is None:
            reason = novelty.reason(instruction)
        if reason is None:
            novelty.accept(instruction)
            accepted[i] = instruction
        else:
            result.rejected[reason] += 1
    return accepted


def _responses(
    instructions: dict[int, str],
    private: Sequence[Example],
    generate: GenerateFn,
    fmt: PromptFormat,
    settings: SynthSettings,
    rng: random.Random,
    result: SynthResult,
) -> dict[int, tuple[str, str]]:
    """Phase 2: attempt index → (valid response, its prompt); retries re-sample demos."""
    spec = response_spec(
        fmt,
        settings.max_response_tokens,
        settings.repetition_penalty,
        settings.do_sample,
        settings.temperature,
        settings.top_p,
    )
    num_demos = min(settings.response_demos, len(private))
    answers: dict[int, tuple[str, str]] = {}
    pending = sorted(instructions)
    for _ in range(settings.format_retries):
        if not pending:
            break
        prompts = [
            response_prompt(
                instructions[i],
                rng.sample(list(private), num_demos),
                fmt,
                settings.demo_answer_words,
            )
            for i in pending
        ]
        outputs = _generate(generate, prompts, spec, "response", result)
        failed = []
        for i, prompt, out in zip(pending, prompts, outputs, strict=True):
            if settings.trim_unfinished and not out.finished:
                trimmed = trim_to_sentence(out.text)
                if trimmed:
                    out = Generation(trimmed, finished=True)
            reason = response_reason(
                out,
                fmt.kind,
                settings.min_response_words,
                settings.min_distinct_trigram_ratio,
            )
            if reason is None:
                answers[i] = (out.text.strip(), prompt)
            else:
                result.response_failures[reason] += 1
                failed.append(i)
        pending = failed
    result.rejected[FORMAT] += len(pending)
    return answers


def generate_synthetic(
    private: Sequence[Example],
    generate: GenerateFn,
    fmt: PromptFormat,
    settings: SynthSettings,
    rng: random.Random,
) -> SynthResult:
    """Self-generate synthetic examples from a client's private examples.

    Args:
        private: The client's private examples (demonstrations; never copied out).
        generate: Text generation with the current global model.
        fmt: The prompt format (its kind decides the response-phase layout).
        settings: SynGen settings.
        rng: The only source of randomness (demonstration sampling and order).

    Returns:
        The kept candidates and the counts of every rejection.
    """
    if not private:
        return SynthResult(examples=[], attempts=0)
    result = SynthResult(examples=[], attempts=settings.attempts)
    instructions = _instructions(private, generate, settings, rng, result)
    answers = _responses(instructions, private, generate, fmt, settings, rng, result)
    guard = SpanGuard(private, settings.max_copied_span)
    for i in sorted(answers):
        candidate = Example(
            id=f"syn-{i}",
            instruction=instructions[i],
            input="",
            output=answers[i][0],
            meta=dict(SYNTHETIC_META),
        )
        reason = copy_reason(candidate, private, settings.copy_threshold)
        if reason is None:
            reason = guard.reason(candidate)
        if reason is None:
            result.examples.append(candidate)
            result.prompts[candidate.id] = answers[i][1]
        else:
            result.rejected[reason] += 1
    return result
