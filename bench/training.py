"""LoRA training speed: our ``train_adapter`` vs TRL ``SFTTrainer`` on identical tokens.

Both start from the same adapter, train on the same encoded examples with the same step
(batch, micro-batch, AdamW at constant learning rate, grad-norm clip), and are timed
over their training call alone.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.timing import alternate


def _trl_trainer(
    rt: Any,
    cfg: Any,
    encoded: Sequence[Any],
    batch: int,
    micro: int,
    seed: int,
    out_dir: Path,
) -> Any:
    """TRL ``SFTTrainer`` on a fresh copy of the base with the runtime's initial LoRA."""
    from datasets import Dataset
    from peft import get_peft_model
    from peft.utils import set_peft_model_state_dict
    from trl import SFTConfig, SFTTrainer

    from fedpit.adapters import LOCAL, get_state, lora_config
    from fedpit.lm.batching import IGNORE_INDEX
    from fedpit.model import resolve as model_lib

    base = model_lib.load_model(
        model_lib.prepare(cfg.model.name), torch.device("cpu"), torch.float32
    )
    peft_model = get_peft_model(base, lora_config(cfg.lora))
    set_peft_model_state_dict(peft_model, get_state(rt.model, LOCAL))  # same start
    # A prompt-completion dataset in TRL's tokenised form: identical token sequences,
    # the loss on the completion (response) only, as ours.
    data = Dataset.from_list(
        [
            {
                "input_ids": list(e.input_ids),
                "completion_mask": [int(t != IGNORE_INDEX) for t in e.labels],
            }
            for e in encoded
        ]
    )
    args = SFTConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=max(1, batch // micro),
        num_train_epochs=1,
        learning_rate=cfg.train.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm,
        optim="adamw_torch",
        bf16=False,
        fp16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        max_length=cfg.model.max_length,
        packing=False,
        padding_free=False,
        completion_only_loss=True,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=seed,
    )
    return SFTTrainer(
        model=peft_model, args=args, train_dataset=data, processing_class=rt.tokenizer
    )


def bench_training(
    rt: Any, cfg: Any, clients: Sequence[Sequence[Any]], steps: int, batch: int, micro: int
) -> dict[str, Any]:
    """Our ``train_adapter`` vs TRL ``SFTTrainer`` on the same encoded examples.

    Ours trains the runtime's ``local`` adapter, which is then restored to its start so
    TRL's copy begins from the same weights.

    Args:
        rt: The default model's runtime (``fedpit.lm.runtime.get_runtime``).
        cfg: The run configuration (``train.*``, ``model.max-length``, ``lora.*``, seed).
        clients: The clients' private examples; the first ``steps * batch`` are used.
        steps: Optimiser steps (one epoch over ``steps * batch`` examples).
        batch: Examples per step.
        micro: Examples per micro-batch (gradient accumulation over ``batch // micro``).

    Returns:
        The ``training`` section of ``results.json``.
    """
    from fedpit.adapters import LOCAL, get_state, set_state
    from fedpit.fed.client import _encode
    from fedpit.lm.lowp import base_in
    from fedpit.lm.train import train_adapter

    pool = [e for client in clients for e in client]
    examples = pool[: steps * batch]
    encoded = _encode(rt, examples, cfg.model.max_length)
    tokens = sum(len(e.input_ids) for e in encoded)
    targets = sum(e.num_target_tokens for e in encoded)
    seed = cfg.seed
    start_state = get_state(rt.model, LOCAL)

    def ours(dtype: torch.dtype) -> Any:
        """One epoch of ``train_adapter`` from the start state, the base in ``dtype``."""
        set_state(rt.model, LOCAL, start_state)
        torch.manual_seed(seed)
        with base_in(rt.model, dtype):  # train.base-dtype
            return train_adapter(
                rt.model,
                LOCAL,
                encoded,
                lr=cfg.train.lr,
                epochs=1,
                batch_size=batch,
                pad_id=rt.tokenizer.pad_token_id,
                seed=seed,
                weight_decay=cfg.train.weight_decay,
                max_grad_norm=cfg.train.max_grad_norm,
                micro_batch_size=micro,
                desc=f"bench train {dtype}".replace("torch.", ""),
            )

    runs = alternate({"fp32": lambda: ours(torch.float32), "bf16": lambda: ours(torch.bfloat16)})
    set_state(rt.model, LOCAL, start_state)
    ours_s = statistics.fmean(t for t, _ in runs["fp32"])
    bf16_s = statistics.fmean(t for t, _ in runs["bf16"])
    stats, bf16_stats = runs["fp32"][0][1], runs["bf16"][0][1]

    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        trainer = _trl_trainer(rt, cfg, encoded, batch, micro, seed, Path(tmp))
        t0 = time.perf_counter()
        result = trainer.train()
        trl_s = time.perf_counter() - t0
    history = trainer.state.log_history
    step_losses = [h["loss"] for h in history if "loss" in h]
    counted = [int(h["num_tokens"]) for h in history if "num_tokens" in h]
    del trainer
    return {
        "examples": len(encoded),
        "batch_size": batch,
        "micro_batch_size": micro,
        "max_length": cfg.model.max_length,
        "lora": {"rank": cfg.lora.rank, "modules": list(cfg.lora.modules)},
        "tokens": tokens,
        "target_tokens": targets,
        "ours": {
            "seconds": ours_s,
            "steps": stats.steps,
            "tokens_per_s": tokens / ours_s,
            "mean_loss": stats.mean_loss,
            "repetitions_s": [t for t, _ in runs["fp32"]],
        },
        "ours_bf16": {
            "seconds": bf16_s,
            "steps": bf16_stats.steps,
            "tokens_per_s": tokens / bf16_s,
            "mean_loss": bf16_stats.mean_loss,
            "repetitions_s": [t for t, _ in runs["bf16"]],
        },
        "speedup_bf16": ours_s / bf16_s,
        "trl": {
            "seconds": trl_s,
            "steps": result.global_step,
            "tokens_per_s": tokens / trl_s,
            "mean_loss": result.training_loss,
            "last_step_loss": step_losses[-1] if step_losses else None,
            # TRL's own count of non-padding tokens: equal to "tokens" when both trainers
            # saw the same sequences.
            "counted_tokens": counted[-1] if counted else None,
        },
        "speedup": trl_s / ours_s,
    }
