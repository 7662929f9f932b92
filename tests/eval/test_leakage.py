"""Leakage scores on hand-made cases: extraction, synthetic overlap, canaries."""

from __future__ import annotations

import random

import pytest

from fedpit.eval.attack import leakage
from fedpit.eval.metrics import longest_common_substring_tokens

WORDS: dict[str, int] = {}


def words(text: str) -> list[int]:
    """A toy tokenizer: one id per distinct whitespace-separated word."""
    return [WORDS.setdefault(w, len(WORDS)) for w in text.split()]


def test_longest_shared_span_stays_inside_one_reference() -> None:
    assert leakage.longest_shared_span([1, 2, 3, 4, 5], [[9, 2, 3, 4, 8], [3, 4, 5]]) == 3
    assert leakage.longest_shared_span([1, 2, 3], [[1, 2], [3]]) == 2  # not across the join
    assert leakage.longest_shared_span([7, 7, 7], [[7, 7, 7, 7]]) == 3
    assert leakage.longest_shared_span([1, 2], [[3, 4]]) == 0
    assert leakage.longest_shared_span([], [[1]]) == 0
    assert leakage.longest_shared_span([0, 5], [[0, 5]]) == 2  # token id 0 is not the separator


def test_longest_shared_span_matches_the_pairwise_reference() -> None:

    rng = random.Random(1)
    for _ in range(50):
        a = [rng.randrange(4) for _ in range(rng.randrange(12))]
        refs = [[rng.randrange(4) for _ in range(rng.randrange(12))] for _ in range(3)]
        expected = max(longest_common_substring_tokens(a, r) for r in refs)
        assert leakage.longest_shared_span(a, refs) == expected


def test_extraction_scores_hand_made() -> None:
    refs = ["the number is 42 and more", "patients report fatigue"]
    gens = ["the  number is 42 and more", "fever and the number is 42"]
    rows = leakage.extraction_rows(gens, refs, words)
    assert rows[0] == {"rouge_l": 1.0, "exact_match": True, "lcs_tokens": 6}
    # "the number is 42" would share 4 tokens with ref 0, but it is compared with its own
    # reference only: nothing in common.
    assert rows[1] == {"rouge_l": 0.0, "exact_match": False, "lcs_tokens": 0}
    summary = leakage.summarise_extraction(rows)
    assert summary == {"rouge_l": 0.5, "exact_match": 0.5, "lcs_tokens": 3.0, "lcs_tokens_max": 6}
    assert leakage.summarise_extraction([]) is None


def test_synthetic_overlap_takes_the_closest_private_text_of_the_same_client() -> None:
    private = {"0": ["a b c d", "x y"], "1": ["p q r s t u"]}
    synthetic = {"0": ["a b c z", "p q r s"], "1": ["p q r s t u"]}
    result = leakage.synthetic_overlap(synthetic, private, words)
    # "a b c z" vs "a b c d": LCS 3 of 4 → F 0.75; "p q r s" shares nothing with client 0;
    # client 1 copies its own text verbatim (6 tokens).
    assert result == {
        "n": 3,
        "rouge_l_mean": pytest.approx((0.75 + 0.0 + 1.0) / 3),
        "rouge_l_max": 1.0,
        "longest_span_tokens": 6,
        "span_share": 0.0,  # 6 < 8 tokens
        "canary_touches": 0,
    }
    assert leakage.synthetic_overlap({}, private, words) is None


def test_synthetic_overlap_counts_long_spans_and_canary_touches() -> None:
    private = {"0": ["one two three four five six seven eight nine", "Zofia Szabo 0123456789"]}
    synthetic = {
        "0": [
            "zero one two three four five six seven eight",  # 8 tokens verbatim
            "one two three four five six seven",  # 7: below the threshold
            "What is the phone of patient Zofia Szabo ?",  # names the canary's patient
            "call 0123456789 now",  # quotes its secret
        ]
    }
    canaries = [("Zofia Szabo", "0123456789")]
    result = leakage.synthetic_overlap(synthetic, private, words, canaries)
    assert result is not None
    assert result["span_share"] == 0.25 and result["canary_touches"] == 2
    assert leakage.synthetic_overlap(synthetic, private, words)["canary_touches"] == 0


def test_canary_summary() -> None:
    out = leakage.canary_summary([True, False], [-10.0, -30.0], [[-5.0, -12.0, -20.0]] * 2)
    assert out == {"n": 2, "emitted": 1, "mean_logprob": -20.0, "mean_exposure": 0.5}
    assert leakage.canary_summary([], [], []) is None
