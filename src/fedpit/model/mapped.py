"""One copy of the frozen base weights per machine: a read-only file mapping.

Every simulation worker loads the base model. ``transformers`` maps a safetensors file
that already holds the weights in the wanted dtype (the default model's converted
checkpoint: measured, its pages are shared by every worker); any other load (a dtype
conversion, ``.bin`` weights) leaves each worker its own private copy.
:func:`map_weights` then saves the weights once to the cache and replaces the model's
tensors by a memory mapping of that file: the pages live in the operating system's page
cache and every process that maps the file shares them (shared pages, split in PSS). The
base is frozen, so no page is ever written (a write would give that process a private
copy of the page, never change the file).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from fedpit.cachedir import cache_root


def weights_key(path: str, dtype: torch.dtype) -> str:
    """A name for the mapped weights of the model at ``path`` in ``dtype``.

    It changes when any weight file of a local model directory changes (size or time).
    """
    parts = [str(Path(path).resolve()) if Path(path).exists() else path, str(dtype)]
    folder = Path(path)
    if folder.is_dir():
        for file in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def file_backed(model: torch.nn.Module) -> bool | None:
    """Whether every weight of ``model`` lies in a file mapping (None: cannot tell here).

    Reads ``/proc/self/maps`` (Linux).
    """
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return None
    ranges = []
    for line in maps.read_text().splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[5].startswith("/"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((lo, hi))
    ptrs = [p.untyped_storage().data_ptr() for p in model.parameters()]
    return all(any(lo <= ptr < hi for lo, hi in ranges) for ptr in ptrs)


def share_weights(model: torch.nn.Module, key: str, root: Path | None = None) -> Path | None:
    """Map ``model``'s weights from a shared file unless they are mapped already.

    Args:
        model: A loaded model with frozen weights (on the CPU).
        key: The weights' name (:func:`weights_key`).
        root: Directory of the mapped files (default: ``<model cache>/mapped``).

    Returns:
        The file now backing the weights, or None when they were file-backed already.
    """
    if file_backed(model):
        return None
    return map_weights(model, key, root)


def map_weights(model: torch.nn.Module, key: str, root: Path | None = None) -> Path:
    """Back ``model``'s weights by a shared, read-only mapping of a cached file.

    The first process to need it writes the file (to a temporary name, then renamed, so
    concurrent workers never read half a file); the others only map it. Weights that
    share storage (tied embeddings) share it in the file too.

    Args:
        model: A loaded model with frozen weights (on the CPU).
        key: The weights' name (:func:`weights_key`).
        root: Directory of the mapped files (default: ``<model cache>/mapped``).

    Returns:
        The file the weights are mapped from.
    """
    folder = root or cache_root() / "mapped"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{key}.pt"
    if not target.is_file():
        partial = folder / f".{key}.{os.getpid()}.partial"
        torch.save(model.state_dict(), partial)
        os.replace(partial, target)
    mapped = torch.load(target, mmap=True, weights_only=True, map_location="cpu")
    model.load_state_dict(mapped, assign=True, strict=True)
    for param in model.parameters():
        param.requires_grad_(False)
    return target
