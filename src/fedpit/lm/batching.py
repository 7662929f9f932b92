"""Tokenisation of (prompt, response) pairs with response-only labels, and batching."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenised pair; ``labels`` is ``IGNORE_INDEX`` on prompt positions.

    ``soft_ids`` / ``soft_probs`` (shape ``(response tokens, k)``), when set, are a
    teacher's top-k token distribution at each response position: training then fits
    those distributions instead of the tokens in ``labels`` (context distillation).
    """

    input_ids: list[int]
    labels: list[int]
    soft_ids: torch.Tensor | None = None
    soft_probs: torch.Tensor | None = None

    @property
    def response_ids(self) -> list[int]:
        """The response tokens (the targets), in order."""
        return [t for t in self.labels if t != IGNORE_INDEX]

    @property
    def num_target_tokens(self) -> int:
        """Tokens that carry loss (the response)."""
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """The token ids of ``text``, without special tokens."""
    # transformers types the encoding's values as Any; for one text, a list of ids.
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def encode_pair(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    max_length: int,
    max_response: int | None = None,
) -> Encoded:
    """Tokenise ``prompt + response`` and mask the prompt out of the labels.

    Over-long pairs keep their prompt and lose the end of the response; a prompt that
    alone would leave fewer than ``max_length // 4`` response tokens is cut from the
    left (its start is the least informative part: template boilerplate). With
    ``max_response``, at most that many response tokens are kept.
    """
    p_ids = token_ids(tokenizer, prompt)
    r_ids = token_ids(tokenizer, response)
    room = max_length - len(p_ids)
    min_response = max(1, max_length // 4)
    if room < min_response:
        p_ids = p_ids[len(p_ids) - (max_length - min_response) :]
        room = min_response
    r_ids = r_ids[: room if max_response is None else min(room, max_response)]
    return Encoded(p_ids + r_ids, [IGNORE_INDEX] * len(p_ids) + r_ids)


def micro_batches(items: Sequence[Encoded], size: int) -> list[list[Encoded]]:
    """Split one optimiser batch into micro-batches of ``size``, grouped by length.

    Sorting by length before splitting puts long examples with long ones, so each
    micro-batch pads to a width near its own examples' (dynamic padding pays only for
    what it holds). The step is unchanged: the loss is normalised by the whole batch.
    """
    ordered = sorted(items, key=lambda e: len(e.input_ids))
    size = size or len(ordered) or 1
    return [ordered[k : k + size] for k in range(0, len(ordered), size)]


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
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if items and all(e.soft_ids is not None for e in items):
        # Row-major like the response positions per_example_nll selects.
        batch["soft_ids"] = torch.cat([cast("torch.Tensor", e.soft_ids) for e in items])
        batch["soft_probs"] = torch.cat([cast("torch.Tensor", e.soft_probs) for e in items])
    return batch


def hf_model(model: torch.nn.Module) -> PreTrainedModel:
    """The Hugging Face model in ``model``: a PEFT model's base, else ``model`` itself."""
    # torch types unknown Module attributes as ``Tensor | Module``: which model this is
    # (a PEFT wrapper or a bare transformers model) is known only at run time.
    base = cast("PeftModel", model).get_base_model() if hasattr(model, "get_base_model") else model
    return cast("PreTrainedModel", base)


def per_example_nll(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL over response tokens, and their count, per example.

    The vocabulary projection runs only on positions that predict a response token:
    prompt and padding positions never materialise logits (for a 49k vocabulary these
    are most of a training step's memory). With ``soft_ids`` / ``soft_probs`` in the
    batch (see :class:`Encoded`), the per-token loss is the cross-entropy against the
    teacher's top-k distribution, −Σ_j p_j log q(v_j), instead of −log q(label).

    Returns:
        ``(nll_sum, count)``, each of shape ``(batch,)``.
    """
    base = hf_model(model)
    decoder = getattr(base, base.base_model_prefix)
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    logits = base.get_output_embeddings()(hidden[:, :-1][mask]).float()
    if "soft_ids" in batch:
        log_q = torch.log_softmax(logits, dim=-1).gather(1, batch["soft_ids"])
        token_nll = -(batch["soft_probs"] * log_q).sum(dim=-1)
    else:
        token_nll = torch.nn.functional.cross_entropy(logits, targets[mask], reduction="none")
    rows = mask.nonzero()[:, 0]
    nll = torch.zeros(targets.shape[0], dtype=token_nll.dtype, device=token_nll.device)
    return nll.index_add(0, rows, token_nll), mask.sum(dim=1)


def length_batches(items: Sequence[Encoded], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i].input_ids))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
