"""Strict JSON for every file FedPIT writes: an undefined number is ``null``, never ``NaN``.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON: strict parsers (and
most tools outside Python) reject the whole file. Everything FedPIT writes goes through
:func:`dumps`, which turns every non-finite float into ``null`` and refuses to write one.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (nan, ±inf) replaced by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(obj)``; never writes NaN or Infinity."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
