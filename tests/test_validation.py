"""Server-side validation of one upload against the global adapter it started from."""

import numpy as np
import pytest

from fedpit.fed.validation import check_arrays, check_metrics, check_update
from fedpit.privacy.allowlist import ALLOWED_COUNTERS

A = "base_model.model.layers.0.q_proj.lora_A.weight"
B = "base_model.model.layers.0.q_proj.lora_B.weight"
EXPECTED = {A: np.zeros((4, 32), np.float32), B: np.zeros((32, 4), np.float32)}


def upload(**changes):
    out = {A: np.ones((4, 32), np.float32), B: np.ones((32, 4), np.float32)}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def counters(**changes):
    out = {k: 0.0 for k in ALLOWED_COUNTERS}
    out["num-examples"] = 16.0
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def test_a_valid_upload_passes():
    assert check_update(upload(), counters(), EXPECTED) is None


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        (upload(**{B: None}), f"missing 1 adapter tensor(s): {B}"),
        (upload(extra=np.ones(2, np.float32)), "unexpected 1 adapter tensor(s): extra"),
        (upload(**{A: np.ones((4, 31), np.float32)}), f"{A}: shape (4, 31), expected (4, 32)"),
        (upload(**{A: np.ones((4, 32), np.float64)}), f"{A}: dtype float64, expected float32"),
        (upload(**{B: np.full((32, 4), np.nan, np.float32)}), f"{B}: 128 NaN/Inf value(s)"),
        (
            upload(**{A: np.array([[np.inf] + [0.0] * 31] * 4, np.float32)}),
            f"{A}: 4 NaN/Inf value(s)",
        ),
    ],
)
def test_arrays_that_do_not_fit_are_refused_with_the_reason(update, reason):
    assert check_arrays(update, EXPECTED) == reason
    assert check_update(update, counters(), EXPECTED) == reason


def test_many_offending_keys_are_listed_briefly():
    update = {f"k{i}": np.zeros(1, np.float32) for i in range(5)}
    reason = check_arrays(update, {})
    assert reason == "unexpected 5 adapter tensor(s): k0, k1, k2 and 2 more"


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        (counters(**{"num-examples": None}), "no 'num-examples' weight"),
        (counters(**{"num-examples": 0.0}), "num-examples = 0.0; it must be a positive"),
        (counters(**{"num-examples": -3}), "num-examples = -3; it must be a positive"),
        (counters(**{"num-examples": float("nan")}), "num-examples = nan; it must be"),
        (counters(**{"num-examples": float("inf")}), "num-examples = inf; it must be"),
        (counters(**{"num-examples": True}), "num-examples = True is not a number"),
        (counters(**{"num-examples": [1.0, 2.0]}), "num-examples = [1.0, 2.0] is not a number"),
        (counters(secret=1.0), "counters outside the privacy allowlist: secret"),
        (counters(**{"synth-kept": None}), "missing counter(s): synth-kept"),
        (counters(**{"synth-kept": float("nan")}), "counter synth-kept = nan is not finite"),
    ],
)
def test_a_bad_weight_or_counter_is_refused(metrics, reason):
    got = check_metrics(metrics)
    assert got is not None and got.startswith(reason)
    assert check_update(upload(), metrics, EXPECTED) == got
