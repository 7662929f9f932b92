"""Non-federated baselines with the same run-directory schema as federated runs.

- ``local`` (LocIT): every client trains alone on its private data, round after round.
- ``local-selfgen`` (LocSG): the same, plus self-generated data from its own model,
  selected by IFS and mixed into training (one adapter).
- ``centralized``: all clients' private data pooled, ``train.centralized-epochs``
  epochs in one round (the paper's upper reference; no privacy).

Each is the federated client round with no server in between, so the training code is
exactly the one the federated methods use.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import TYPE_CHECKING, cast

from fedpit.adapters import (
    PUBLIC,
    State,
    get_state,
    initial_state,
    save_adapter,
    set_state,
)
from fedpit.config.schema import RunConfig
from fedpit.data.prepare import RunData, provenance, run_data_for
from fedpit.fed.client import RoundInfo, run_client_round
from fedpit.fed.records import metric_number
from fedpit.fed.server_app import format_round, summarize, test_loss
from fedpit.fed.strategy import aggregate_counters
from fedpit.lm.runtime import Runtime, get_runtime, set_threads
from fedpit.runs.rundir import RunDir, append_jsonl, create_run_dir, write_json

if TYPE_CHECKING:
    from flwr.app.typing import MetricRecordValues

# The client-round method that implements each standalone baseline.
CLIENT_METHOD = {"local": "fedavg", "local-selfgen": "fedmit", "centralized": "fedavg"}


def run_standalone(cfg: RunConfig) -> dict[str, object]:
    """Run a standalone baseline; returns the same summary as a federated run."""
    started = time.perf_counter()
    set_threads(cfg.train.threads)
    rd = create_run_dir(cfg)
    print(f"Run directory: {rd.root}", flush=True)
    run_data = run_data_for(cfg)
    write_json(rd.data, provenance(run_data))
    rt = get_runtime(cfg.model, cfg.lora)
    start = initial_state(get_state(rt.model, PUBLIC), cfg.seed)

    if cfg.method == "centralized":
        pooled = [ex for client in run_data.split.clients for ex in client]
        inner = dataclasses.replace(
            cfg,
            method="fedavg",
            train=dataclasses.replace(cfg.train, local_epochs=cfg.train.centralized_epochs),
        )
        cohorts = [pooled]
        rounds = 1
    else:
        inner = dataclasses.replace(cfg, method=CLIENT_METHOD[cfg.method])
        cohorts = [list(c) for c in run_data.split.clients]
        rounds = cfg.fed.rounds

    _record(rd, rt, run_data, cfg, 0, [start], {}, started, rounds)
    states: list[State] = [start] * len(cohorts)
    for server_round in range(1, rounds + 1):
        counters = []
        for cid, private in enumerate(cohorts):
            info = RoundInfo(cid, server_round, rounds, cfg.seed)
            update = run_client_round(rt, inner, info, private, states[cid], rd.client_dir(cid))
            states[cid] = update.state
            counters.append(update.counters)
            save_adapter(
                update.state,
                cfg.lora,
                cfg.model.name,
                rd.client_dir(cid) / "adapters" / "model",
            )
        merged = _merge(counters)
        _record(rd, rt, run_data, cfg, server_round, states, merged, started, rounds)
    if len(states) == 1:
        save_adapter(states[0], cfg.lora, cfg.model.name, rd.final_adapter)
    summary = summarize(
        rd,
        dataclasses.replace(cfg, fed=dataclasses.replace(cfg.fed, rounds=rounds)),
        run_data,
        time.perf_counter() - started,
    )
    summary["final_adapter"] = (
        str(rd.final_adapter)
        if len(states) == 1
        else str(rd.root / "clients" / "<id>" / "adapters" / "model")
    )
    write_json(rd.summary, summary)
    return summary


def _merge(counters: list[dict[str, float]]) -> dict[str, float]:
    """Sum counts and average timings over clients, as the federated server does."""
    from flwr.app import MetricRecord, RecordDict

    # Cast: MetricRecord only reads the dict; dict's invariance rejects dict[str, float].
    records = [
        RecordDict({"metrics": MetricRecord(cast("dict[str, MetricRecordValues]", c))})
        for c in counters
    ]
    return {k: metric_number(v) for k, v in aggregate_counters(records, "num-examples").items()}


def _record(
    rd: RunDir,
    rt: Runtime,
    run_data: RunData,
    cfg: RunConfig,
    server_round: int,
    states: list[State],
    counters: dict[str, float],
    started: float,
    rounds: int,
) -> None:
    """Test loss of each model (mean over clients), one metrics line, one log line."""
    losses = []
    for state in states:
        set_state(rt.model, PUBLIC, state)
        losses.append(test_loss(rt, run_data, cfg.model.max_length))
    record = {
        "round": server_round,
        "test_loss": statistics.fmean(losses),
        "test_loss_per_model": losses,
        "elapsed_s": time.perf_counter() - started,
        "clients": counters,
    }
    append_jsonl(rd.metrics, record)
    print(format_round(record, rounds), flush=True)
    if server_round > 0 and len(states) == 1:
        save_adapter(states[0], cfg.lora, cfg.model.name, rd.round_adapter(server_round))
