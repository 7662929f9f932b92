"""Small builders shared by tests."""

from __future__ import annotations

from pathlib import Path

import torch

from fedpit.adapters import attach_adapters
from fedpit.config.schema import LoraSettings
from fedpit.data.example import Example
from fedpit.lm.runtime import Runtime
from fedpit.model.prompts import make_prompt_format
from fedpit.model.resolve import load_model, load_tokenizer

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


def record_optimizer_steps(monkeypatch) -> list[list[dict[int, tuple[torch.Tensor, torch.Tensor]]]]:
    """Make every AdamW record, before each step, each parameter's value and gradient.

    Returns one list per optimiser created (one per training call), holding one
    ``{id(parameter): (value, gradient)}`` per step; the optimiser itself is unchanged.
    """
    runs: list[list[dict[int, tuple[torch.Tensor, torch.Tensor]]]] = []
    real = torch.optim.AdamW

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, params, *args, **kwargs):
            super().__init__(params, *args, **kwargs)
            self.recorded: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = []
            runs.append(self.recorded)

        def step(self, closure=None):
            self.recorded.append(
                {
                    id(p): (p.detach().clone(), p.grad.detach().clone())
                    for group in self.param_groups
                    for p in group["params"]
                }
            )
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    return runs


def by_name(model: torch.nn.Module, step: dict[int, object]) -> dict[str, object]:
    """A recorded step keyed by the model's parameter names instead of ids."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[i]: v for i, v in step.items()}
