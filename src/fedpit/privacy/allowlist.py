"""What may leave a client: the adapter upload, n_k, and an allowlist of counters.

The allowlist is closed: a key not listed here never enters an outgoing message, and
:func:`check_outgoing` is called on every reply before it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedpit.adapters import State
from fedpit.synth.filters import COPIED_SPAN, REJECTION_REASONS
from fedpit.synth.pipeline import SynthResult

NUM_EXAMPLES = "num-examples"
SPAN_BLOCKED = f"synth-rejected-{COPIED_SPAN}"
"""Synthetic candidates the verbatim-span guard blocked (a count; the spans stay home)."""
SYNTH_EMPTY = "synth-empty"
"""1 when SynGen kept no candidate this round (a degenerate round), else 0."""
PHASES = ("synth", "train-local", "select", "distill", "train-public", "total")

ALLOWED_COUNTERS: frozenset[str] = frozenset(
    [NUM_EXAMPLES, "synth-attempts", "synth-kept", "synth-selected", "upload-bytes"]
    + [SYNTH_EMPTY]
    + [f"synth-rejected-{r}" for r in REJECTION_REASONS]
    + [f"seconds-{p}" for p in PHASES]
)


EVAL_LOSS = "eval-loss"
EVAL_COUNTERS: frozenset[str] = frozenset([NUM_EXAMPLES, EVAL_LOSS])
"""What a federated-evaluation reply may hold: the aggregate over the node's held-out set."""


def upload_metrics(
    *,
    num_examples: int,
    synth: SynthResult | None,
    selected: int,
    timings: Mapping[str, float],
    upload: State,
) -> dict[str, float]:
    """The counters a client reports: every allowlisted key, zero where not applicable.

    Every client sends the same keys so that Flower's metric aggregation lines up.
    """
    out: dict[str, float] = {k: 0.0 for k in ALLOWED_COUNTERS}
    out[NUM_EXAMPLES] = float(num_examples)
    if synth is not None:
        out["synth-attempts"] = float(synth.attempts)
        out["synth-kept"] = float(len(synth.examples))
        for reason, count in synth.rejected.items():
            out[f"synth-rejected-{reason}"] = float(count)
        out[SYNTH_EMPTY] = float(not synth.examples)
    out["synth-selected"] = float(selected)
    for phase, seconds in timings.items():
        out[f"seconds-{phase}"] = float(seconds)
    out["upload-bytes"] = float(sum(t.numel() * t.element_size() for t in upload.values()))
    check_counters(out)
    return out


def check_counters(
    counters: Mapping[str, object], allowed: frozenset[str] = ALLOWED_COUNTERS
) -> None:
    """Refuse any counter outside ``allowed``, or any non-numeric value."""
    extra = sorted(set(counters) - allowed)
    if extra:
        raise ValueError(f"refusing to upload non-allowlisted keys: {extra}")
    for key, value in counters.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"refusing to upload non-numeric counter {key}={value!r}")
