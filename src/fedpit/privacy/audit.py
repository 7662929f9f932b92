"""The node's audit log: one JSON line per upload, in ``<state-dir>/audit.jsonl``.

A hospital must be able to show what left its node. Each line records when, for which
run and round, under which method and base model, and a sha256 of exactly the tensors
that were sent (:func:`fedpit.lm.fingerprint.tensors_sha256`, recomputable from the reply's
ArrayRecord), with their shapes and the counters sent beside them. No text, no private
data: the log holds what the server received anyway, plus hashes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import torch

from fedpit import jsonio
from fedpit.lm.fingerprint import tensors_sha256
from fedpit.privacy.allowlist import NUM_EXAMPLES

AUDIT_FILE = "audit.jsonl"


def upload_record(
    *,
    arrays: Mapping[str, torch.Tensor],
    counters: Mapping[str, float],
    server_round: int,
    method: str,
    base_fingerprint: str,
    run_id: int | None = None,
    policy: Mapping[str, object] | None = None,
    now: datetime | None = None,
) -> dict[str, object]:
    """The audit line for one upload.

    Args:
        arrays: The uploaded tensors, as sent.
        counters: The counters sent with them (``num-examples`` among them).
        server_round: The server round the upload answers.
        method: The run's method.
        base_fingerprint: The combined base-model digest the node checked.
        run_id: Flower's run id, when known.
        policy: The node policy in force (its sha256, source and values), if any.
        now: The time to record (default: now, UTC).

    Returns:
        A JSON-ready dict; ``shapes`` counts the tensors per shape (``"16x576": 30``)
        and ``sha256`` covers every key, dtype, shape and byte.
    """
    shapes = Counter("x".join(str(d) for d in t.shape) for t in arrays.values())
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in arrays.values()})
    return {
        "time": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "run_id": run_id,
        "round": server_round,
        "method": method,
        "keys": len(arrays),
        "shapes": dict(sorted(shapes.items())),
        "numel": sum(t.numel() for t in arrays.values()),
        "dtype": ",".join(dtypes),
        "sha256": tensors_sha256(arrays),
        "num_examples": counters.get(NUM_EXAMPLES),
        "counters": dict(sorted(counters.items())),
        "base_fingerprint": base_fingerprint,
        "policy": dict(policy) if policy is not None else None,
    }


def append_audit(state_dir: Path, record: Mapping[str, object]) -> Path:
    """Append ``record`` as one line to ``state_dir/audit.jsonl`` and sync it to disk.

    One ``write`` of a whole line to a file opened for appending, then flush and fsync:
    lines never interleave, and a crash can cut at most the line being written.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / AUDIT_FILE
    line = jsonio.dumps(record) + "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    return path
