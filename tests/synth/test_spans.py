"""The verbatim-span guard: hand-computed cases and its place in the pipeline."""

import random

import pytest

from fedpit.config.load import from_flat
from fedpit.data.example import Example
from fedpit.errors import ConfigError
from fedpit.privacy.allowlist import ALLOWED_COUNTERS, SPAN_BLOCKED, check_counters, upload_metrics
from fedpit.synth import filters as f
from fedpit.synth.pipeline import SynthSettings, generate_synthetic
from fedpit.synth.spans import SpanGuard, first_shared_span, spans, word_tokens
from tests.synth.test_pipeline import CHAT, NURSE, PRIVATE, ScriptedGenerate, ok

PRIVATE_ANSWER = "Take one tablet of ibuprofen twice a day after meals with water."


def candidate(output: str, instruction: str = "What helps with gout pain ?") -> Example:
    return Example("syn-0", instruction, "", output)


def test_word_tokens_ignore_case_whitespace_and_punctuation():
    assert word_tokens("  What IS (are)\tLyme-disease?\n 2 cases ") == [
        "what", "is", "are", "lyme", "disease", "2", "cases",
    ]  # fmt: skip
    assert word_tokens("") == []


def test_spans_and_first_shared_span_on_token_ids():
    assert spans([1, 2, 3, 4], 3) == {(1, 2, 3), (2, 3, 4)}
    assert spans([1, 2], 3) == set() and spans([1, 2], 0) == set()
    known = spans([5, 6, 7, 8, 9], 3)
    assert first_shared_span([1, 6, 7, 8, 2], known, 3) == (6, 7, 8)  # exactly k shared
    assert first_shared_span([1, 6, 7, 2, 8, 9], known, 3) is None  # k − 1 shared
    assert first_shared_span([6, 7, 8], known, 0) is None  # off


def test_exactly_k_copied_words_are_blocked_and_k_minus_one_pass():
    guard = SpanGuard([Example("p", "How do I take it ?", "", PRIVATE_ANSWER)], 8)
    # 8 consecutive words of the private answer, in another case, spacing and punctuation.
    copied = "For gout, TAKE one   tablet of ibuprofen, twice a day; then rest."
    assert guard.reason(candidate(copied)) == f.COPIED_SPAN
    # 7 consecutive words ("take one tablet of ibuprofen twice a") then a different word.
    seven = "For gout, take one tablet of ibuprofen twice a week, then rest."
    assert guard.reason(candidate(seven)) is None
    # The instruction is checked too.
    assert guard.reason(candidate("Rest.", instruction=copied)) == f.COPIED_SPAN
    # 0 switches the guard off.
    assert (
        SpanGuard([Example("p", "q", "", PRIVATE_ANSWER)], 0).reason(candidate(PRIVATE_ANSWER))
        is None
    )


def test_spans_do_not_run_across_fields():
    # The last 4 words of the private instruction + the first 4 of its answer.
    guard = SpanGuard([Example("p", "Which dose of ibuprofen helps", "", PRIVATE_ANSWER)], 8)
    assert guard.reason(candidate("dose of ibuprofen helps take one tablet of")) is None


# Eight words of a private answer (NURSE) inside an otherwise new answer: ROUGE-L to the
# private example is low, so only the span guard catches it.
COPYING = (
    "Lyme disease is diagnosed by doctors using vital signs, the main complaint and a "
    "standard scale, then treated with antibiotics for several weeks."
)
FRESH = "Lyme disease is an infection spread by ticks that causes fever, rash and joint pain."


def lyme_generate():
    return ScriptedGenerate(
        "chat",
        [ok(" What are the symptoms of Lyme disease ?"), ok(" How to diagnose Lyme disease ?")],
        {
            "What are the symptoms of Lyme disease ?": [ok(FRESH)],
            "How to diagnose Lyme disease ?": [ok(COPYING)],
        },
    )


def test_pipeline_drops_and_counts_a_candidate_copying_a_private_span():
    assert f.copy_reason(candidate(COPYING), PRIVATE) is None  # ROUGE-L alone lets it pass
    settings = SynthSettings(attempts=2)
    result = generate_synthetic(PRIVATE, lyme_generate(), CHAT, settings, random.Random(0))
    assert [e.output for e in result.examples] == [FRESH]
    assert result.rejected[f.COPIED_SPAN] == 1
    assert result.attempts == len(result.examples) + sum(result.rejected.values())
    # The count (and only the count) is an allowlisted counter.
    counters = upload_metrics(num_examples=4, synth=result, selected=1, timings={}, upload={})
    assert SPAN_BLOCKED in ALLOWED_COUNTERS and counters[SPAN_BLOCKED] == 1.0
    check_counters(counters)
    assert NURSE not in repr(counters)
    # With the guard off the copying candidate is kept.
    off = SynthSettings(attempts=2, max_copied_span=0)
    result = generate_synthetic(PRIVATE, lyme_generate(), CHAT, off, random.Random(0))
    assert [e.output for e in result.examples] == [FRESH, COPYING]


def test_max_copied_span_is_a_validated_config_key():
    assert from_flat({}).synth.max_copied_span == 8
    assert from_flat({"synth.max-copied-span": "0"}).synth.max_copied_span == 0
    with pytest.raises(ConfigError, match=r"synth.max-copied-span = -1 .*≥ 0"):
        from_flat({"synth.max-copied-span": -1})
    with pytest.raises(ConfigError, match=r"synth.max-copied-span = 2.5: expected int"):
        from_flat({"synth.max-copied-span": 2.5})
