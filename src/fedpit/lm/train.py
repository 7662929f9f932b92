"""One explicit SFT loop for a named adapter: response-only loss, cosine LR over rounds."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from fedpit.adapters import trainable_parameters
from fedpit.lm.batching import Encoded, collate, micro_batches, per_example_nll

if TYPE_CHECKING:
    from peft import PeftModel


def cosine_lr(lr0: float, lr_min: float, server_round: int, num_rounds: int) -> float:
    """LR for round ``server_round`` (1-based) of ``num_rounds``.

    lr_r = lr_min + ½(lr0 − lr_min)(1 + cos(π (r−1)/R)). Decision: (r−1) rather than the
    paper's r, so round 1 trains at lr0 and the last round does not get lr_min (often 0).
    """
    if not 1 <= server_round <= num_rounds:
        raise ValueError(f"round {server_round} outside 1..{num_rounds}")
    progress = (server_round - 1) / num_rounds
    return lr_min + 0.5 * (lr0 - lr_min) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainStats:
    """What one training call did (kept on the client; never uploaded raw)."""

    steps: int
    examples: int
    tokens: int
    mean_loss: float
    seconds: float


def train_adapter(
    model: PeftModel,
    adapter: str,
    data: Sequence[Encoded],
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    pad_id: int,
    seed: int,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    micro_batch_size: int = 0,
    proximal_mu: float = 0.0,
    anchor: Mapping[str, torch.Tensor] | None = None,
    desc: str = "train",
) -> TrainStats:
    """Fine-tune only ``adapter`` on ``data`` with AdamW at a constant ``lr``.

    The loss is the mean NLL over response tokens of the batch, accumulated over
    micro-batches of ``micro_batch_size`` (0: the whole batch at once). With
    ``proximal_mu > 0`` the FedProx term μ/2·||w − w_anchor||² is added, where
    ``anchor`` maps this adapter's parameter names to their values at round start.
    """
    if not data:
        return TrainStats(0, 0, 0, float("nan"), 0.0)
    model.set_adapter(adapter)
    params = trainable_parameters(model, adapter)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if proximal_mu > 0 and anchor is None:
        anchor = {n: p.detach().clone() for n, p in named.items()}
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    device = params[0].device
    rng = random.Random(seed)
    micro = micro_batch_size or batch_size
    model.train()
    start = time.perf_counter()
    steps = tokens = 0
    loss_sum = 0.0
    total = epochs * math.ceil(len(data) / batch_size)
    bar = tqdm(total=total, desc=desc, leave=False, unit="step")
    for _ in range(epochs):
        order = list(range(len(data)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            items = [data[j] for j in order[i : i + batch_size]]
            optimizer.zero_grad(set_to_none=True)
            # Gradient accumulation over micro-batches: the same step as one big batch
            # (loss normalised by the whole batch's target tokens), less activation memory.
            batch_tokens = max(1, sum(e.num_target_tokens for e in items))
            loss_value = 0.0
            for chunk in micro_batches(items, micro):
                batch = {kk: v.to(device) for kk, v in collate(chunk, pad_id).items()}
                nll, _ = per_example_nll(model, batch)
                part = nll.sum() / batch_tokens
                part.backward()
                loss_value += float(part.detach())
            if proximal_mu > 0:
                assert anchor is not None
                prox = 0.5 * proximal_mu * sum(((named[n] - anchor[n]) ** 2).sum() for n in named)
                assert isinstance(prox, torch.Tensor)  # a sum of tensors: named is not empty
                prox.backward()
                loss_value += float(prox.detach())
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            steps += 1
            tokens += batch_tokens
            loss_sum += loss_value
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / steps:.3f}")
    bar.close()
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return TrainStats(
        steps, len(data) * epochs, tokens, loss_sum / steps, time.perf_counter() - start
    )
