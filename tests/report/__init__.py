"""Fake run directories for the report tests: hand-written result files, no model.

The grid: fedavg, fedmit (2 seeds each) and fedpit at β ∈ {0, 0.5, 1} (2 seeds each),
2 rounds, one held-out test set. Every number is a simple function of (method, β, seed)
so the tests can compute the expected table cells by hand.
"""

from __future__ import annotations

from pathlib import Path

from fedpit.config.load import from_flat
from fedpit.runs.rundir import append_jsonl, create_run_dir, write_json

SEEDS = (0, 1)
BETAS = (0.0, 0.5, 1.0)
# method, β → (final ROUGE-L at seed 0, final MIA AUC at seed 0); seed 1 adds 0.1 / 0.02
BASE_VALUES = {
    ("fedavg", None): (0.30, 0.90),
    ("fedmit", None): (0.20, 0.80),
    ("fedpit", 0.0): (0.24, 0.55),
    ("fedpit", 0.5): (0.26, 0.65),
    ("fedpit", 1.0): (0.28, 0.85),
}


def values(method: str, beta: float | None, seed: int) -> tuple[float, float]:
    """(final ROUGE-L, final MIA AUC) of one run."""
    rouge, auc = BASE_VALUES[(method, beta)]
    return rouge + 0.1 * seed, auc + 0.02 * seed


def test_loss(seed: int, server_round: int) -> float:
    """Held-out test loss: 2.0 at round 0, −0.1 per round, +0.2 for seed 1."""
    return 2.0 - 0.1 * server_round + 0.2 * seed


def write_run(
    root: Path, method: str, beta: float | None, seed: int, finished: bool = True
) -> Path:
    """One fake run directory with metrics, summary, eval and attack files."""
    keys = {"method": method, "seed": seed, "fed.rounds": 2, "run-dir": str(root)}
    if beta is not None:
        keys["fed.beta"] = beta
    rd = create_run_dir(from_flat(keys))
    synthetic = method in ("fedpit", "fedmit")
    for r in range(3):
        counters = {}
        if synthetic and r > 0:
            counters = {
                "synth-attempts": 36.0,
                "synth-kept": 30.0 - 4 * r,
                "synth-selected": 20.0,
                "synth-rejected-not_novel": 4.0 + 4 * r,
                "synth-rejected-format": 2.0,
                "synth-rejected-copy": 0.0,
                "num-examples": 48.0,
            }
        append_jsonl(
            rd.metrics,
            {
                "round": r,
                "test_loss": test_loss(seed, r),
                "elapsed_s": 10.0 * r,
                "clients": counters,
            },
        )
    if not finished:
        return rd.root
    write_json(
        rd.summary,
        {
            "method": method,
            "beta": beta if beta is not None else 0.5,
            "rounds": 2,
            "data": "fake data",
            "test_loss": {str(r): test_loss(seed, r) for r in range(3)},
            "seconds": 100.0 + seed,
        },
    )
    rouge, auc = values(method, beta, seed)
    judge = None
    if method == "fedavg":
        judge = {"backend": "fake", "model": "m", "wt": 0.5 + 0.1 * seed, "status": "ok"}
    elif method == "fedmit":
        judge = {"backend": "fake", "model": "m", "wt": None, "status": "unavailable: judge failed"}
    write_json(
        rd.root / "eval" / "global__heldout.json",
        {
            "target": "global",
            "round": 2,
            "test_set": "heldout",
            "n": 32,
            "metrics": {"rouge_l": rouge, "token_f1": rouge + 0.05, "semantic": 0.6 + 0.1 * seed},
            "judge": judge,
        },
    )
    for target, rnd, a in (
        ("base", None, 0.5),
        ("round:1", 1, (0.5 + auc) / 2),
        ("global", 2, auc),
    ):
        write_json(
            rd.root / "attack" / f"{target}.json",
            {
                "target": target,
                "round": rnd,
                "n_members": 48,
                "n_non_members": 32,
                "extraction": {
                    "members": {"rouge_l": 0.1 if target == "base" else 0.2 + 0.01 * seed},
                    "non_members": {"rouge_l": 0.1},
                },
                "mia": {
                    "auc": a,
                    "auc_calibrated": None if target == "base" else a - 0.05,
                    "loss_members": 1.5,
                    "loss_non_members": 2.0,
                },
                "canaries": {
                    "n": 2,
                    "emitted": 0,
                    "mean_logprob": -40.0 + 10 * a,
                    "mean_exposure": a,
                },
            },
        )
    return rd.root


def write_grid(root: Path) -> Path:
    """The whole fake grid under ``root`` (a sweep-like directory); returns ``root``."""
    for method, beta in BASE_VALUES:
        for seed in SEEDS:
            name = method if beta is None else f"{method}-b{beta:g}"
            write_run(root / f"{name}-s{seed}", method, beta, seed)
    return root
