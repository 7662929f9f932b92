"""Flower ServerApp: FedPIT's server recipe (parse → build → federate → report)."""

from __future__ import annotations

import random
import shutil
import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedpit.adapters import (
    PUBLIC,
    get_state,
    initial_state,
    is_identity,
    save_adapter,
    set_state,
)
from fedpit.config.load import from_flat
from fedpit.config.schema import RunConfig
from fedpit.data.prepare import RunData, provenance, run_data_for
from fedpit.errors import ConfigError
from fedpit.fed.records import (
    config_to_record,
    metric_number,
    record_to_state,
    state_to_record,
)
from fedpit.fed.server_state import (
    ServerState,
    load_server_state,
    rng_state,
    save_server_state,
    set_rng_state,
)
from fedpit.fed.strategy import Problem, build_strategy
from fedpit.lm.base_cache import cached
from fedpit.lm.runtime import Runtime, get_runtime, set_threads
from fedpit.lm.scoring import response_nll
from fedpit.privacy.allowlist import EVAL_LOSS, SPAN_BLOCKED, SYNTH_EMPTY
from fedpit.privacy.dp import EPSILON, dp_summary, epsilon_spent
from fedpit.runs.rundir import RunDir, append_jsonl, create_run_dir, write_json, write_jsonl


def test_losses(rt: Runtime, run_data: RunData, max_length: int) -> list[float]:
    """Response NLL of each held-out test example (in split order) under ``public``.

    Kept per example so that two runs on the same test set can be compared paired.
    """
    rt.model.set_adapter(PUBLIC)
    test = run_data.split.test
    if not test:
        return []
    return response_nll(
        rt.model,
        rt.tokenizer,
        [rt.fmt.prompt(e) for e in test],
        [e.output for e in test],
        max_length,
    )


def global_test_losses(
    rt: Runtime, run_data: RunData, max_length: int, state: Mapping[str, torch.Tensor]
) -> list[float]:
    """:func:`test_losses` of the global model ``state`` (loaded into ``public``).

    A global model that changes nothing (round 0: the LoRA B matrices are zero) is the
    base model, whose losses on a test set are the same in every run: they are kept in
    the base-output cache (:mod:`fedpit.lm.base_cache`), so a run after the first on a
    machine does not recompute them.
    """
    set_state(rt.model, PUBLIC, state)
    if not is_identity(state):
        return test_losses(rt, run_data, max_length)
    test = run_data.split.test
    key = {
        "prompts": [rt.fmt.prompt(e) for e in test],
        "responses": [e.output for e in test],
        "max_length": max_length,
    }
    return cached(rt, "response-nll", key, lambda: test_losses(rt, run_data, max_length))


def test_loss(rt: Runtime, run_data: RunData, max_length: int) -> float:
    """Mean response NLL of the held-out test set under the ``public`` adapter."""
    losses = test_losses(rt, run_data, max_length)
    return statistics.fmean(losses) if losses else float("nan")


def run_server(grid: Grid, cfg: RunConfig, rd: RunDir) -> dict[str, object]:
    """Federate ``cfg.fed.rounds`` rounds on ``grid``; write everything into ``rd``.

    A run directory holding a server state continues after its last completed round
    (``fedpit run --resume``): same global adapter, optimiser state, sampling RNG and
    metrics, and the remaining rounds keep their true numbers.
    """
    started = time.perf_counter()
    nodes = len(list(grid.get_node_ids()))
    if nodes > cfg.data.num_clients:
        raise ConfigError(
            f"the federation has {nodes} SuperNodes but data.num-clients = "
            f"{cfg.data.num_clients}; make them equal (flwr run: --federation-config "
            f"'num-supernodes={cfg.data.num_clients}')"
        )
    set_threads(cfg.train.threads)
    run_data = run_data_for(cfg)
    write_json(rd.data, provenance(run_data))
    rt = get_runtime(cfg.model, cfg.lora)
    template = get_state(rt.model, PUBLIC)  # what every client upload must look like
    saved = load_server_state(rd.server_state)
    if saved is None:
        random.seed(cfg.seed)  # Flower samples each round's nodes with Python's random
        initial = state_to_record(initial_state(template, cfg.seed))
        done, rows = 0, []
    else:
        if saved.rng is not None:
            set_rng_state(saved.rng)
        initial = state_to_record({k: torch.tensor(v) for k, v in saved.arrays.items()})
        done, rows = saved.round, saved.metrics
        started -= saved.elapsed_s
        print(f"Resuming {rd.root} after round {done}/{cfg.fed.rounds}", flush=True)
    write_jsonl(rd.metrics, rows)  # drop any row of an interrupted round
    round_metrics: dict[int, dict[str, float]] = {}
    client_eval: dict[int, float] = {}

    def on_evaluate(server_round: int, metrics: MetricRecord | None) -> None:
        if metrics is not None and EVAL_LOSS in metrics:
            client_eval[server_round] = metric_number(metrics[EVAL_LOSS])

    def on_round(server_round: int, arrays: ArrayRecord, metrics: MetricRecord | None) -> None:
        save_adapter(
            record_to_state(arrays),
            cfg.lora,
            cfg.model.name,
            rd.round_adapter(server_round),
        )
        # aggregate_counters' sums and the rejected/failed counts: all scalars.
        round_metrics[server_round] = {k: metric_number(v) for k, v in (metrics or {}).items()}

    def on_problems(server_round: int, problems: list[Problem]) -> None:
        for problem in problems:
            append_jsonl(rd.failures, {"round": server_round, **problem})

    def evaluate(flower_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        server_round = flower_round + done
        if saved is not None and flower_round == 0:
            return None  # the resumed global model was evaluated before the interruption
        per_example = global_test_losses(
            rt, run_data, cfg.model.max_length, record_to_state(arrays)
        )
        loss = statistics.fmean(per_example) if per_example else float("nan")
        record: dict[str, Any] = {
            "round": server_round,
            "test_loss": loss,
            "test_losses": per_example,
            "client_eval_loss": client_eval.get(server_round),
            "elapsed_s": time.perf_counter() - started,
            "clients": round_metrics.get(server_round, {}),
            "problems": strategy.problems.get(server_round, []),
            EPSILON: epsilon_spent(strategy),  # None unless dp.mode is on with noise
        }
        append_jsonl(rd.metrics, record)
        rows.append(record)
        # The last step of a round: from here on, a killed server resumes after it.
        save_server_state(
            rd.server_state,
            ServerState(
                round=server_round,
                arrays={k: a.numpy() for k, a in arrays.items()},
                optimizer=strategy.optimizer_state(),
                rng=rng_state(),
                metrics=rows,
                elapsed_s=record["elapsed_s"],
            ),
        )
        print(format_round(record, cfg.fed.rounds), flush=True)
        return MetricRecord({"test-loss": loss})

    strategy = build_strategy(
        cfg,
        on_round,
        on_evaluate,
        on_problems,
        round_offset=done,
        template={k: v.cpu().numpy() for k, v in template.items()},
    )
    if saved is not None:
        strategy.load_optimizer_state(saved.optimizer)
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=cfg.fed.rounds - done,
        # None: no limit. Flower annotates start()'s timeout as float, but passes it on to
        # Grid.send_and_receive, whose None means "wait for every reply".
        timeout=cfg.fed.round_timeout or None,  # type: ignore[arg-type]
        train_config=config_to_record(cfg, str(rd.root), rt.fingerprint),
        evaluate_config=config_to_record(cfg, str(rd.root), rt.fingerprint),
        evaluate_fn=evaluate,
    )
    last = rd.round_adapter(cfg.fed.rounds)
    if last.exists():
        if rd.final_adapter.exists():
            shutil.rmtree(rd.final_adapter)
        shutil.copytree(last, rd.final_adapter)
    summary = summarize(rd, cfg, run_data, time.perf_counter() - started)
    write_json(rd.summary, summary)
    return summary


def format_round(record: dict[str, Any], num_rounds: int) -> str:
    """One human-readable log line per round."""
    c = record.get("clients", {})
    text = f"round {record['round']}/{num_rounds} | test loss {record['test_loss']:.4f}"
    if record.get("client_eval_loss") is not None:
        text += f" | clients' held-out loss {record['client_eval_loss']:.4f}"
    if c.get("synth-attempts"):
        text += (
            f" | synthetic kept {c.get('synth-kept', 0):.0f}/{c['synth-attempts']:.0f}"
            f", selected {c.get('synth-selected', 0):.0f}"
        )
        if c.get(SPAN_BLOCKED):
            text += f", blocked (copied span) {c[SPAN_BLOCKED]:.0f}"
    if c.get(SYNTH_EMPTY):
        text += f" | WARNING: {c[SYNTH_EMPTY]:.0f} client(s) kept no synthetic candidate"
    return text + f" | {record['elapsed_s']:.0f} s"


def summarize(rd: RunDir, cfg: RunConfig, run_data: RunData, seconds: float) -> dict[str, object]:
    """The run's summary: configuration essentials, per-round losses, synthetic yield."""
    from fedpit.runs.rundir import read_jsonl

    rows = read_jsonl(rd.metrics) if rd.metrics.exists() else []
    rounds = [r for r in rows if r["round"] > 0]
    synth = {
        k: sum(r["clients"].get(k, 0.0) for r in rounds)
        for k in ("synth-attempts", "synth-kept", "synth-selected", SPAN_BLOCKED)
    }
    client_rounds = int(sum(r["clients"].get("clients", 0) for r in rounds))
    return {
        "method": cfg.method,
        "beta": cfg.fed.beta,
        "rounds": cfg.fed.rounds,
        "data": run_data.description,
        "clients": [len(c) for c in run_data.split.clients],
        "test_examples": len(run_data.split.test),
        "test_loss": {str(r["round"]): r["test_loss"] for r in rows},
        "synthetic": synth,
        "client_rounds": client_rounds,
        "selected_per_client_round": synth["synth-selected"] / max(1, client_rounds),
        "seconds": seconds,
        "run_dir": str(rd.root),
        "final_adapter": str(rd.final_adapter),
        "dp": dp_summary(cfg.dp, rows),
    }


def make_server_app(preset: tuple[RunConfig, RunDir] | None = None) -> ServerApp:
    """A ServerApp; ``preset`` carries a parsed config and run dir from ``fedpit run``.

    Without it (``flwr run .``) the configuration comes from the Flower run config.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if preset is not None:
            cfg, rd = preset
        else:
            cfg = from_flat(dict(context.run_config))
            rd = create_run_dir(cfg)
        run_server(grid, cfg, rd)

    return app


app = make_server_app()
