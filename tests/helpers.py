"""Small builders shared by tests."""

from __future__ import annotations

from pathlib import Path

import torch

from fedpit.adapters import attach_adapters
from fedpit.config import LoraSettings
from fedpit.data.example import Example
from fedpit.model import load_model, load_tokenizer
from fedpit.prompts import make_prompt_format
from fedpit.runtime import Runtime

TINY_LORA = LoraSettings(rank=4, alpha=8, dropout=0.0, target_modules="q_proj,v_proj")


def tiny_runtime(
    model_dir: Path, lora: LoraSettings = TINY_LORA, template: str = "chat"
) -> Runtime:
    """A fresh (uncached) runtime over the tiny model."""
    tok = load_tokenizer(str(model_dir))
    base = load_model(str(model_dir), torch.device("cpu"), torch.float32)
    model = attach_adapters(base, lora, seed=0)
    return Runtime(model, tok, make_prompt_format(template, tok), str(model_dir))


def examples(n: int, prefix: str = "q") -> list[Example]:
    """``n`` distinct toy medical examples."""
    diseases = ["asthma", "diabetes", "influenza", "anemia", "gout", "lupus", "measles", "mumps"]
    return [
        Example(
            id=f"{prefix}-{i}",
            instruction=f"What are the symptoms of {diseases[i % len(diseases)]} type {i} ?",
            input="",
            output=f"Patients with {diseases[i % len(diseases)]} report fatigue and pain {i}.",
            meta={
                "source": f"S{i % 3}",
                "focus": f"{diseases[i % len(diseases)]} type {i}",
                "qtype": "symptoms",
            },
        )
        for i in range(n)
    ]


class FakeGrid:
    """The part of Flower's Grid a strategy samples nodes from."""

    def __init__(self, n: int) -> None:
        self.nodes = list(range(101, 101 + n))

    def get_node_ids(self) -> list[int]:
        return self.nodes
