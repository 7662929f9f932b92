"""Teacher-forced scoring: mean response NLL per example (IFS, evaluation loss)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from fedpit.batching import collate, encode_pair, length_batches, per_example_nll
from fedpit.data.example import Example

if TYPE_CHECKING:
    from fedpit.runtime import Runtime


@torch.no_grad()
def response_nll(
    model: torch.nn.Module,
    tokenizer: object,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_length: int,
    batch_size: int = 8,
) -> list[float]:
    """Mean token NLL of each response given its prompt, with the active adapter.

    ``L(y|x)`` when the prompt is the formatted instruction; ``L(y)`` when it is only
    the response header. Batches are length-sorted; results come back in input order.
    """
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses differ in length")
    encoded = [
        encode_pair(tokenizer, p, r, max_length) for p, r in zip(prompts, responses, strict=True)
    ]
    pad_id = tokenizer.pad_token_id  # type: ignore[attr-defined]
    device = next(model.parameters()).device
    out = [float("nan")] * len(encoded)
    was_training = model.training
    model.eval()
    for idx in length_batches(encoded, batch_size):
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], pad_id).items()}
        nll, count = per_example_nll(model, batch)
        for j, i in enumerate(idx):
            out[i] = (nll[j] / count[j].clamp(min=1)).item() if count[j] > 0 else float("nan")
    model.train(was_training)
    return out


def mean_loss(rt: Runtime, examples: Sequence[Example], max_length: int) -> float:
    """Mean response NLL of ``examples`` under the runtime's active adapter (nan if none)."""
    if not examples:
        return float("nan")
    nll = response_nll(
        rt.model,
        rt.tokenizer,
        [rt.fmt.prompt(e) for e in examples],
        [e.output for e in examples],
        max_length,
    )
    return sum(nll) / len(nll)
