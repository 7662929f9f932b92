"""Build the federated split: a held-out test set, one training set per client, non-members.

The test set is drawn first and every training candidate asking the same question *or
giving the same answer* is removed: MedQuAD repeats questions across its sources and
reuses answers across questions (one boilerplate answer stands under hundreds of them),
and an overlap would let a model score by recall rather than by answering. The
membership-inference non-members are drawn from each client's own partition (the
members' distribution), held out from every client, and share no question or answer
with any client's training data.
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
            drawn from the rest of its own partition, sharing no question or answer with
            any client's training data.
        non_members: Each client's membership-inference non-members: drawn from the
            rest of its own partition (the members' distribution), sharing no question or
            answer with any client's training data.
        removed: Training candidates dropped because they repeat a test question
            (``same_question``) or, asking another question, a test answer
            (``same_answer``).

    """

    clients: list[list[Example]]
    client_names: list[str]
    test: list[Example]
    client_tests: list[list[Example]] = field(default_factory=list)
    non_members: list[list[Example]] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)


def normalize_question(text: str) -> str:
    """Normalise a question for duplicate detection.

    Lowercases, folds runs of whitespace to one space and strips trailing punctuation
    and spaces, so ``"What is (are) X ?"`` equals ``"what is (are)  x"``.
    """
    return re.sub(r"\s+", " ", text.lower()).strip().rstrip(_TRAILING)


normalize_answer = normalize_question
"""Answers are compared the same way: case, runs of whitespace and trailing punctuation
do not make two answers different."""


class _Seen:
    """Normalised questions and answers of a set of examples, to test others against."""

    def __init__(self, examples: Sequence[Example] = ()) -> None:
        self.questions: set[str] = set()
        self.answers: set[str] = set()
        self.add(examples)

    def add(self, examples: Sequence[Example]) -> None:
        for e in examples:
            self.questions.add(normalize_question(e.instruction))
            self.answers.add(normalize_answer(e.output))

    def repeats_question(self, e: Example) -> bool:
        return normalize_question(e.instruction) in self.questions

    def repeats_answer(self, e: Example) -> bool:
        return normalize_answer(e.output) in self.answers

    def repeats(self, e: Example) -> bool:
        return self.repeats_question(e) or self.repeats_answer(e)


def _draw(rng: np.random.Generator, items: Sequence[Example], size: int) -> list[Example]:
    size = min(size, len(items))
    if not size:
        return []
    pick = rng.choice(len(items), size=size, replace=False)
    return [items[int(i)] for i in sorted(pick.tolist())]


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
    non_members_per_client: int = 0,
) -> FederatedSplit:
    """Draw a test set, drop training candidates repeating it, partition, subsample.

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
        non_members_per_client: Membership-inference non-members drawn from each
            client's own partition (0: as many as the client has training examples).

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
    tested = _Seen(test)
    rest = [e for i, e in enumerate(examples) if i not in test_rows]
    same_question = [e for e in rest if tested.repeats_question(e)]
    same_answer = [e for e in rest if not tested.repeats_question(e) and tested.repeats_answer(e)]
    pool = [e for e in rest if not tested.repeats(e)]
    removed = {"same_question": len(same_question), "same_answer": len(same_answer)}
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
    # Held out from every client: no question or answer any client trains on.
    trained = _Seen([e for train in clients for e in train])
    unseen = [[e for e in rest if not trained.repeats(e)] for rest in rests]
    # Separate streams, so asking for evaluation sets never changes the training split.
    eval_rng = np.random.default_rng([seed, 1])
    client_tests = [_draw(eval_rng, candidates, client_test_size) for candidates in unseen]
    member_rng = np.random.default_rng([seed, 2])
    non_members = [
        _draw(member_rng, candidates, non_members_per_client or len(train))
        for train, candidates in zip(clients, unseen, strict=True)
    ]
    return FederatedSplit(
        clients=clients,
        client_names=names,
        test=test,
        client_tests=client_tests,
        non_members=non_members,
        removed=removed,
    )
