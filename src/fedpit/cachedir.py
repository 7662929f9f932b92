"""Where FedPIT keeps what it computes once per machine: ``$FEDPIT_CACHE`` or ~/.cache/fedpit."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache directory (converted models, mapped weights, base outputs, clusters)."""
    env = os.environ.get("FEDPIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedpit"
