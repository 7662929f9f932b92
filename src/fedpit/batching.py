"""Tokenisation of (prompt, response) pairs with response-only labels, and batching."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenised pair; ``labels`` is ``IGNORE_INDEX`` on prompt positions."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_target_tokens(self) -> int:
        """Tokens that carry loss (the response)."""
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def encode_pair(tokenizer: object, prompt: str, response: str, max_length: int) -> Encoded:
    """Tokenise ``prompt + response`` and mask the prompt out of the labels.

    Over-long pairs keep their prompt and lose the end of the response; a prompt that
    alone would leave fewer than ``max_length // 4`` response tokens is cut from the
    left (its start is the least informative part: template boilerplate).
    """
    p_ids: list[int] = tokenizer(prompt, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    r_ids: list[int] = tokenizer(response, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    room = max_length - len(p_ids)
    min_response = max(1, max_length // 4)
    if room < min_response:
        p_ids = p_ids[len(p_ids) - (max_length - min_response) :]
        room = min_response
    r_ids = r_ids[:room]
    return Encoded(p_ids + r_ids, [IGNORE_INDEX] * len(p_ids) + r_ids)


def collate(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch (for teacher-forced training and scoring)."""
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def per_example_nll(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL and target-token count per example.

    Returns:
        ``(nll_sum, count)``, each of shape ``(batch,)``.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    mask = shift_labels != IGNORE_INDEX
    return (losses * mask).sum(dim=1), mask.sum(dim=1)


def length_batches(items: Sequence[Encoded], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i].input_ids))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
