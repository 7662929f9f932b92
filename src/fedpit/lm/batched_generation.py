"""Batched generation with a Hugging Face model: the real :data:`GenerateFn`.

Prompts are sorted by length and decoded in batches by :func:`fedpit.lm.decoding.decode`
(or by ``model.generate`` on a left-padded batch, for models it cannot drive); each
sequence stops on its own at end-of-sequence or a stop string (checked on the decoded
tail of its new tokens: measured 3.4× faster than ``generate(stop_strings=...)`` with the
default model on a 2-core CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from fedpit.lm.decoding import StopCheck, decode, supports
from fedpit.lm.generation import GenerateFn, Generation, GenerationSpec
from fedpit.lm.lowp import base_in

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase


class _StopOnStrings(StoppingCriteria):
    """Per-sequence stop when the decoded tail of the new tokens holds a stop string."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str], prompt_width: int
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.prompt_width = prompt_width
        self.tail = 1 + max((len(s) for s in stops), default=0)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kw: object
    ) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_width :]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if not self.stops or new.shape[1] == 0:
            return cast(torch.BoolTensor, done)  # a bool tensor: the legacy class is nominal
        tails = self.tokenizer.batch_decode(new[:, -self.tail :], skip_special_tokens=True)
        for i, text in enumerate(tails):
            done[i] = any(s in text for s in self.stops)
        return cast(torch.BoolTensor, done)


def _cut(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the first stop string; report whether one was found."""
    positions = [text.find(s) for s in stops if s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of the prompts in batches of ``batch_size``, longest prompts first (pure).

    Prompts of similar length decode together: fewer padded positions, and the longest
    batch first shows the worst case of memory at once.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def make_generate_fn(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 16,
    progress: bool = True,
    base_dtype: torch.dtype | None = None,
) -> GenerateFn:
    """A :data:`GenerateFn` over ``model`` with whatever adapter is active when called.

    ``base_dtype`` (e.g. bfloat16): decode with the frozen base weights in that dtype
    (:func:`fedpit.lm.lowp.base_in`; the adapters stay as they are). None: as loaded.
    """
    eos_id = tokenizer.eos_token_id

    fast = supports(model)

    @torch.no_grad()
    def generate(prompts: Sequence[str], spec: GenerationSpec) -> list[Generation]:
        results: list[Generation | None] = [None] * len(prompts)
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        model.eval()
        bar = tqdm(
            total=len(prompts),
            desc="generate",
            leave=False,
            unit="seq",
            disable=not progress,
        )
        for idx in length_batches([len(x) for x in ids], batch_size):
            with base_in(model, base_dtype) if base_dtype else contextlib.nullcontext():
                if fast:
                    stop = _stop_check(tokenizer, spec.stop)
                    rows = decode(model, [ids[i] for i in idx], spec, eos_id, stop)
                else:
                    rows = _hf_generate(model, tokenizer, [prompts[i] for i in idx], spec)
            for i, (new, ended) in zip(idx, rows, strict=True):
                decoded = tokenizer.decode(new, skip_special_tokens=True)
                if not isinstance(decoded, str):  # one sequence of ids decodes to one text
                    raise TypeError(f"decode returned {type(decoded).__name__}, not text")
                text, hit_stop = _cut(decoded, spec.stop)
                results[i] = Generation(text=text, finished=ended or hit_stop)
            bar.update(len(idx))
        bar.close()
        return [r for r in results if r is not None]

    return generate


def _stop_check(tokenizer: PreTrainedTokenizerBase, stops: Sequence[str]) -> StopCheck | None:
    """A row ends when the decoded tail of its new tokens holds a stop string."""
    if not stops:
        return None
    tail = 1 + max(len(s) for s in stops)

    def check(new: list[int]) -> bool:
        text = tokenizer.decode(new[-tail:], skip_special_tokens=True)
        return any(s in text for s in stops)

    return check


def _hf_generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    spec: GenerationSpec,
) -> list[tuple[list[int], bool]]:
    """``model.generate`` on a left-padded batch: for models :func:`decode` cannot drive."""
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(
        device
    )
    width = enc["input_ids"].shape[1]
    kwargs: dict[str, object] = {
        "max_new_tokens": spec.max_new_tokens,
        "do_sample": spec.do_sample,
        "repetition_penalty": spec.repetition_penalty,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "stopping_criteria": StoppingCriteriaList([_StopOnStrings(tokenizer, spec.stop, width)]),
    }
    if spec.do_sample:
        kwargs.update(temperature=spec.temperature, top_p=spec.top_p, top_k=None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    # torch types unknown Module attributes as Tensor | Module; generate is PEFT's or
    # transformers' (GenerationMixin), known only at run time.
    out = model.generate(**enc, **kwargs)  # type: ignore[operator]
    rows = []
    for row in range(out.shape[0]):
        new = out[row, width:].tolist()
        ended = eos_id in new
        rows.append((new[: new.index(eos_id)] if ended else new, ended))
    return rows
