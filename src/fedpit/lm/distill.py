"""Soft-label context distillation: the teacher's token distributions over a response.

The teacher is the model with a prompt the student will not see (the demonstrations a
synthetic response was generated with); the student learns to produce, from the bare
instruction, the teacher's next-token distribution at every response position (top-k,
renormalised), instead of only the tokens that were sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from fedpit.lm.batching import (
    IGNORE_INDEX,
    Encoded,
    collate,
    hf_model,
    length_batches,
    token_ids,
)

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase


def top_k_distribution(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most likely tokens of each row of ``logits``, renormalised.

    Returns ``(ids, probs)``: the probabilities are the softmax over those ``k`` logits.
    """
    values, ids = logits.topk(min(k, logits.shape[-1]), dim=-1)
    return ids, torch.softmax(values.float(), dim=-1)


@torch.no_grad()
def teacher_targets(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    teacher_prompts: Sequence[str],
    students: Sequence[Encoded],
    top_k: int,
    batch_size: int = 4,
) -> list[Encoded]:
    """Attach the teacher's top-k distribution over each student's response tokens.

    Args:
        model: The teacher (the active adapter is used as it is).
        tokenizer: The tokenizer of both.
        teacher_prompts: The teacher's prompt for each student example.
        students: The student's encoded examples; their response tokens are scored
            after the teacher's prompt, token for token the same.
        top_k: Tokens kept per position.
        batch_size: Teacher sequences per forward pass.

    Returns:
        The students' encodings with ``soft_ids`` / ``soft_probs`` set.
    """
    if len(teacher_prompts) != len(students):
        raise ValueError("teacher prompts and students differ in length")
    teachers = []
    for prompt, student in zip(teacher_prompts, students, strict=True):
        p_ids = token_ids(tokenizer, prompt)
        response = student.response_ids
        teachers.append(Encoded(p_ids + response, [IGNORE_INDEX] * len(p_ids) + response))
    pad_id = tokenizer.pad_token_id
    base = hf_model(model)
    decoder = getattr(base, base.base_model_prefix)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[Encoded | None] = [None] * len(students)
    for idx in length_batches(teachers, batch_size):
        batch = {k: v.to(device) for k, v in collate([teachers[i] for i in idx], pad_id).items()}
        hidden = decoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        mask = batch["labels"][:, 1:] != IGNORE_INDEX
        ids, probs = top_k_distribution(base.get_output_embeddings()(hidden[:, :-1][mask]), top_k)
        counts = mask.sum(dim=1).tolist()
        start = 0
        for row, i in enumerate(idx):
            end = start + counts[row]
            out[i] = replace(
                students[i], soft_ids=ids[start:end].cpu(), soft_probs=probs[start:end].cpu()
            )
            start = end
    model.train(was_training)
    return [e for e in out if e is not None]
