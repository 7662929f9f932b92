"""Does ``torch.compile`` pay on this CPU? One SynGen decoding step, eager vs compiled.

``python -m bench.compile_step [--steps 24] [--prompts 16]``

Prefills the benchmark's SynGen response prompts (``bench.generation.response_prompts``)
with :mod:`fedpit.lm.decoding`'s own prefill, then times the same greedy decoding steps
(one new token for every row, the KV cache growing by one position a step) through the
model as loaded and through ``torch.compile(model, dynamic=True)`` (inductor), both
after a warm-up whose time — the compilation — is reported on its own. Prints one JSON
line; the greedy tokens of both must agree.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch


def _steps(model: Any, cache: Any, logits: torch.Tensor, widths: Sequence[int], steps: int):
    """Greedy decoding steps from a prefilled cache; (seconds per step, tokens)."""
    rows = logits.shape[0]
    width = max(widths)
    mask = torch.zeros((rows, width), dtype=torch.long)
    for r, n in enumerate(widths):
        mask[r, width - n :] = 1
    position = torch.tensor(list(widths))
    token = logits.argmax(dim=-1)
    out_tokens = [token]
    t0 = time.perf_counter()
    for _ in range(steps):
        mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype)], dim=1)
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        position = position + 1
        token = out.logits[:, -1, :].argmax(dim=-1)
        out_tokens.append(token)
    return (time.perf_counter() - t0) / steps, torch.stack(out_tokens, dim=1)


def main(argv: Sequence[str] | None = None) -> int:
    """Time eager and compiled decoding steps; print one JSON line."""
    p = argparse.ArgumentParser(prog="python -m bench.compile_step", description=__doc__)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--prompts", type=int, default=16)
    args = p.parse_args(argv)
    from bench.generation import response_prompts
    from fedpit.adapters import PUBLIC
    from fedpit.config.load import from_flat
    from fedpit.data.prepare import run_data_for
    from fedpit.lm.decoding import _prefill
    from fedpit.lm.runtime import get_runtime, set_threads

    cfg = from_flat({})
    set_threads(cfg.train.threads)
    rt = get_runtime(cfg.model, cfg.lora)
    rt.model.set_adapter(PUBLIC)
    rt.model.eval()
    prompts = response_prompts(cfg, rt.fmt, run_data_for(cfg).split.clients, args.prompts)
    ids = [rt.tokenizer(x, add_special_tokens=False)["input_ids"] for x in prompts]
    widths = [len(x) for x in ids]
    result: dict[str, Any] = {"prompts": len(ids), "steps": args.steps}
    with torch.no_grad():
        cache, logits = _prefill(rt.model, ids, max(widths) + 2 * args.steps + 4)
        eager_s, eager_tokens = _steps(rt.model, copy.deepcopy(cache), logits, widths, args.steps)
        result["eager_ms_per_step"] = 1000 * eager_s
        compiled = torch.compile(rt.model, dynamic=True)
        t0 = time.perf_counter()
        try:
            _steps(compiled, copy.deepcopy(cache), logits, widths, 2)  # compiles
        except Exception as err:  # a failed compilation is the measurement
            result["compile_error"] = f"{type(err).__name__}: {str(err)[:300]}"
            print(json.dumps(result))
            return 0
        result["compile_s"] = time.perf_counter() - t0
        comp_s, comp_tokens = _steps(compiled, copy.deepcopy(cache), logits, widths, args.steps)
        result["compiled_ms_per_step"] = 1000 * comp_s
        result["speedup"] = eager_s / comp_s
        result["same_tokens"] = bool(torch.equal(eager_tokens, comp_tokens))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
