"""The token budget: which training examples are longer than ``model.max-length``.

Decision: over-long examples are truncated with a warning, not refused. Training cuts
the end of the response (and, when the prompt alone would leave less than a quarter of
the budget, the start of the prompt; see :func:`fedpit.lm.batching.encode_pair`). MedQuAD
answers often run past the default budget of 256 tokens, so refusing them would drop a
large share of every client's few examples; cutting them silently would hide that the
model never sees their endings. The run therefore says how many were cut, before it
starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedpit.data.example import Example

SHOWN = 3
"""How many of the longest examples a warning names."""


@dataclass(frozen=True)
class OverBudget:
    """Training examples longer than the token budget.

    Attributes:
        total: How many examples were checked.
        max_length: The budget (``model.max-length``).
        longest: ``(example id, tokens)`` of each over-long example, longest first.
    """

    total: int
    max_length: int
    longest: list[tuple[str, int]]

    def warning(self) -> str | None:
        """One line for people, or None when every example fits."""
        if not self.longest:
            return None
        shown = ", ".join(f"{id_} ({tokens} tokens)" for id_, tokens in self.longest[:SHOWN])
        more = ", …" if len(self.longest) > SHOWN else ""
        return (
            f"{len(self.longest)} of {self.total} training examples are longer than "
            f"model.max-length = {self.max_length} tokens (prompt + response): {shown}{more}; "
            "they are truncated to fit (the end of the response is cut). Raise "
            "model.max-length to train on them whole."
        )


def over_budget(
    examples: Sequence[Example], count_tokens: Callable[[Example], int], max_length: int
) -> OverBudget:
    """Find the examples whose prompt and response exceed ``max_length`` tokens.

    Args:
        examples: The training examples.
        count_tokens: Tokens of an example's prompt plus response, as training encodes it.
        max_length: The token budget.

    Returns:
        The over-long examples, longest first (ties in input order).
    """
    lengths = [(example.id, count_tokens(example)) for example in examples]
    longest = sorted((pair for pair in lengths if pair[1] > max_length), key=lambda p: -p[1])
    return OverBudget(total=len(examples), max_length=max_length, longest=longest)
