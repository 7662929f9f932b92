"""Units shared by the benchmark's measurements and its table."""

from __future__ import annotations

GB = 1e9
"""Bytes per gigabyte (decimal, as the table and ``results.json`` report)."""
