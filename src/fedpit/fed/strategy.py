"""Server strategies: Flower's FedAvg / FedProx / FedAdam plus screening and recording.

FedPIT's server is FedAvg weighted by n_k (``num-examples``); the client does the rest.
The layer added here never changes Flower's aggregation maths. Before it, every reply is
screened: failed replies (a crashed ClientApp), missing ones (no reply before the round
timeout) and uploads that do not fit the global adapter (:mod:`fedpit.fed.validation`) are
dropped, logged and kept in :attr:`problems`; Flower aggregates only the valid ones.
After it, a hook saves each round's global adapter. A round offset lets a resumed run
keep the rounds' true numbers (clients derive seeds and the learning rate from them).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)

from fedpit.config.schema import RunConfig
from fedpit.errors import FedPITError
from fedpit.fed.records import ARRAYS, metric_number
from fedpit.fed.robust import bound_norms
from fedpit.fed.validation import check_update
from fedpit.privacy.allowlist import NUM_EXAMPLES
from fedpit.privacy.dp import WRAPPERS, make_accountant

if TYPE_CHECKING:
    from flwr.app.typing import MetricRecordValues

log = logging.getLogger(__name__)

CLIENTS = "clients"
"""Server-side count of the clients whose updates a round aggregated (not uploaded)."""
REJECTED = "rejected"
"""Server-side count of the uploads a round refused after validation (not uploaded)."""
FAILED = "failed"
"""Server-side count of the sampled clients that failed or did not reply (not uploaded)."""
MOMENTS = ("m_t", "v_t")
"""The attributes holding Flower's FedOpt (FedAdam) server-optimiser state."""
MAX_REASON = 2000
"""Longest client error text kept (a crashed ClientApp's reason holds its traceback)."""
ANSI = re.compile(r"\x1b\[[0-9;]*m")
"""Terminal colour codes, which Ray puts into a simulated client's traceback."""

RoundHook = Callable[[int, ArrayRecord, MetricRecord | None], None]
EvalHook = Callable[[int, MetricRecord | None], None]
Problem = dict[str, object]
"""One dropped client in a round: ``node`` id, ``kind`` (error, timeout, rejected), ``reason``."""
ProblemHook = Callable[[int, list[Problem]], None]

if TYPE_CHECKING:

    class RecordingStrategy(Strategy):
        """What :func:`build_strategy` returns: a Flower strategy with the recording layer.

        Only for type checking: :func:`_recording` subclasses a Flower strategy class
        chosen at run time, which a static type cannot name.
        """

        problems: dict[int, list[Problem]]

        def optimizer_state(self) -> dict[str, np.ndarray]:
            """The server optimiser's state as ``<name>/<key>`` arrays."""
            ...

        def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
            """Restore what :meth:`optimizer_state` returned."""
            ...


class RoundFailedError(FedPITError):
    """Fewer valid client updates than ``fed.min-clients`` arrived in a round."""


def aggregate_counters(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Sum the clients' counters; average the ``seconds-*`` timings.

    Counts (synthetic attempts, kept, rejected, bytes, n_k) are totals over the round's
    clients; timings are the mean per client; ``clients`` is how many replied.
    """
    totals: dict[str, float] = {}
    for record in records:
        metrics = next(iter(record.metric_records.values()))
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + metric_number(value)
    n = max(1, len(records))
    out: dict[str, MetricRecordValues] = {
        k: (v / n if k.startswith("seconds-") else v) for k, v in totals.items()
    }
    out[CLIENTS] = float(len(records))
    del weight_key
    return MetricRecord(out)


def screen_reply(content: RecordDict, expected: dict[str, np.ndarray]) -> str | None:
    """Why a training reply must not be aggregated, or ``None`` (see fedpit.fed.validation)."""
    arrays, metrics = content.array_records, content.metric_records
    if len(arrays) != 1 or len(metrics) != 1:
        return (
            f"expected one ArrayRecord and one MetricRecord, got {len(arrays)} and {len(metrics)}"
        )
    try:
        update = {k: a.numpy() for k, a in next(iter(arrays.values())).items()}
    except Exception as err:  # a malformed payload is a reason to refuse, not to crash
        return f"unreadable adapter tensors: {err}"
    return check_update(update, dict(next(iter(metrics.values()))), expected)


def _last_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of a (traceback) text, shortened for a one-line message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    return last if len(last) <= limit else "…" + last[-limit:]


def _evaluated_examples(replies: list[Message]) -> float:
    """Total ``num-examples`` weight of the evaluate replies that carry metrics."""
    total = 0.0
    for msg in replies:
        if msg.has_error():
            continue
        for record in msg.content.metric_records.values():
            total += metric_number(record.get(NUM_EXAMPLES, 0.0))
    return total


def _recording(base: type[Strategy]) -> Callable[..., RecordingStrategy]:
    # mypy takes no variable as a base class; RecordingStrategy types the result.
    class Recording(base):  # type: ignore[misc, valid-type]
        """``base`` that screens replies, records problems and hooks every aggregation."""

        def __init__(
            self,
            *,
            on_round: RoundHook,
            on_evaluate: EvalHook | None = None,
            on_problems: ProblemHook | None = None,
            min_replies: int = 1,
            round_offset: int = 0,
            template: dict[str, np.ndarray] | None = None,
            norm_bound: float = 0.0,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.norm_bound = norm_bound
            self._global: dict[str, np.ndarray] = {}
            self.on_round = on_round
            self.on_evaluate = on_evaluate
            self.on_problems = on_problems
            self.min_replies = min_replies
            self.round_offset = round_offset
            self.problems: dict[int, list[Problem]] = {}
            self.template = template
            self._expected: dict[str, np.ndarray] | None = None
            self._sampled: list[int] = []

        def configure_train(
            self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
        ) -> Iterable[Message]:
            messages = list(
                super().configure_train(server_round + self.round_offset, arrays, config, grid)
            )
            # An upload must look like the clients' adapter: the template when given, as
            # Flower's FedAdam returns float64 arrays, which clients train back in float32.
            self._expected = self.template or {k: a.numpy() for k, a in arrays.items()}
            self._global = {k: a.numpy() for k, a in arrays.items()}
            self._sampled = [m.metadata.dst_node_id for m in messages]
            return messages

        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            server_round += self.round_offset
            valid, problems = self._screen(list(replies))
            self.problems[server_round] = problems
            for p in problems:
                log.warning(
                    "round %d: dropped node %s (%s): %s",
                    server_round,
                    p["node"],
                    p["kind"],
                    p["reason"],
                )
            if problems and self.on_problems is not None:
                self.on_problems(server_round, problems)
            if len(valid) < self.min_replies:
                listed = "; ".join(
                    f"node {p['node']} {p['kind']}: {_last_line(str(p['reason']))}"
                    for p in problems
                )
                raise RoundFailedError(
                    f"round {server_round}: {len(valid)} valid update(s) from "
                    f"{len(self._sampled)} sampled client(s), fewer than fed.min-clients = "
                    f"{self.min_replies}; nothing was aggregated ({listed or 'no replies'}; "
                    "full reasons in the run directory's failures.jsonl)"
                )
            if self.norm_bound > 0:
                self._bound(server_round, valid)
            arrays, metrics = super().aggregate_train(server_round, valid)
            if metrics is not None:
                metrics[REJECTED] = float(sum(p["kind"] == "rejected" for p in problems))
                metrics[FAILED] = float(sum(p["kind"] != "rejected" for p in problems))
            if arrays is not None:
                self.on_round(server_round, arrays, metrics)
            return arrays, metrics

        def _bound(self, server_round: int, valid: list[Message]) -> None:
            """Cap each valid update at ``norm_bound`` × the round's median distance."""
            updates = [
                {k: a.numpy() for k, a in cast(ArrayRecord, m.content[ARRAYS]).items()}
                for m in valid
            ]
            bounded, scales = bound_norms(updates, self._global, self.norm_bound)
            for msg, arrays, scale in zip(valid, bounded, scales, strict=True):
                if scale < 1.0:
                    log.warning(
                        "round %d: node %s's update scaled by %.3g to %g× the median norm",
                        server_round,
                        msg.metadata.src_node_id,
                        scale,
                        self.norm_bound,
                    )
                    msg.content[ARRAYS] = ArrayRecord({k: Array(v) for k, v in arrays.items()})

        def _screen(self, replies: list[Message]) -> tuple[list[Message], list[Problem]]:
            """Split replies into valid ones and problems (error, rejected, timeout)."""
            if self._expected is None:
                raise RuntimeError("aggregate_train called before configure_train")
            valid: list[Message] = []
            problems: list[Problem] = []
            replied = set()
            for msg in replies:
                node = msg.metadata.src_node_id
                replied.add(node)
                if msg.has_error():
                    reason = ANSI.sub("", str(msg.error.reason or f"code {msg.error.code}"))
                    problems.append({"node": node, "kind": "error", "reason": reason[-MAX_REASON:]})
                elif (rejection := screen_reply(msg.content, self._expected)) is not None:
                    problems.append({"node": node, "kind": "rejected", "reason": rejection})
                else:
                    valid.append(msg)
            for node in self._sampled:
                if node not in replied:
                    problems.append({"node": node, "kind": "timeout", "reason": "no reply in time"})
            return valid, problems

        def configure_evaluate(
            self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
        ) -> Iterable[Message]:
            messages: Iterable[Message] = super().configure_evaluate(
                server_round + self.round_offset, arrays, config, grid
            )
            return messages

        def aggregate_evaluate(
            self, server_round: int, replies: Iterable[Message]
        ) -> MetricRecord | None:
            server_round += self.round_offset
            replies = list(replies)
            # Nodes without held-out examples reply with weight 0; if none has any, there
            # is nothing to average (Flower's weighted mean would divide by zero).
            metrics = (
                super().aggregate_evaluate(server_round, replies)
                if _evaluated_examples(replies) > 0
                else None
            )
            if self.on_evaluate is not None:
                self.on_evaluate(server_round, metrics)
            return metrics

        def optimizer_state(self) -> dict[str, np.ndarray]:
            """The server optimiser's state (FedAdam's moments) as ``<name>/<key>`` arrays."""
            return {
                f"{name}/{key}": value
                for name in MOMENTS
                for key, value in (getattr(self, name, None) or {}).items()
            }

        def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
            """Restore what :meth:`optimizer_state` returned (resuming a run)."""
            for name in MOMENTS:
                prefix = f"{name}/"
                moments = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                if moments:
                    setattr(self, name, moments)

    Recording.__name__ = Recording.__qualname__ = base.__name__
    return Recording


def build_strategy(
    cfg: RunConfig,
    on_round: RoundHook,
    on_evaluate: EvalHook | None = None,
    on_problems: ProblemHook | None = None,
    round_offset: int = 0,
    template: dict[str, np.ndarray] | None = None,
) -> RecordingStrategy:
    """The Flower strategy for ``cfg.method`` (all sample the same clients per round).

    Federated evaluation (each sampled client scores the new global model on its private
    held-out examples) runs when ``eval.client-test-size > 0``. A round aggregates when
    at least ``fed.min-clients`` valid updates arrived; an update must match ``template``
    (the clients' adapter: keys, shapes, dtypes; default: the global adapter sent).
    ``round_offset`` is the number of rounds a resumed run has already completed.
    With ``dp.mode`` on, see :func:`_private`.
    """
    per_round = cfg.fed.clients_per_round or cfg.data.num_clients
    fraction = per_round / cfg.data.num_clients
    # Under DP a node's evaluation reply is an un-noised private-data loss: asked for only
    # when the run says so (and each node's policy still decides).
    evaluate = cfg.eval.client_test_size > 0 and (not cfg.dp.enabled or cfg.eval.with_dp)
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
        "on_problems": on_problems,
        "min_replies": cfg.fed.min_clients,
        "round_offset": round_offset,
        "template": template,
        "norm_bound": cfg.fed.norm_bound,
    }
    if cfg.dp.enabled:
        return _private(cfg, common, per_round)
    if cfg.method == "fedprox":
        return _recording(FedProx)(proximal_mu=cfg.fed.proximal_mu, **common)
    if cfg.method == "fedadam":
        return _recording(FedAdam)(eta=cfg.fed.server_lr, tau=cfg.fed.server_tau, **common)
    return _robust(cfg, common)


def _robust(cfg: RunConfig, common: dict[str, Any]) -> RecordingStrategy:
    """FedAvg, or the robust aggregator ``fed.aggregation`` names (Flower's own)."""
    f = cfg.fed.malicious_clients
    match cfg.fed.aggregation:
        case "trimmed-mean":
            return _recording(FedTrimmedAvg)(beta=cfg.fed.trim_fraction, **common)
        case "median":
            return _recording(FedMedian)(**common)
        case "krum":
            return _recording(Krum)(num_malicious_nodes=f, **common)
        case "multi-krum":
            return _recording(MultiKrum)(num_malicious_nodes=f, **common)
        case "bulyan":
            return _recording(Bulyan)(num_malicious_nodes=f, **common)
    return _recording(FedAvg)(**common)


RECORDING_KEYS = (
    "on_round",
    "on_evaluate",
    "on_problems",
    "min_replies",
    "round_offset",
    "template",
    "norm_bound",
)
"""The arguments of the recording layer (the rest configure Flower's strategy)."""


def _private(cfg: RunConfig, common: dict[str, Any], per_round: int) -> RecordingStrategy:
    """FedAvg (or FedProx) inside Flower's DP wrapper for ``cfg.dp.mode``, recorded outside.

    The recording layer wraps the DP wrapper, not the reverse: it screens replies before
    they are clipped, it saves the *noised* global adapter, and Flower's accountant only
    accepts an inner strategy that aggregates with ``FedAvg.aggregate_train`` unchanged.
    Every sampled client must reply (``fed.min-clients`` is raised to the sample size):
    the wrapper's noise is calibrated to a mean over exactly ``per_round`` updates.
    """
    own = {key: common.pop(key) for key in RECORDING_KEYS}
    own["min_replies"] = per_round
    if cfg.method == "fedprox":
        inner: FedAvg = FedProx(proximal_mu=cfg.fed.proximal_mu, **common)
    else:
        inner = FedAvg(**common)
    accountant = make_accountant(
        cfg.dp, cfg.data.num_clients, per_round, released=own["round_offset"]
    )
    return _recording(WRAPPERS[cfg.dp.mode])(
        strategy=inner,
        noise_multiplier=cfg.dp.noise_multiplier,
        clipping_norm=cfg.dp.clip_norm,
        num_sampled_clients=per_round,
        accountant=accountant,
        **own,
    )
