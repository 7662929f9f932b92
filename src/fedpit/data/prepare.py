"""The run's data: resolve the source, split it into clients and a test set (cached).

Every process (server, each simulation worker) computes the same split from the same
configuration and seed, so a simulated client only ever loads its own partition.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from fedpit.config.schema import AttackConfig, DataConfig, RunConfig
from fedpit.data.example import Example
from fedpit.data.sources import resolve_data
from fedpit.data.split import FederatedSplit, make_split


@dataclass(frozen=True)
class RunData:
    """The split of one run plus where it came from."""

    split: FederatedSplit
    description: str
    source: str
    partition: str = "natural"
    """The partition used: ``data.partition``, or ``iid`` where ``natural`` found no
    partition column in the data (announced on the DATA line)."""


NO_ATTACK = AttackConfig()


@functools.lru_cache(maxsize=2)
def load_run_data(
    data: DataConfig, client_test_size: int = 0, attack: AttackConfig = NO_ATTACK
) -> RunData:
    """Resolve and split the configured data (deterministic in ``data.seed``).

    The split has its own seed so that a sweep over run seeds (initialisation,
    demonstrations, shuffling) keeps one data split.

    With ``attack.canaries > 0``, unique secret records are planted in the private
    training data of client ``attack.canary-client`` (to audit memorisation).
    """
    source = resolve_data(data.name)
    examples = source.load()
    column = data.partition_column or source.partition_column
    method = data.partition
    description = source.description
    if (
        method == "natural"
        and not data.partition_column
        and any(column not in e.meta for e in examples)
    ):
        # A user's own file without the default grouping column: split it iid, and say so.
        method = "iid"
        description += f" (no {column!r} column for the natural partition: split iid)"
    embed = None
    if method == "kmeans":
        from fedpit.data.partition import embed_minilm

        embed = embed_minilm
    split = make_split(
        examples,
        method=method,
        num_clients=data.num_clients,
        examples_per_client=data.examples_per_client,
        test_size=data.test_size,
        seed=data.seed,
        column=column,
        alpha=data.dirichlet_alpha,
        num_clusters=data.num_clusters,
        embed=embed,
        client_test_size=client_test_size,
        non_members_per_client=data.non_members_per_client,
    )
    if attack.canaries:
        from fedpit.data.canary import make_canaries, plant

        clients = list(split.clients)
        target = attack.canary_client
        clients[target] = plant(clients[target], make_canaries(attack.canaries, data.seed))
        split = dataclasses.replace(split, clients=clients)
    return RunData(split, description, source.name, method)


def run_data_for(cfg: RunConfig) -> RunData:
    """The data of a run, as its configuration defines it."""
    return load_run_data(cfg.data, cfg.eval.client_test_size, cfg.attack)


def client_examples(cfg: RunConfig, partition_id: int) -> list[Example]:
    """The private training examples of simulated client ``partition_id``."""
    return list(run_data_for(cfg).split.clients[partition_id])


def client_test_examples(cfg: RunConfig, partition_id: int) -> list[Example]:
    """The private held-out examples of simulated client ``partition_id``."""
    tests = run_data_for(cfg).split.client_tests
    return list(tests[partition_id]) if tests else []


def provenance(run_data: RunData) -> dict[str, object]:
    """What the run directory records about its data (ids, never texts)."""
    split = run_data.split
    return {
        "source": run_data.source,
        "description": run_data.description,
        "clients": [
            {"id": i, "name": name, "examples": len(ex)}
            for i, (name, ex) in enumerate(zip(split.client_names, split.clients, strict=True))
        ],
        "test_ids": [ex.id for ex in split.test],
        "non_member_ids": [[ex.id for ex in part] for part in split.non_members],
        "removed_from_training": split.removed,
    }
