"""Teacher-forced scoring: mean response NLL per example (IFS, evaluation loss)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from fedpit.data.example import Example
from fedpit.lm.batching import (
    IGNORE_INDEX,
    Encoded,
    collate,
    encode_pair,
    hf_model,
    length_batches,
    per_example_nll,
)

if TYPE_CHECKING:
    from transformers.cache_utils import Cache
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from fedpit.lm.runtime import Runtime


@torch.no_grad()
def response_nll(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_length: int,
    batch_size: int = 8,
    max_response: Sequence[int] | None = None,
) -> list[float]:
    """Mean token NLL of each response given its prompt, with the active adapter.

    ``L(y|x)`` when the prompt is the formatted instruction; ``L(y)`` when it is only
    the response header. Batches are length-sorted; results come back in input order.
    ``max_response`` caps each response's scored tokens (see :func:`response_lengths`).
    """
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses differ in length")
    caps = list(max_response) if max_response is not None else [None] * len(prompts)
    encoded = [
        encode_pair(tokenizer, p, r, max_length, cap)
        for p, r, cap in zip(prompts, responses, caps, strict=True)
    ]
    pad_id = tokenizer.pad_token_id
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


def response_lengths(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_length: int,
) -> list[int]:
    """How many response tokens fit after each prompt within ``max_length``."""
    return [
        encode_pair(tokenizer, p, r, max_length).num_target_tokens
        for p, r in zip(prompts, responses, strict=True)
    ]


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


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by every sequence."""
    if not sequences:
        return 0
    n = min(len(s) for s in sequences)
    first = sequences[0]
    for t in range(n):
        if any(s[t] != first[t] for s in sequences[1:]):
            return t
    return n


@torch.no_grad()
def shared_prefix_logprobs(
    model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 32
) -> list[float]:
    """Total log-probability (nats) of each sequence's target tokens, prefix run once.

    For many sequences that start with the same tokens (a canary and its reference
    secrets: one prompt, one wording, different digits) the shared prefix goes through
    the model once; its key/value cache is then repeated for every batch of suffixes.
    Exact: a causal model's prefix states do not depend on what follows, so the result
    equals scoring each full sequence (tested), at a fraction of the tokens.
    """
    if not encoded:
        return []
    # Leave at least one token of every sequence to the suffix pass.
    shortest = min(len(e.input_ids) for e in encoded)
    p = min(common_prefix_length([e.input_ids for e in encoded]), shortest - 1)
    base = hf_model(model)
    decoder = getattr(base, base.base_model_prefix)
    head = base.get_output_embeddings()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    prefix = torch.tensor([encoded[0].input_ids[:p]], device=device) if p > 0 else None
    cache, last_hidden, prefix_lp = None, None, torch.zeros(0, device=device)
    if prefix is not None:
        out = decoder(input_ids=prefix, use_cache=True)
        cache, last_hidden = out.past_key_values, out.last_hidden_state[:, -1:]
        logits = head(out.last_hidden_state[0, :-1]).float()
        prefix_lp = torch.log_softmax(logits, dim=-1).gather(1, prefix[0, 1:, None])[:, 0]
    totals: list[float] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        totals += _suffix_logprobs(
            decoder, head, chunk, p, pad_id, device, cache, last_hidden, prefix_lp
        )
    model.train(was_training)
    return totals


def _suffix_logprobs(
    decoder: torch.nn.Module,
    head: torch.nn.Module,
    chunk: Sequence[Encoded],
    p: int,
    pad_id: int,
    device: torch.device,
    cache: Cache | None,
    last_hidden: torch.Tensor | None,
    prefix_lp: torch.Tensor,
) -> list[float]:
    suffix = collate([Encoded(e.input_ids[p:], e.labels[p:]) for e in chunk], pad_id)
    b = len(chunk)
    mask = suffix["attention_mask"].to(device)
    kwargs: dict[str, object] = {}
    if cache is not None:
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(b)
        kwargs["past_key_values"] = past
        mask = torch.cat([torch.ones(b, p, dtype=mask.dtype, device=device), mask], dim=1)
    hidden = decoder(
        input_ids=suffix["input_ids"].to(device), attention_mask=mask, use_cache=False, **kwargs
    ).last_hidden_state
    # Token p + j is predicted by the state at p + j − 1: the prefix's last state for j = 0.
    if last_hidden is not None:
        hidden = torch.cat([last_hidden.expand(b, 1, -1), hidden[:, :-1]], dim=1)
        targets = suffix["labels"].to(device)
    else:
        targets = suffix["labels"][:, 1:].to(device)
        hidden = hidden[:, :-1]
    keep = targets != IGNORE_INDEX
    logits = head(hidden[keep]).float()
    token_lp = -torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none")
    rows = keep.nonzero()[:, 0]
    lp = torch.zeros(b, dtype=token_lp.dtype, device=device).index_add(0, rows, token_lp)
    out = []
    for i, e in enumerate(chunk):
        in_prefix = torch.tensor(
            [t != IGNORE_INDEX for t in e.labels[1:p]], dtype=torch.bool, device=device
        )
        out.append(float(lp[i] + prefix_lp[in_prefix].sum()))
    return out
