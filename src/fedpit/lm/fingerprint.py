"""Base-model fingerprint: server and nodes must federate adapters of one frozen base.

A LoRA adapter only means something on the base it was trained on. A node whose base
differs (other weights, another tokenizer, another prompt template) would train and
upload garbage that averages silently into the global adapter. So the server puts its
fingerprint into every train/evaluate message and a node refuses the round when its own
differs, naming the component:

- ``weights``: sha256 over the frozen base tensors (LoRA adapter tensors excluded), by
  name in sorted order, each with its dtype, shape and raw bytes (:func:`tensors_sha256`);
- ``tokenizer``: sha256 of the tokenizer's serialised JSON (vocabulary, merges, added
  and special tokens, normaliser, pre-tokeniser) plus its named special tokens;
- ``template``: sha256 of the prompt format rendered on fixed probe examples
  (:mod:`fedpit.model.prompts`), so any change in the text the model sees is caught.

The combined :attr:`BaseFingerprint.digest` is the sha256 of the three. Computing it
reads every base weight once: ≈ 1 s for the 135M default on a busy 2-core CPU (weights
0.6–1.0 s, tokenizer 0.3–0.4 s); the runtime computes it once and keeps it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer

from fedpit.data.example import Example
from fedpit.errors import BaseModelMismatchError
from fedpit.lm.batching import hf_model
from fedpit.model.prompts import CHAT, PromptFormat

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

VERSION = "fedpit-base-fingerprint-v1"
COMPONENTS = ("weights", "tokenizer", "template")

_SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token")
_PROBES = (
    Example("probe-0", "PROBE INSTRUCTION", "", "PROBE RESPONSE"),
    Example("probe-1", "PROBE INSTRUCTION", "PROBE INPUT", "PROBE RESPONSE"),
)


@dataclass(frozen=True)
class BaseFingerprint:
    """The three component digests (sha256 hex) of a base model."""

    weights: str
    tokenizer: str
    template: str

    @property
    def digest(self) -> str:
        """One sha256 hex over all components (what logs and audit lines show)."""
        text = "\n".join([VERSION, self.weights, self.tokenizer, self.template])
        return hashlib.sha256(text.encode()).hexdigest()

    def differing(self, other: BaseFingerprint) -> list[str]:
        """Names of the components (in :data:`COMPONENTS` order) that differ from ``other``."""
        return [c for c in COMPONENTS if getattr(self, c) != getattr(other, c)]


def _tensor_sha256(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    # The bytes as a memoryview (no copy): numpy's stubs give ndarray itself the buffer
    # protocol (``__buffer__``) only on Python ≥ 3.12.
    return hashlib.sha256(flat.view(torch.uint8).numpy().data).hexdigest()


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex of named tensors: names, dtypes, shapes and bytes, in sorted name order.

    Each tensor is hashed on its own, then one line per name (``name dtype shape
    sha256``) is hashed; the order of the mapping does not matter. Tensors that share
    storage (tied embeddings) are read once.
    """
    seen: dict[tuple[int, str, tuple[int, ...], tuple[int, ...]], str] = {}
    lines = []
    for name in sorted(tensors):
        t = tensors[name]
        key = (t.data_ptr(), str(t.dtype), tuple(t.shape), t.stride())
        if key not in seen:
            seen[key] = _tensor_sha256(t)
        shape = "x".join(str(d) for d in t.shape)
        lines.append(f"{name} {str(t.dtype).removeprefix('torch.')} {shape} {seen[key]}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def base_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The frozen base tensors of ``model`` under their plain model names.

    For a PEFT model the LoRA tensors (any ``lora_*`` name part) are dropped and the
    ``base_model.model.`` prefix and ``.base_layer`` parts are removed, so the names (and
    the fingerprint) equal those of the bare Hugging Face model.
    """
    base = hf_model(model)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in base.state_dict(keep_vars=False).items():
        parts = name.split(".")
        if any(p.startswith("lora_") for p in parts):
            continue
        out[".".join(p for p in parts if p != "base_layer")] = tensor
    return out


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 hex of the frozen base weights of ``model`` (LoRA adapters excluded)."""
    return tensors_sha256(base_tensors(model))


def tokenizer_sha256(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 hex of a tokenizer: its serialised JSON and its named special tokens.

    Fast tokenizers are hashed through their ``tokenizers`` JSON (vocabulary, merges,
    added tokens, normaliser, pre-tokeniser, post-processor, decoder), serialised from a
    copy without padding/truncation (transformers switches those on the backend while it
    encodes batches); others through their sorted vocabulary.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        copy = Tokenizer.from_str(backend.to_str())  # in Rust: ~10× faster than json
        copy.no_padding()
        copy.no_truncation()
        body = copy.to_str()
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        body = json.dumps(vocab, ensure_ascii=False)
    special = {k: str(getattr(tokenizer, k, None)) for k in _SPECIAL_TOKENS}
    digest = hashlib.sha256(body.encode())
    digest.update(json.dumps(special, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


def template_sha256(fmt: PromptFormat) -> str:
    """sha256 hex of the prompt format, rendered on fixed probe examples."""
    rendered: dict[str, object] = {
        "kind": fmt.kind,
        "end_text": fmt.end_text,
        "prompts": [fmt.prompt(p) for p in _PROBES],
        "response_header": fmt.response_header(),
    }
    if fmt.kind == CHAT:  # SynGen's response prompts show demonstrations as turns
        turns = [
            {"role": "user", "content": "PROBE USER"},
            {"role": "assistant", "content": "PROBE ASSISTANT"},
            {"role": "user", "content": "PROBE USER 2"},
        ]
        rendered["conversation"] = fmt.chat(turns)
    text = json.dumps(rendered, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def base_fingerprint(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat
) -> BaseFingerprint:
    """The fingerprint of a base model as loaded: weights, tokenizer and prompt template."""
    return BaseFingerprint(
        weights=weights_sha256(model),
        tokenizer=tokenizer_sha256(tokenizer),
        template=template_sha256(fmt),
    )


def check_base(expected: BaseFingerprint | None, actual: BaseFingerprint, base: str) -> None:
    """Refuse to work on a base that differs from the server's.

    Args:
        expected: The server's fingerprint from the message (None: it sent none).
        actual: This node's fingerprint.
        base: The node's ``model.name`` (for the message).

    Raises:
        BaseModelMismatchError: Naming the base and every differing component.
    """
    if expected is None:
        raise BaseModelMismatchError(
            f"base model check failed for {base!r}: the server sent no base-model "
            "fingerprint; refusing the round (server and nodes must run the same FedPIT)"
        )
    differing = actual.differing(expected)
    if not differing:
        return
    details = "; ".join(
        f"{c}: server {getattr(expected, c)[:12]}…, node {getattr(actual, c)[:12]}…"
        for c in differing
    )
    raise BaseModelMismatchError(
        f"base model mismatch for {base!r}: this node's base differs from the server's in "
        f"its {' and '.join(differing)} ({details}); refusing the round instead of training "
        "on another base. Every node needs the server's base weights, tokenizer and "
        "model.template."
    )
