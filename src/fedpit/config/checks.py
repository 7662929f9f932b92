"""What values each configuration key allows, with one clear message each.

Every check raises :class:`~fedpit.errors.ConfigError` naming the key, its value and what
is allowed. This module imports the constants and dataclass types from :mod:`fedpit.config.schema`,
which imports :func:`validate` only inside ``from_flat``, so neither needs the other at
import time.
"""

from __future__ import annotations

import math
from typing import Any

from fedpit.config.schema import (
    AGGREGATIONS,
    BASE_DTYPES,
    DEVICE_PATTERN,
    DP_METHODS,
    DP_MODES,
    METHODS,
    MIX_MODES,
    PARTITIONS,
    POISONS,
    TEMPLATES,
    RunConfig,
)
from fedpit.errors import ConfigError
from fedpit.privacy.accounting import projected_epsilon


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid; allowed: {allowed}")


def validate(cfg: RunConfig) -> None:
    """Check value ranges and cross-key constraints; raise :class:`ConfigError`."""
    _check(cfg.method in METHODS, "method", cfg.method, ", ".join(METHODS))
    _check(cfg.seed >= 0, "seed", cfg.seed, "an integer ≥ 0")
    _check(cfg.data.seed >= 0, "data.seed", cfg.data.seed, "an integer ≥ 0")
    _check(
        cfg.data.partition in PARTITIONS,
        "data.partition",
        cfg.data.partition,
        ", ".join(PARTITIONS),
    )
    _check(
        cfg.data.num_clients >= 1,
        "data.num-clients",
        cfg.data.num_clients,
        "an integer ≥ 1",
    )
    _check(
        cfg.data.examples_per_client >= 1,
        "data.examples-per-client",
        cfg.data.examples_per_client,
        "an integer ≥ 1",
    )
    _check(cfg.data.test_size >= 0, "data.test-size", cfg.data.test_size, "an integer ≥ 0")
    _check(
        cfg.data.dirichlet_alpha > 0,
        "data.dirichlet-alpha",
        cfg.data.dirichlet_alpha,
        "> 0",
    )
    _check(cfg.data.num_clusters >= 1, "data.num-clusters", cfg.data.num_clusters, "an integer ≥ 1")
    _check(
        cfg.data.non_members_per_client >= 0,
        "data.non-members-per-client",
        cfg.data.non_members_per_client,
        "an integer ≥ 0 (0 = as many as the client's training examples)",
    )
    _check(cfg.model.max_length >= 16, "model.max-length", cfg.model.max_length, "≥ 16")
    _check(
        cfg.model.template in TEMPLATES,
        "model.template",
        cfg.model.template,
        ", ".join(TEMPLATES),
    )
    _check(
        DEVICE_PATTERN.fullmatch(cfg.model.device) is not None,
        "model.device",
        cfg.model.device,
        "auto, cpu, cuda, cuda:N, mps",
    )
    _check(
        cfg.model.dtype in ("float32", "bfloat16", "float16"),
        "model.dtype",
        cfg.model.dtype,
        "float32, bfloat16, float16",
    )
    _check(cfg.lora.rank >= 1, "lora.rank", cfg.lora.rank, "an integer ≥ 1")
    _check(cfg.lora.alpha >= 1, "lora.alpha", cfg.lora.alpha, "an integer ≥ 1")
    _check(
        bool(cfg.lora.modules),
        "lora.target-modules",
        cfg.lora.target_modules,
        "comma-separated module names, e.g. q_proj,v_proj",
    )
    _check(0 <= cfg.lora.dropout < 1, "lora.dropout", cfg.lora.dropout, "[0, 1)")
    _check(cfg.train.lr > 0, "train.lr", cfg.train.lr, "> 0")
    _check(
        0 <= cfg.train.lr_min <= cfg.train.lr,
        "train.lr-min",
        cfg.train.lr_min,
        "[0, train.lr]",
    )
    _check(cfg.train.batch_size >= 1, "train.batch-size", cfg.train.batch_size, "≥ 1")
    _check(
        cfg.train.micro_batch_size >= 0,
        "train.micro-batch-size",
        cfg.train.micro_batch_size,
        "≥ 0 (0 = the whole batch at once)",
    )
    _check(cfg.train.local_epochs >= 1, "train.local-epochs", cfg.train.local_epochs, "≥ 1")
    _check(
        cfg.train.public_lr >= 0,
        "train.public-lr",
        cfg.train.public_lr,
        "≥ 0 (0 = train.lr)",
    )
    _check(
        cfg.train.public_epochs >= 0,
        "train.public-epochs",
        cfg.train.public_epochs,
        "≥ 0 (0 = train.local-epochs)",
    )
    _check(
        cfg.train.centralized_epochs >= 1,
        "train.centralized-epochs",
        cfg.train.centralized_epochs,
        "≥ 1",
    )
    _check(cfg.train.weight_decay >= 0, "train.weight-decay", cfg.train.weight_decay, "≥ 0")
    _check(
        cfg.train.max_grad_norm >= 0,
        "train.max-grad-norm",
        cfg.train.max_grad_norm,
        "≥ 0 (0 = no clipping)",
    )
    _check(
        cfg.train.threads >= 0,
        "train.threads",
        cfg.train.threads,
        "≥ 0 (0 = automatic)",
    )
    _check(
        cfg.train.base_dtype in BASE_DTYPES,
        "train.base-dtype",
        cfg.train.base_dtype,
        ", ".join(BASE_DTYPES),
    )
    _check(cfg.fed.rounds >= 1, "fed.rounds", cfg.fed.rounds, "an integer ≥ 1")
    _check(0.0 <= cfg.fed.beta <= 1.0, "fed.beta", cfg.fed.beta, "a number in [0, 1]")
    _check(cfg.fed.mix in MIX_MODES, "fed.mix", cfg.fed.mix, ", ".join(MIX_MODES))
    _check(cfg.synth.keep >= 1, "synth.keep", cfg.synth.keep, "≥ 1")
    _check(cfg.fed.proximal_mu >= 0, "fed.proximal-mu", cfg.fed.proximal_mu, "≥ 0")
    _check(cfg.fed.server_lr > 0, "fed.server-lr", cfg.fed.server_lr, "> 0")
    _check(cfg.fed.server_tau > 0, "fed.server-tau", cfg.fed.server_tau, "> 0")
    _check(cfg.fed.gpus_per_client >= 0, "fed.gpus-per-client", cfg.fed.gpus_per_client, "≥ 0")
    _check(
        cfg.fed.parallel_clients >= 0,
        "fed.parallel-clients",
        cfg.fed.parallel_clients,
        "≥ 0 (0 = all sampled clients at once)",
    )
    _check(
        cfg.fed.cpus_per_client >= 1,
        "fed.cpus-per-client",
        cfg.fed.cpus_per_client,
        "≥ 1",
    )
    _check(
        0 <= cfg.fed.clients_per_round <= cfg.data.num_clients,
        "fed.clients-per-round",
        cfg.fed.clients_per_round,
        f"0 (all) to data.num-clients = {cfg.data.num_clients}",
    )
    per_round = cfg.fed.clients_per_round or cfg.data.num_clients
    _check(
        1 <= cfg.fed.min_clients <= per_round,
        "fed.min-clients",
        cfg.fed.min_clients,
        f"1 to the clients sampled per round = {per_round}",
    )
    _check(
        cfg.fed.round_timeout >= 0,
        "fed.round-timeout",
        cfg.fed.round_timeout,
        "≥ 0 seconds (0 = wait for every sampled client)",
    )
    _check(
        cfg.eval.client_test_size >= 0,
        "eval.client-test-size",
        cfg.eval.client_test_size,
        "≥ 0 (0 = no federated evaluation)",
    )
    _check(cfg.attack.canaries >= 0, "attack.canaries", cfg.attack.canaries, "≥ 0")
    _check(
        0 <= cfg.attack.canary_client < cfg.data.num_clients,
        "attack.canary-client",
        cfg.attack.canary_client,
        f"0 to data.num-clients − 1 = {cfg.data.num_clients - 1}",
    )
    _validate_robust(cfg)
    _validate_dp(cfg)
    _check(cfg.synth.attempts >= 1, "synth.attempts", cfg.synth.attempts, "≥ 1")
    _check(
        cfg.synth.novelty in ("rouge", "focus"),
        "synth.novelty",
        cfg.synth.novelty,
        "rouge, focus",
    )


AVERAGING = ("fedpit", "fedpit-v1", "fedavg", "fedavg-damped", "fedmit")
"""Methods whose server averages the uploads as FedAvg does (a robust aggregator may
replace the mean)."""


def _validate_robust(cfg: RunConfig) -> None:
    """Check the robust-aggregation and poisoning keys."""
    fed = cfg.fed
    _check(
        fed.aggregation in AGGREGATIONS, "fed.aggregation", fed.aggregation, ", ".join(AGGREGATIONS)
    )
    _check(0 <= fed.trim_fraction < 0.5, "fed.trim-fraction", fed.trim_fraction, "[0, 0.5)")
    _check(fed.malicious_clients >= 0, "fed.malicious-clients", fed.malicious_clients, "≥ 0")
    _check(fed.norm_bound >= 0, "fed.norm-bound", fed.norm_bound, "≥ 0 (0 = off)")
    if fed.aggregation != "mean" or fed.norm_bound:
        _check(
            cfg.method in AVERAGING and not cfg.dp.enabled,
            "method",
            cfg.method,
            f"with fed.aggregation = {fed.aggregation!r} / fed.norm-bound: "
            f"{', '.join(AVERAGING)} with dp.mode = off (DP bounds every update itself)",
        )
    _check(cfg.attack.poison in POISONS, "attack.poison", cfg.attack.poison, ", ".join(POISONS))
    _check(
        0 <= cfg.attack.poison_client < cfg.data.num_clients,
        "attack.poison-client",
        cfg.attack.poison_client,
        f"0 to data.num-clients − 1 = {cfg.data.num_clients - 1}",
    )


def _validate_dp(cfg: RunConfig) -> None:
    """Check the ``dp.*`` keys; projecting the ε of the whole run when a budget is set."""
    dp = cfg.dp
    _check(dp.mode in DP_MODES, "dp.mode", dp.mode, ", ".join(DP_MODES))
    _check(
        math.isfinite(dp.clip_norm) and dp.clip_norm > 0,
        "dp.clip-norm",
        dp.clip_norm,
        "a finite number > 0 (the L2 bound on each client's update)",
    )
    _check(
        math.isfinite(dp.noise_multiplier) and dp.noise_multiplier >= 0,
        "dp.noise-multiplier",
        dp.noise_multiplier,
        "a finite number ≥ 0 (0 = clipping only, no privacy guarantee)",
    )
    _check(0 < dp.delta < 1, "dp.delta", dp.delta, "a number in (0, 1), e.g. 1e-5")
    _check(
        math.isfinite(dp.max_epsilon) and dp.max_epsilon >= 0,
        "dp.max-epsilon",
        dp.max_epsilon,
        "a finite number ≥ 0 (0 = no budget)",
    )
    if not dp.enabled:
        return
    _check(
        cfg.method in DP_METHODS,
        "method",
        cfg.method,
        f"with dp.mode = {dp.mode!r}: {', '.join(DP_METHODS)} (Flower's DP accounting "
        "needs FedAvg aggregation; dp.mode = 'off' for the others)",
    )
    if dp.max_epsilon > 0:
        _check(
            dp.noise_multiplier > 0,
            "dp.noise-multiplier",
            dp.noise_multiplier,
            "> 0 when dp.max-epsilon is set (without noise ε is unbounded)",
        )
        epsilon = projected_epsilon(dp.noise_multiplier, cfg.fed.rounds, dp.delta)
        _check(
            epsilon <= dp.max_epsilon,
            "dp.max-epsilon",
            dp.max_epsilon,
            f"≥ the ε of the whole run, {epsilon:.3f} at δ = {dp.delta:g} for fed.rounds = "
            f"{cfg.fed.rounds} and dp.noise-multiplier = {dp.noise_multiplier:g} (or lower "
            "the rounds, raise the noise)",
        )
