"""Server strategies: Flower's FedAvg / FedProx / FedAdam plus per-round recording.

FedPIT's server is FedAvg weighted by n_k (``num-examples``); the client does the rest.
The recording layer only observes: it saves each round's global adapter and keeps the
round's client counters; it never changes what Flower aggregates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from fedpit.config import RunConfig
from fedpit.privacy import NUM_EXAMPLES

CLIENTS = "clients"
"""Server-side count of the clients whose updates a round aggregated (not uploaded)."""

RoundHook = Callable[[int, ArrayRecord, MetricRecord | None], None]
EvalHook = Callable[[int, MetricRecord | None], None]


def aggregate_counters(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Sum the clients' counters; average the ``seconds-*`` timings.

    Counts (synthetic attempts, kept, rejected, bytes, n_k) are totals over the round's
    clients; timings are the mean per client; ``clients`` is how many replied.
    """
    totals: dict[str, float] = {}
    for record in records:
        metrics = next(iter(record.metric_records.values()))
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value)  # type: ignore[arg-type]
    n = max(1, len(records))
    out = {k: (v / n if k.startswith("seconds-") else v) for k, v in totals.items()}
    out[CLIENTS] = float(len(records))
    del weight_key
    return MetricRecord(out)


def _recording(base: type[FedAvg]) -> type[FedAvg]:
    class Recording(base):  # type: ignore[misc, valid-type]
        """``base`` with a hook after every aggregation."""

        def __init__(
            self, *, on_round: RoundHook, on_evaluate: EvalHook | None = None, **kwargs: Any
        ) -> None:
            super().__init__(**kwargs)
            self.on_round = on_round
            self.on_evaluate = on_evaluate

        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            arrays, metrics = super().aggregate_train(server_round, replies)
            if arrays is not None:
                self.on_round(server_round, arrays, metrics)
            return arrays, metrics

        def aggregate_evaluate(
            self, server_round: int, replies: Iterable[Message]
        ) -> MetricRecord | None:
            metrics = super().aggregate_evaluate(server_round, replies)
            if self.on_evaluate is not None:
                self.on_evaluate(server_round, metrics)
            return metrics

    Recording.__name__ = Recording.__qualname__ = base.__name__
    return Recording


def build_strategy(
    cfg: RunConfig, on_round: RoundHook, on_evaluate: EvalHook | None = None
) -> FedAvg:
    """The Flower strategy for ``cfg.method`` (all sample the same clients per round).

    Federated evaluation (each sampled client scores the new global model on its private
    held-out examples) runs when ``eval.client-test-size > 0``.
    """
    per_round = cfg.fed.clients_per_round or cfg.data.num_clients
    fraction = per_round / cfg.data.num_clients
    evaluate = cfg.eval.client_test_size > 0
    common: dict[str, Any] = {
        "fraction_train": fraction,
        "min_train_nodes": per_round,
        "min_available_nodes": cfg.data.num_clients,
        "fraction_evaluate": fraction if evaluate else 0.0,
        "min_evaluate_nodes": per_round if evaluate else 0,
        "weighted_by_key": NUM_EXAMPLES,
        "train_metrics_aggr_fn": aggregate_counters,
        "on_round": on_round,
        "on_evaluate": on_evaluate,
    }
    if cfg.method == "fedprox":
        return _recording(FedProx)(proximal_mu=cfg.fed.proximal_mu, **common)
    if cfg.method == "fedadam":
        return _recording(FedAdam)(eta=cfg.fed.server_lr, tau=cfg.fed.server_tau, **common)
    return _recording(FedAvg)(**common)
