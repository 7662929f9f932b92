"""Freed activation memory goes back to the operating system between phases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedpit.lm.runtime import _libc

ROLLUP = Path("/proc/self/smaps_rollup")

# Run in a fresh interpreter: the heap of a long test session (hundreds of tests before
# this one) would make the numbers depend on what ran earlier.
PROBE = r"""
import json, re
import torch
from fedpit.lm.runtime import release_memory

def anonymous_mb():
    text = open("/proc/self/smaps_rollup").read()
    return int(re.search(r"Anonymous:\s+(\d+)", text).group(1)) / 1024

blocks = [torch.empty(2048) for _ in range(40_000)]  # ~330 MB in 8 KiB blocks
pin = torch.empty(16)  # a late allocation pins the heap top, as in real runs
allocated = anonymous_mb()
del blocks
held = anonymous_mb()
release_memory()
print(json.dumps({"allocated": allocated, "held": held, "after": anonymous_mb()}))
"""


@pytest.mark.skipif(not ROLLUP.exists() or _libc() is None, reason="needs Linux with glibc")
def test_release_memory_returns_freed_small_blocks() -> None:
    # Many small blocks (below glibc's mmap threshold) stay in the heap after they are
    # freed, as a training step's activations do; release_memory trims them.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True
    ).stdout
    mb = json.loads(out.strip().splitlines()[-1])
    assert mb["allocated"] - mb["held"] < 100, "the allocator already returned the blocks"
    assert mb["held"] - mb["after"] > 100, f"trim freed only {mb['held'] - mb['after']:.0f} MB"
