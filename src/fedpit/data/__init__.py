"""Data: load examples, resolve named data sets, partition them across clients."""

from fedpit.data.example import Example
from fedpit.data.load import FieldMap, load_examples, load_hub_dataset
from fedpit.data.medmcqa import find_medmcqa, load_medmcqa
from fedpit.data.partition import (
    METHODS,
    Embed,
    embed_minilm,
    partition,
    partition_dirichlet,
    partition_iid,
    partition_kmeans,
    partition_natural,
)
from fedpit.data.sources import DataSource, resolve_data
from fedpit.data.split import FederatedSplit, make_split, normalize_question

__all__ = [
    "METHODS",
    "DataSource",
    "Embed",
    "Example",
    "FederatedSplit",
    "FieldMap",
    "embed_minilm",
    "find_medmcqa",
    "load_examples",
    "load_hub_dataset",
    "load_medmcqa",
    "make_split",
    "normalize_question",
    "partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_kmeans",
    "partition_natural",
    "resolve_data",
]
