"""The client round of Algorithm 1 (and of the baselines), read top to bottom.

Framework-free: takes the global adapter state and the client's private examples,
returns the upload and its allowlisted counters. Everything else (synthetic text,
IFS scores, losses on private data, W_l, W_s) is written to the client's own state
directory, never returned for upload.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fedpit.adapters import LOCAL, PUBLIC, State, get_state, mix, save_adapter, set_state
from fedpit.batching import encode_pair
from fedpit.config import RunConfig
from fedpit.data.example import Example
from fedpit.generator import make_generate_fn
from fedpit.privacy import upload_metrics
from fedpit.runtime import Runtime
from fedpit.scoring import response_nll
from fedpit.synth.pipeline import SynthResult, generate_synthetic
from fedpit.synth.select import ifs, select_lowest
from fedpit.train import TrainStats, cosine_lr, train_adapter


@dataclass(frozen=True)
class RoundInfo:
    """Where this client round sits in the run."""

    client_id: int
    server_round: int
    num_rounds: int
    seed: int


@dataclass
class ClientUpdate:
    """What a client round produces: the upload and the client's private record."""

    state: State
    num_examples: int
    counters: dict[str, float]
    private_log: dict[str, object] = field(default_factory=dict)


def phase_seed(info: RoundInfo, phase: str) -> int:
    """An independent, reproducible seed per (run seed, client, round, phase).

    Separate streams keep phases from shifting each other: FedPIT with β = 1 trains W_l
    exactly as FedAvg does, whatever self-generation consumed before it.
    """
    return random.Random(f"{info.seed}/{info.client_id}/{info.server_round}/{phase}").getrandbits(
        31
    )


def _encode(rt: Runtime, examples: Sequence[Example], max_length: int) -> list:
    return [
        encode_pair(rt.tokenizer, rt.fmt.prompt(ex), ex.output + rt.fmt.end_text, max_length)
        for ex in examples
    ]


def _train(
    rt: Runtime,
    cfg: RunConfig,
    info: RoundInfo,
    adapter: str,
    examples: Sequence[Example],
    phase: str,
    epochs: int | None = None,
    proximal_mu: float = 0.0,
) -> TrainStats:
    torch.manual_seed(phase_seed(info, phase))
    return train_adapter(
        rt.model,
        adapter,
        _encode(rt, examples, cfg.model.max_length),
        lr=cosine_lr(cfg.train.lr, cfg.train.lr_min, info.server_round, info.num_rounds),
        epochs=epochs or cfg.train.local_epochs,
        batch_size=cfg.train.batch_size,
        pad_id=rt.tokenizer.pad_token_id,
        seed=phase_seed(info, phase),
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm,
        micro_batch_size=cfg.train.micro_batch_size,
        proximal_mu=proximal_mu,
        desc=f"client {info.client_id} {phase}",
    )


def synthesize(
    rt: Runtime, cfg: RunConfig, info: RoundInfo, private: Sequence[Example], adapter: str
) -> SynthResult:
    """SynGen with ``adapter`` active (the current global model, W_g)."""
    rt.model.set_adapter(adapter)
    generate = make_generate_fn(rt.model, rt.tokenizer)
    return generate_synthetic(
        private, generate, rt.fmt, cfg.synth, random.Random(phase_seed(info, "synth"))
    )


def ifs_scores(
    rt: Runtime, cfg: RunConfig, adapter: str, candidates: Sequence[Example]
) -> list[float]:
    """IFS = L(y|x) / L(y) of each candidate under ``adapter``."""
    if not candidates:
        return []
    rt.model.set_adapter(adapter)
    responses = [c.output for c in candidates]
    cond = response_nll(
        rt.model,
        rt.tokenizer,
        [rt.fmt.prompt(c) for c in candidates],
        responses,
        cfg.model.max_length,
    )
    header = rt.fmt.response_header()
    uncond = response_nll(
        rt.model, rt.tokenizer, [header] * len(candidates), responses, cfg.model.max_length
    )
    return [ifs(c, u) for c, u in zip(cond, uncond, strict=True)]


def _select(
    rt: Runtime, cfg: RunConfig, adapter: str, synth: SynthResult
) -> tuple[list[Example], list[dict[str, object]]]:
    scores = ifs_scores(rt, cfg, adapter, synth.examples)
    chosen = select_lowest(synth.examples, scores, cfg.synth.keep)
    chosen_ids = {c.id for c in chosen}
    record = [
        {
            "id": c.id,
            "instruction": c.instruction,
            "output": c.output,
            "ifs": s,
            "selected": c.id in chosen_ids,
        }
        for c, s in zip(synth.examples, scores, strict=True)
    ]
    return chosen, record


def run_client_round(
    rt: Runtime,
    cfg: RunConfig,
    info: RoundInfo,
    private: Sequence[Example],
    global_state: State,
    state_dir: Path,
) -> ClientUpdate:
    """One sampled client's round for ``cfg.method``; returns the update to upload."""
    timings: dict[str, float] = {}
    log: dict[str, object] = {"round": info.server_round, "method": cfg.method}
    synth: SynthResult | None = None
    selected: list[Example] = []
    start = time.perf_counter()

    def timed(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0

    # Every round starts from the global adapter in both slots (nothing carried over).
    set_state(rt.model, LOCAL, global_state)
    set_state(rt.model, PUBLIC, global_state)

    if cfg.uses_synthetic:
        t0 = time.perf_counter()
        synth = synthesize(rt, cfg, info, private, PUBLIC)  # generator = W_g
        timed("synth", t0)

    if cfg.method == "fedpit":
        t0 = time.perf_counter()
        local_stats = _train(rt, cfg, info, LOCAL, private, "local")
        timed("train-local", t0)
        t0 = time.perf_counter()
        assert synth is not None
        selected, log["synthetic"] = _select(rt, cfg, LOCAL, synth)  # IFS with the fresh W_l
        timed("select", t0)
        t0 = time.perf_counter()
        public_stats = _train(rt, cfg, info, PUBLIC, selected, "public")
        timed("train-public", t0)
        upload = mix(get_state(rt.model, LOCAL), get_state(rt.model, PUBLIC), cfg.fed.beta)
        log["loss-local"], log["loss-public"] = local_stats.mean_loss, public_stats.mean_loss
    elif cfg.method == "fedpit-v1":
        persisted = state_dir / "adapters" / "local-v1.pt"
        if persisted.exists():
            set_state(rt.model, LOCAL, torch.load(persisted, weights_only=True))
        t0 = time.perf_counter()
        assert synth is not None
        selected, log["synthetic"] = _select(rt, cfg, LOCAL, synth)  # IFS with the kept W_l
        timed("select", t0)
        t0 = time.perf_counter()
        public_stats = _train(rt, cfg, info, PUBLIC, selected, "public")
        timed("train-public", t0)
        t0 = time.perf_counter()
        local_stats = _train(rt, cfg, info, LOCAL, [*private, *selected], "local")
        timed("train-local", t0)
        persisted.parent.mkdir(parents=True, exist_ok=True)
        torch.save(get_state(rt.model, LOCAL), persisted)
        upload = get_state(rt.model, PUBLIC)
        log["loss-local"], log["loss-public"] = local_stats.mean_loss, public_stats.mean_loss
    elif cfg.method == "fedmit":
        t0 = time.perf_counter()
        assert synth is not None
        # No local model exists before training in FedMIT: select with W_g.
        selected, log["synthetic"] = _select(rt, cfg, LOCAL, synth)
        timed("select", t0)
        t0 = time.perf_counter()
        local_stats = _train(rt, cfg, info, LOCAL, [*private, *selected], "local")
        timed("train-local", t0)
        upload = get_state(rt.model, LOCAL)
        log["loss-local"] = local_stats.mean_loss
    else:  # fedavg, fedprox, fedadam: plain local training on the private data
        mu = cfg.fed.proximal_mu if cfg.method == "fedprox" else 0.0
        t0 = time.perf_counter()
        local_stats = _train(rt, cfg, info, LOCAL, private, "local", proximal_mu=mu)
        timed("train-local", t0)
        upload = get_state(rt.model, LOCAL)
        log["loss-local"] = local_stats.mean_loss

    timed("total", start)
    if cfg.method in ("fedpit", "fedpit-v1"):
        save_adapter(
            get_state(rt.model, LOCAL), cfg.lora, rt.base_name, state_dir / "adapters" / LOCAL
        )
    counters = upload_metrics(
        num_examples=len(private),
        synth=synth,
        selected=len(selected),
        timings=timings,
        upload=upload,
    )
    log["counters"] = counters
    _write_private_log(state_dir, info, log)
    return ClientUpdate(state=upload, num_examples=len(private), counters=counters, private_log=log)


def _write_private_log(state_dir: Path, info: RoundInfo, log: dict[str, object]) -> None:
    """Append this round's record to the client's own metrics and synthetic-data files."""
    state_dir.mkdir(parents=True, exist_ok=True)
    synthetic = log.pop("synthetic", None)
    if synthetic is not None:
        path = state_dir / "synthetic" / f"round-{info.server_round:03d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in synthetic))  # type: ignore[union-attr]
    with (state_dir / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(log) + "\n")
