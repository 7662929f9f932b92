"""The one example type every loader produces and every component consumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """An Alpaca-style instruction example.

    Attributes:
        id: Stable identifier (unique within a data set).
        instruction: The task or question.
        input: Optional context for the instruction ("" when absent).
        output: The reference response.
        meta: Extra string fields kept from the source (e.g. MedQuAD's ``source``,
            ``focus``, ``qtype``), used for partitioning and filtering.
    """

    id: str
    instruction: str
    input: str
    output: str
    meta: Mapping[str, str] = field(default_factory=dict)
