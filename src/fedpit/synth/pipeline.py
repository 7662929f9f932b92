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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedpit.config.schema import SynthSettings
from fedpit.data.example import Example
from fedpit.lm.generation import GenerateFn, Generation, GenerationSpec
from fedpit.model.prompts import PromptFormat
from fedpit.synth.filters import (
    FORMAT,
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
        calls: Every batched ``generate`` call in order: its ``phase``, number of
            ``prompts`` and wall ``seconds`` (where SynGen's time goes; not compared).
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
    calls: list[dict[str, object]] = field(default_factory=list, compare=False)


def _generate(
    generate: GenerateFn,
    prompts: Sequence[str],
    spec: GenerationSpec,
    phase: str,
    result: SynthResult,
) -> list[Generation]:
    t0 = time.perf_counter()
    outputs = generate(prompts, spec)
    seconds = time.perf_counter() - t0
    result.generate_calls[phase] += 1
    result.calls.append({"phase": phase, "prompts": len(prompts), "seconds": round(seconds, 3)})
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


def _demonstrations(
    private: Sequence[Example], prompts: int, per_prompt: int, shared: int, rng: random.Random
) -> list[list[Example]]:
    """The demonstrations of each of ``prompts`` response prompts, in order.

    Consecutive groups of ``shared`` prompts show the same draw; with ``shared = 1`` every
    prompt draws its own (one ``rng.sample`` per prompt, as without sharing).
    """
    out: list[list[Example]] = []
    for k in range(prompts):
        out.append(rng.sample(list(private), per_prompt) if k % shared == 0 else out[-1])
    return out


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
        demos = _demonstrations(private, len(pending), num_demos, settings.shared_demos, rng)
        prompts = [
            response_prompt(instructions[i], shown, fmt, settings.demo_answer_words)
            for i, shown in zip(pending, demos, strict=True)
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
