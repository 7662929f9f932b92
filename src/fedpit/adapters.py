"""Named LoRA adapters on one frozen base: create, read, write, mix, save.

FedPIT keeps two adapters per client on the same base model: ``local`` (W_l, trained
on private data, never uploaded) and ``public`` (W_s, trained on selected synthetic
data). Both are re-set explicitly every round; the base weights never change.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import save_file

from fedpit.config.schema import LoraSettings

LOCAL = "local"
PUBLIC = "public"
ADAPTERS = (LOCAL, PUBLIC)

State = dict[str, torch.Tensor]


def lora_config(settings: LoraSettings) -> LoraConfig:
    """The PEFT LoRA config for ``settings``."""
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def wrap(base: torch.nn.Module, settings: LoraSettings, adapter: str = "default") -> PeftModel:
    """``get_peft_model`` with one LoRA adapter named ``adapter``, without PEFT's noise.

    PEFT asks transformers a deprecated question (``is_gradient_checkpointing``); the
    FutureWarning it triggers is theirs, not the user's, so it is not shown.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        return get_peft_model(base, lora_config(settings), adapter_name=adapter)


def attach_adapters(base: torch.nn.Module, settings: LoraSettings, seed: int) -> PeftModel:
    """Wrap ``base`` with the two named adapters (seeded initialisation)."""
    torch.manual_seed(seed)
    model = wrap(base, settings, LOCAL)
    model.add_adapter(PUBLIC, lora_config(settings))
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def get_state(model: PeftModel, adapter: str) -> State:
    """A detached copy of one adapter's tensors under PEFT's canonical keys."""
    state = get_peft_model_state_dict(model, adapter_name=adapter)
    return {k: v.detach().clone() for k, v in state.items()}


def set_state(model: PeftModel, adapter: str, state: Mapping[str, torch.Tensor]) -> None:
    """Load ``state`` into ``adapter``; every key must match, none may be missing."""
    expected = get_peft_model_state_dict(model, adapter_name=adapter)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"adapter state does not fit {adapter!r}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"adapter state {key}: shape {tuple(value.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
    set_peft_model_state_dict(model, dict(state), adapter_name=adapter)


def trainable_parameters(model: PeftModel, adapter: str) -> list[torch.nn.Parameter]:
    """Make exactly ``adapter``'s LoRA tensors trainable and return them."""
    params = []
    marker = f".{adapter}."
    for name, param in model.named_parameters():
        wanted = "lora_" in name and marker in name
        param.requires_grad_(wanted)
        if wanted:
            params.append(param)
    if not params:
        raise ValueError(f"model has no adapter named {adapter!r}")
    return params


def mix(
    local: Mapping[str, torch.Tensor], public: Mapping[str, torch.Tensor], beta: float
) -> State:
    """W_a = β·W_l + (1−β)·W_s, element-wise on every LoRA tensor (A and B separately).

    Decision (docs/decisions.md): the factors are mixed separately, as FedAvg on LoRA does.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta = {beta} is outside [0, 1]")
    if set(local) != set(public):
        raise ValueError("local and public adapters have different keys")
    return {k: beta * local[k] + (1.0 - beta) * public[k] for k in local}


def save_adapter(
    state: Mapping[str, torch.Tensor],
    settings: LoraSettings,
    base_name: str,
    directory: Path,
) -> None:
    """Write ``state`` as a standard PEFT adapter directory, atomically.

    The result loads with ``PeftModel.from_pretrained(base_model, directory)``.
    """
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config = lora_config(settings)
    config.base_model_name_or_path = base_name
    config.save_pretrained(str(tmp))
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(tmp / "adapter_model.safetensors"),
    )
    (tmp / "fedpit.json").write_text(json.dumps({"base_model": base_name}) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)


def is_identity(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a LoRA state changes nothing: it has B matrices and every one is zero.

    Such an adapter (every round-0 global model, :func:`initial_state`) adds exact zeros
    to every layer's output, so the model computes what its base alone does.
    """
    b = [v for k, v in state.items() if "lora_B" in k]
    return bool(b) and not any(bool(v.any()) for v in b)


def initial_state(template: Mapping[str, torch.Tensor], seed: int) -> State:
    """A fresh LoRA initialisation shaped like ``template``, reproducible from ``seed``.

    As PEFT does by default: A ~ Kaiming-uniform(a=√5), B = 0, so the adapter starts as
    the identity change (the global model of round 0 is the base model).
    """
    gen = torch.Generator().manual_seed(seed)
    out: State = {}
    for key in sorted(template):
        shape = template[key].shape
        if "lora_B" in key:
            out[key] = torch.zeros(shape, dtype=template[key].dtype)
        else:
            bound = 1.0 / (shape[1] ** 0.5)  # kaiming_uniform(a=√5) bound = 1/√fan_in
            out[key] = (
                (torch.rand(shape, generator=gen) * 2 - 1).mul_(bound).to(template[key].dtype)
            )
    return out
