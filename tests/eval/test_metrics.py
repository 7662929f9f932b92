"""Answer metrics against hand-computed values."""

import numpy as np
import pytest

from fedpit.eval.metrics import (
    exact_match,
    longest_common_substring_tokens,
    normalize_answer,
    rouge_l,
    semantic_similarity,
    token_f1,
)


def test_normalize_answer_drops_case_punctuation_and_articles():
    assert normalize_answer("The  Cat, sat on a MAT!") == "cat sat on mat"
    assert normalize_answer("An apple") == "apple"
    assert normalize_answer("another theme") == "another theme"  # articles only as words


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        ("the cat sat", "a cat sat down", 0.8),  # P = 2/2, R = 2/3
        ("fever fever fever", "fever chills", 0.4),  # multiset: 1 shared, P = 1/3, R = 1/2
        ("Fever.", "fever", 1.0),
        ("chills", "fever", 0.0),
        ("", "", 1.0),  # SQuAD v2: both empty agree
        ("", "fever", 0.0),
        ("fever", "", 0.0),
        ("the", "a", 1.0),  # both empty after normalisation
        ("a b c d", "d c b a", 1.0),  # order does not matter
    ],
)
def test_token_f1_hand_computed(pred, ref, expected):
    assert token_f1(pred, ref) == pytest.approx(expected)


def test_exact_match_after_whitespace_normalisation_only():
    assert exact_match("Take  two\ttablets.\n", "Take two tablets.")
    assert not exact_match("take two tablets.", "Take two tablets.")
    assert not exact_match("Take two tablets", "Take two tablets.")
    assert exact_match("", "  ")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 2, 3, 4, 5], [9, 2, 3, 4, 8], 3),
        (["the", "cat", "sat", "on", "it"], ["a", "cat", "sat", "on", "the", "mat"], 3),
        (["a", "a", "a"], ["a", "a"], 2),
        ([1, 2], [3, 4], 0),
        ([], [1], 0),
        ([1, 2, 1, 2, 3], [1, 2, 3], 3),  # the later, longer occurrence wins
    ],
)
def test_longest_common_substring_tokens(a, b, expected):
    assert longest_common_substring_tokens(a, b) == expected
    assert longest_common_substring_tokens(b, a) == expected


def test_rouge_l_is_the_reference_implementation():
    # LCS("a b c d", "a c d") = 3: P = 3/4, R = 3/3, F = 2·0.75/1.75.
    assert rouge_l("a b c d", "a c d") == pytest.approx(6 / 7)
    assert rouge_l("", "a") == 0.0


def _fake_embed(calls):
    table = {"x": [1.0, 0.0], "y": [0.0, 1.0], "z": [3.0, 4.0], "zero": [0.0, 0.0]}

    def embed(texts):
        calls.append(list(texts))
        return np.array([table[t] for t in texts])

    return embed


def test_semantic_similarity_is_pairwise_cosine():
    calls = []
    sims = semantic_similarity(["x", "x", "z", "zero"], ["x", "y", "x", "x"], _fake_embed(calls))
    assert sims == pytest.approx([1.0, 0.0, 0.6, 0.0])  # z is re-normalised: 3/5
    assert calls == [["x", "x", "z", "zero", "x", "y", "x", "x"]]  # one embedding call


def test_semantic_similarity_edge_cases():
    calls = []
    assert semantic_similarity([], [], _fake_embed(calls)) == []
    assert calls == []
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        semantic_similarity(["x", "y"], ["x"], _fake_embed(calls))


def test_semantic_similarity_with_minilm():
    sims = semantic_similarity(
        ["Asthma is a chronic disease of the airways.", "Asthma is a lung disease."],
        ["Asthma is a chronic disease of the airways.", "The stock market fell on Monday."],
    )
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] < 0.3
