"""Client-level differential privacy on the upload, built from Flower's DP pieces.

With ``dp.mode`` on, every sampled client's update Δ_k = upload_k − global (the LoRA
factors A and B after the β-mix, minus the global factors sent that round) is clipped to
L2 norm ≤ C = ``dp.clip-norm``; the server averages the clipped updates with equal
weights over the m sampled clients and adds N(0, (z·C/m)²) to every coordinate of the
mean, z = ``dp.noise-multiplier``. ``central-fixed`` clips on the server
(:class:`~flwr.serverapp.strategy.DifferentialPrivacyServerSideFixedClipping`),
``client-fixed`` on the client before the upload leaves it (:func:`clip_update`, with
:class:`~flwr.serverapp.strategy.DifferentialPrivacyClientSideFixedClipping` adding the
noise, after the server has checked each update's norm). Flower's RDP accountant turns z
and the number of rounds into (ε, δ).

Two assumptions of Flower's accounted wrappers shape the design rather than being bent:
the mean is unweighted (a DP-mode client reports ``num-examples`` = 1, so n_k never
leaves it), and every sampled client must reply (the round fails otherwise). The
accountant takes no credit for client sampling (``no-amplification``): ε is that of
``fed.rounds`` composed Gaussian releases.

The noise comes from NumPy's global generator, deliberately not derived from ``seed``:
whoever knows a seed could subtract seeded noise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid, RdpAccountant
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.differential_privacy import compute_clip_model_update, get_norm

from fedpit.adapters import State
from fedpit.config.schema import DPConfig
from fedpit.errors import FedPITError
from fedpit.privacy.accounting import rdp_accountant

EPSILON = "dp_epsilon"
"""Key of the ε spent so far in each ``metrics.jsonl`` row (``null`` when nothing is accounted)."""


class KeyAlignedServerSideFixedClipping(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side clipping, given replies in the global adapter's key order.

    The wrapper pairs a reply's tensors with the global's by position, but a client's
    PEFT state lists ``layers.2`` before ``layers.10`` while the round-1 global is
    sorted; a mismatch would subtract another layer's tensor of the same shape.
    """

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Reorder each reply's tensors like the global sent, then clip, average, noise."""
        order = list(self.current_arrays.keys())
        replies = list(replies)
        for msg in replies:
            if not msg.has_error():
                for name, record in list(msg.content.array_records.items()):
                    msg.content[name] = ArrayRecord({k: record[k] for k in order})
        return super().aggregate_train(server_round, replies)


NORM_TOLERANCE = 1e-3
"""Relative slack for float32 rounding when the server re-measures a client-clipped update."""


class UnclippedUpdateError(FedPITError):
    """In ``client-fixed`` mode, a client's update exceeded ``dp.clip-norm``."""


class NormCheckedClientSideFixedClipping(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side clipping, with the server checking every update's norm.

    The noise is calibrated to updates of norm ≤ C: one unclipped upload (a node that
    does not clip, or a tampered one) would void the guarantee, so the round stops.
    """

    current_arrays: ArrayRecord

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global sent, then let Flower configure the round."""
        self.current_arrays = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Refuse the round if an update is longer than C; otherwise average and noise."""
        replies = list(replies)
        sent = {k: a.numpy() for k, a in self.current_arrays.items()}
        for msg in replies:
            for record in [] if msg.has_error() else msg.content.array_records.values():
                norm = get_norm([record[k].numpy().astype(np.float64) - v for k, v in sent.items()])
                if norm > self.clipping_norm * (1 + NORM_TOLERANCE):
                    raise UnclippedUpdateError(
                        f"round {server_round}: node {msg.metadata.src_node_id} sent an update "
                        f"of norm {norm:.6g} > dp.clip-norm = {self.clipping_norm:g}; with "
                        "dp.mode = 'client-fixed' every client must clip before uploading"
                    )
        return super().aggregate_train(server_round, replies)


WRAPPERS: dict[str, type[Strategy]] = {
    "central-fixed": KeyAlignedServerSideFixedClipping,
    "client-fixed": NormCheckedClientSideFixedClipping,
}
"""Flower's strategy wrapper for each ``dp.mode`` other than ``off``."""


def make_accountant(
    dp: DPConfig, population: int, sample_size: int, released: int = 0
) -> RdpAccountant | None:
    """Flower's RDP accountant for ``dp``, or ``None`` without noise (nothing to account).

    Args:
        dp: The DP settings.
        population: The number of clients (``data.num-clients``).
        sample_size: The clients sampled, and aggregated, per round.
        released: Rounds a resumed run has already released (composed up front).
    """
    return rdp_accountant(
        dp.noise_multiplier,
        dp.delta,
        population,
        sample_size,
        max_epsilon=dp.max_epsilon or None,
        released=released,
    )


def epsilon_spent(strategy: Any) -> float | None:
    """The ε spent so far by a DP-wrapped strategy; ``None`` when nothing is accounted."""
    privacy_spent = getattr(strategy, "privacy_spent", None)
    spent = privacy_spent() if privacy_spent is not None else None
    return None if spent is None else spent.epsilon


def dp_summary(dp: DPConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run summary's ``dp`` entry: the settings and the ε after the last round."""
    if not dp.enabled:
        return {"mode": dp.mode}
    return {
        **dataclasses.asdict(dp),
        "epsilon": rows[-1].get(EPSILON) if rows else None,
        "accounting": "rdp, no sampling amplification, add-or-remove-one client",
    }


def update_norm(upload: State, global_state: State) -> float:
    """L2 norm of ``upload − global_state`` over all tensors (Flower's ``get_norm``)."""
    return get_norm(
        [(upload[k].detach().double() - global_state[k].detach().double()).numpy() for k in upload]
    )


def clip_update(upload: State, global_state: State, clip_norm: float) -> State:
    """``global_state + Δ·min(1, C/‖Δ‖)`` with Δ = ``upload − global_state``.

    The maths is Flower's ``compute_clip_model_update`` (what ``fixedclipping_mod``
    runs), applied here, before the node audits the upload, with tensors paired by key.
    """
    keys = list(upload)
    clipped = [upload[k].detach().cpu().numpy().copy() for k in keys]
    compute_clip_model_update(
        param1=clipped,
        param2=[global_state[k].detach().cpu().numpy() for k in keys],
        clipping_norm=clip_norm,
    )
    return {
        k: torch.from_numpy(np.ascontiguousarray(a)).to(upload[k].dtype)
        for k, a in zip(keys, clipped, strict=True)
    }
