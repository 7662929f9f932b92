"""Build the federated split: a held-out test set, then one training set per client.

The test set is drawn first and every training example asking the same question is
removed, because MedQuAD repeats questions across its sources and an overlap would let
a model score by recall rather than by answering.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedpit.data.example import Example
from fedpit.data.partition import Embed, partition
from fedpit.errors import ConfigError, DataError

_TRAILING = " \t\r\n.?!,;:"


@dataclass(frozen=True)
class FederatedSplit:
    """Per-client training examples and the shared held-out test set.

    Attributes:
        clients: Training examples of each client.
        client_names: A name per client: its natural group (e.g. ``"GHR"``) or
            ``"client-<i>"``.
        test: Held-out examples; none asks a question any client trains on.
        client_tests: Each client's private held-out examples for federated evaluation:
            drawn from the rest of its own partition, never a question it trains on.

    """

    clients: list[list[Example]]
    client_names: list[str]
    test: list[Example]
    client_tests: list[list[Example]] = field(default_factory=list)


def normalize_question(text: str) -> str:
    """Normalise a question for duplicate detection.

    Lowercases, folds runs of whitespace to one space and strips trailing punctuation
    and spaces, so ``"What is (are) X ?"`` equals ``"what is (are)  x"``.
    """
    return re.sub(r"\s+", " ", text.lower()).strip().rstrip(_TRAILING)


def make_split(
    examples: Sequence[Example],
    *,
    method: str,
    num_clients: int,
    examples_per_client: int,
    test_size: int,
    seed: int,
    column: str = "",
    alpha: float = 1.0,
    num_clusters: int = 100,
    embed: Embed | None = None,
    client_test_size: int = 0,
) -> FederatedSplit:
    """Draw a test set, drop training questions it asks, partition, then subsample.

    Args:
        examples: All examples of the data set.
        method: Partition method (see :func:`fedpit.data.partition.partition`).
        num_clients: Number of clients.
        examples_per_client: Training examples each client keeps (all it has if fewer).
        test_size: Number of held-out test examples.
        seed: Seed of every random choice; the same seed gives the same split.
        column: Meta field for ``"natural"`` and ``"dirichlet"`` partitioning.
        alpha: Dirichlet concentration.
        num_clusters: k-means clusters for ``"kmeans"``.
        embed: Text embedder for ``"kmeans"``.
        client_test_size: Private held-out examples per client (federated evaluation).

    Returns:
        The split.

    Raises:
        ConfigError: If a size is out of range.
        DataError: If the data cannot be split so, or a client would get no examples.

    """
    if not 0 <= test_size < len(examples):
        raise ConfigError(
            f"data.test-size = {test_size} is invalid; allowed: 0 to {len(examples) - 1} "
            f"(the data has {len(examples)} examples)"
        )
    if examples_per_client < 1:
        raise ConfigError(
            f"data.examples-per-client = {examples_per_client} is invalid; allowed: ≥ 1"
        )
    rng = np.random.default_rng(seed)
    test_rows = set(rng.choice(len(examples), size=test_size, replace=False).tolist())
    test = [examples[i] for i in sorted(test_rows)]
    asked = {normalize_question(e.instruction) for e in test}
    pool = [
        e
        for i, e in enumerate(examples)
        if i not in test_rows and normalize_question(e.instruction) not in asked
    ]
    if len(pool) < num_clients:
        raise DataError(
            f"data.num-clients = {num_clients} but only {len(pool)} training examples remain "
            f"after drawing {test_size} held-out test examples (and dropping the training "
            f"examples that ask their questions); allowed: data.num-clients ≤ {len(pool)}, "
            "a smaller data.test-size, or more data"
        )
    parts = partition(
        pool,
        method,
        num_clients,
        seed,
        column=column,
        alpha=alpha,
        num_clusters=num_clusters,
        embed=embed,
    )
    names = [
        part[0].meta[column] if method == "natural" else f"client-{i}"
        for i, part in enumerate(parts)
    ]
    clients, rests = [], []
    for name, part in zip(names, parts, strict=True):
        if not part:
            raise DataError(
                f"client {name!r} got no training examples ({method} split of "
                f"{len(pool)} examples over {num_clients} clients); use fewer clients "
                "(data.num-clients)"
            )
        keep = rng.choice(len(part), size=min(examples_per_client, len(part)), replace=False)
        clients.append([part[i] for i in sorted(keep.tolist())])
        rests.append([part[i] for i in range(len(part)) if i not in set(keep.tolist())])
    # A separate stream, so asking for client test sets never changes the training split.
    eval_rng = np.random.default_rng([seed, 1])
    client_tests = []
    for train, rest in zip(clients, rests, strict=True):
        trained = {normalize_question(e.instruction) for e in train}
        candidates = [e for e in rest if normalize_question(e.instruction) not in trained]
        size = min(client_test_size, len(candidates))
        pick: np.ndarray | list[int] = (
            eval_rng.choice(len(candidates), size=size, replace=False) if size else []
        )
        client_tests.append([candidates[i] for i in sorted(int(i) for i in pick)])
    return FederatedSplit(clients=clients, client_names=names, test=test, client_tests=client_tests)
