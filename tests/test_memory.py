"""Freed activation memory goes back to the operating system between phases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from fedpit.runtime import _libc, release_memory

ROLLUP = Path("/proc/self/smaps_rollup")


def _anonymous_mb() -> float:
    text = ROLLUP.read_text()
    return int(re.search(r"Anonymous:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


@pytest.mark.skipif(not ROLLUP.exists() or _libc() is None, reason="needs Linux with glibc")
def test_release_memory_returns_freed_small_blocks() -> None:
    # Many small blocks (below glibc's mmap threshold) stay in the heap after they are
    # freed, as a training step's activations do; release_memory trims them.
    keep = []
    blocks = [torch.empty(2048) for _ in range(40_000)]  # ≈ 330 MB in 8 KiB blocks
    keep.append(torch.empty(16))  # a late allocation pins the heap top, as in real runs
    before_free = _anonymous_mb()
    del blocks
    held = _anonymous_mb()
    release_memory()
    after = _anonymous_mb()
    assert before_free - held < 100, "the allocator already returned the blocks"
    assert held - after > 100, f"trim freed only {held - after:.0f} MB"
    del keep
