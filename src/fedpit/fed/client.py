"""The client round of Algorithm 1 (and of the baselines), read top to bottom.

Framework-free: takes the global adapter state and the client's private examples,
returns the upload and its allowlisted counters. Everything else (synthetic text,
IFS scores, losses on private data, W_l, W_s) is written to the client's own state
directory, never returned for upload.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from safetensors.torch import load_file

from fedpit import jsonio
from fedpit.adapters import (
    LOCAL,
    PUBLIC,
    State,
    get_state,
    mix,
    save_adapter,
    set_state,
)
from fedpit.config.schema import RunConfig
from fedpit.data.example import Example
from fedpit.errors import FedPITError
from fedpit.fed.robust import poison
from fedpit.lm.batched_generation import make_generate_fn
from fedpit.lm.batching import Encoded, encode_pair
from fedpit.lm.distill import teacher_targets
from fedpit.lm.lowp import base_in, resolve_dtype
from fedpit.lm.runtime import DTYPES, Runtime, release_memory
from fedpit.lm.scoring import response_lengths, response_nll
from fedpit.lm.train import TrainStats, cosine_lr, train_adapter
from fedpit.privacy.allowlist import upload_metrics
from fedpit.privacy.dp import clip_update
from fedpit.synth.pipeline import SynthResult, generate_synthetic
from fedpit.synth.select import ifs, select_lowest


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


def _encode(rt: Runtime, examples: Sequence[Example], max_length: int) -> list[Encoded]:
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
    lr: float | None = None,
    encoded: Sequence[Encoded] | None = None,
) -> TrainStats:
    torch.manual_seed(phase_seed(info, phase))
    lr0 = lr or cfg.train.lr
    # train.base-dtype: the frozen base in bf16 runs faster on CPUs with bf16 instructions;
    # the adapter being trained, its gradients and the optimiser stay in their own dtype.
    with base_in(rt.model, _base_dtype(rt, cfg, cfg.train.base_dtype)):
        return train_adapter(
            rt.model,
            adapter,
            list(encoded) if encoded is not None else _encode(rt, examples, cfg.model.max_length),
            lr=cosine_lr(lr0, min(cfg.train.lr_min, lr0), info.server_round, info.num_rounds),
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


def _base_dtype(rt: Runtime, cfg: RunConfig, setting: str) -> torch.dtype:
    """The frozen base's dtype for a setting (``synth.generation-dtype``, ``train.base-dtype``)."""
    return resolve_dtype(setting, rt.model.device, DTYPES[cfg.model.dtype])


def _dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``bfloat16`` (for the client's private log)."""
    return str(dtype).removeprefix("torch.")


def synthesize(
    rt: Runtime,
    cfg: RunConfig,
    info: RoundInfo,
    private: Sequence[Example],
    adapter: str,
) -> SynthResult:
    """SynGen with ``adapter`` active (the current global model, W_g).

    Sampling draws from torch's global generator, seeded here from the phase's own seed:
    what a client samples must not depend on what its worker process ran before.
    """
    torch.manual_seed(phase_seed(info, "synth"))
    rt.model.set_adapter(adapter)
    generate = make_generate_fn(
        rt.model, rt.tokenizer, base_dtype=_base_dtype(rt, cfg, cfg.synth.generation_dtype)
    )
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
    prompts = [rt.fmt.prompt(c) for c in candidates]
    max_length = cfg.model.max_length
    cond = response_nll(rt.model, rt.tokenizer, prompts, responses, max_length)
    header = rt.fmt.response_header()
    # The same response tokens in both terms: a response cut after its prompt is cut alike.
    scored = (
        response_lengths(rt.tokenizer, prompts, responses, max_length)
        if cfg.synth.ifs_same_tokens
        else None
    )
    uncond = response_nll(
        rt.model,
        rt.tokenizer,
        [header] * len(candidates),
        responses,
        max_length,
        max_response=scored,
    )
    return [ifs(c, u) for c, u in zip(cond, uncond, strict=True)]


class _Round:
    """One client round in progress: runs phases, times them, keeps the private log."""

    def __init__(
        self, rt: Runtime, cfg: RunConfig, info: RoundInfo, private: Sequence[Example]
    ) -> None:
        self.rt, self.cfg, self.info, self.private = rt, cfg, info, list(private)
        self.seconds: dict[str, float] = {}
        self.log: dict[str, object] = {"round": info.server_round, "method": cfg.method}
        self.selected: list[Example] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase into the allowlisted ``seconds-<name>`` counter."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            release_memory()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def train(
        self,
        adapter: str,
        examples: Sequence[Example],
        phase: str,
        proximal_mu: float = 0.0,
        lr: float | None = None,
        epochs: int | None = None,
        encoded: Sequence[Encoded] | None = None,
    ) -> None:
        """Train ``adapter`` on ``examples``; its loss goes to the private log only."""
        with self.phase(f"train-{phase}"):
            stats = _train(
                self.rt,
                self.cfg,
                self.info,
                adapter,
                examples,
                phase,
                epochs=epochs,
                proximal_mu=proximal_mu,
                lr=lr,
                encoded=encoded,
            )
        self.log[f"loss-{phase}"] = stats.mean_loss

    def train_public(self, synth: SynthResult) -> None:
        """Train W_s on the selected synthetic data (hard or, with distillation, soft labels).

        With ``synth.distill-top-k`` the teacher is the public adapter *before* this
        training — W_g — with each response's generation prompt (its demonstrations) in
        context.
        """
        cfg = self.cfg
        encoded = None
        if cfg.synth.distill_top_k and self.selected:
            with self.phase("distill"):
                self.rt.model.set_adapter(PUBLIC)
                encoded = teacher_targets(
                    self.rt.model,
                    self.rt.tokenizer,
                    [synth.prompts[c.id] for c in self.selected],
                    _encode(self.rt, self.selected, cfg.model.max_length),
                    cfg.synth.distill_top_k,
                )
        self.train(
            PUBLIC,
            self.selected,
            "public",
            lr=cfg.train.public_lr or None,
            epochs=cfg.train.public_epochs or None,
            encoded=encoded,
        )

    def select(self, adapter: str, synth: SynthResult) -> list[Example]:
        """Keep M candidates: the lowest IFS under ``adapter``, or M at random."""
        settings = self.cfg.synth
        scores: list[float | None] = [None] * len(synth.examples)
        with self.phase("select"):
            if settings.selection == "ifs":
                ifs = ifs_scores(self.rt, self.cfg, adapter, synth.examples)
                scores = list(ifs)
                self.selected = select_lowest(synth.examples, ifs, settings.keep)
            else:  # random: the scoring pass only for the private log, if asked
                if settings.score_random:
                    scores = list(ifs_scores(self.rt, self.cfg, adapter, synth.examples))
                rng = random.Random(phase_seed(self.info, "select"))
                n = len(synth.examples)
                picked = set(rng.sample(range(n), min(settings.keep, n)))
                self.selected = [c for i, c in enumerate(synth.examples) if i in picked]
        chosen = {c.id for c in self.selected}
        self.log["synthetic"] = [
            {
                "id": c.id,
                "instruction": c.instruction,
                "output": c.output,
                "ifs": s,
                "selected": c.id in chosen,
            }
            for c, s in zip(synth.examples, scores, strict=True)
        ]
        return self.selected

    def state(self, adapter: str) -> State:
        """The current tensors of ``adapter``."""
        return get_state(self.rt.model, adapter)


def _fedpit(r: _Round, synth: SynthResult, state_dir: Path) -> State:
    """Algorithm 1: W_l on real data, IFS with W_l, W_s on selected data, upload the mix."""
    r.train(LOCAL, r.private, "local")
    r.select(LOCAL, synth)  # scored by the freshly trained local model
    r.train_public(synth)
    return mix(r.state(LOCAL), r.state(PUBLIC), r.cfg.fed.beta)


def _fedpit_v1(r: _Round, synth: SynthResult, state_dir: Path) -> State:
    """v1: W_l persists on the client and also learns from synthetic data; upload W_s."""
    # W_l persists as the client's PEFT adapter (saved after every round, see below).
    persisted = state_dir / "adapters" / LOCAL / "adapter_model.safetensors"
    if persisted.exists():
        set_state(r.rt.model, LOCAL, load_file(str(persisted)))
    selected = r.select(LOCAL, synth)  # scored by the client's persisted local model
    r.train_public(synth)
    r.train(LOCAL, [*r.private, *selected], "local")
    return r.state(PUBLIC)


def _fedmit(r: _Round, synth: SynthResult, state_dir: Path) -> State:
    """FedMIT: real and selected synthetic data in one adapter (no isolation)."""
    selected = r.select(LOCAL, synth)  # no local model exists yet: scored by W_g
    r.train(LOCAL, [*r.private, *selected], "local")
    return r.state(LOCAL)


def _fedavg(r: _Round, synth: SynthResult | None, state_dir: Path) -> State:
    """FedAvg / FedProx / FedAdam clients: train on the private data, upload it."""
    mu = r.cfg.fed.proximal_mu if r.cfg.method == "fedprox" else 0.0
    r.train(LOCAL, r.private, "local", proximal_mu=mu)
    return r.state(LOCAL)


def _fedavg_damped(r: _Round, synth: SynthResult | None, state_dir: Path) -> State:
    """The control of FedPIT without synthetic data: W_l as FedAvg trains it, mixed with W_g.

    Uploads β·W_l + (1−β)·W_g — FedPIT's mix with W_s replaced by the untouched global
    adapter — so it shrinks the private update exactly as much as FedPIT does.
    """
    r.train(LOCAL, r.private, "local")
    return mix(r.state(LOCAL), r.state(PUBLIC), r.cfg.fed.beta)  # PUBLIC still holds W_g


UPLOAD = "upload"

SYNTH_ROUNDS = {"fedpit": _fedpit, "fedpit-v1": _fedpit_v1, "fedmit": _fedmit}
"""The client round of each method that trains on synthetic data (``cfg.uses_synthetic``)."""
CLIENT_ROUNDS = {
    "fedavg": _fedavg,
    "fedavg-damped": _fedavg_damped,
    "fedprox": _fedavg,
    "fedadam": _fedavg,
}


def run_client_round(
    rt: Runtime,
    cfg: RunConfig,
    info: RoundInfo,
    private: Sequence[Example],
    global_state: State,
    state_dir: Path,
) -> ClientUpdate:
    """One sampled client's round for ``cfg.method``; returns the update to upload."""
    r = _Round(rt, cfg, info, private)
    r.log["train-dtype"] = _dtype_name(_base_dtype(rt, cfg, cfg.train.base_dtype))
    with r.phase("total"):
        # Every round starts from the global adapter in both slots (nothing carried over).
        set_state(rt.model, LOCAL, global_state)
        set_state(rt.model, PUBLIC, global_state)
        synth = None
        if cfg.uses_synthetic:
            with r.phase("synth"):
                synth = synthesize(rt, cfg, info, private, PUBLIC)  # generator = W_g
            r.log["generation-dtype"] = _dtype_name(
                _base_dtype(rt, cfg, cfg.synth.generation_dtype)
            )
            r.log["synth-calls"] = synth.calls  # private: seconds per generate call
            if not synth.examples:
                _degenerate(cfg, info)
        if synth is not None:
            upload = SYNTH_ROUNDS[cfg.method](r, synth, state_dir)
        else:
            upload = CLIENT_ROUNDS[cfg.method](r, None, state_dir)
    if cfg.attack.poison != "none" and info.client_id == cfg.attack.poison_client:
        upload = _poisoned(upload, global_state, cfg)  # a robustness experiment's attacker
    if cfg.dp.mode == "client-fixed":  # clipped before it is kept, audited or sent
        upload = clip_update(upload, global_state, cfg.dp.clip_norm)
    adapters = state_dir / "adapters"
    if cfg.method in ("fedpit", "fedpit-v1", "fedavg-damped"):  # W_l differs from the upload
        save_adapter(r.state(LOCAL), cfg.lora, rt.base_name, adapters / LOCAL)
    # The client's own copy of what it sent (an attack target: what the server sees).
    save_adapter(upload, cfg.lora, rt.base_name, adapters / UPLOAD)
    # Under DP every counter that depends on the private data is withheld (sent as 0):
    # n_k (unweighted mean), the phase timings (they count training steps, ⌈n_k / batch⌉)
    # and the SynGen counts (they depend on the demonstrations).
    dp = cfg.dp.enabled
    counters = upload_metrics(
        num_examples=1 if dp else len(private),
        synth=None if dp else synth,
        selected=0 if dp else len(r.selected),
        timings={} if dp else r.seconds,
        upload=upload,
    )
    r.log["counters"] = counters
    _write_private_log(state_dir, info, r.log)
    return ClientUpdate(
        state=upload, num_examples=len(private), counters=counters, private_log=r.log
    )


def _poisoned(upload: State, global_state: State, cfg: RunConfig) -> State:
    with torch.no_grad():
        return poison(upload, global_state, cfg.attack.poison, cfg.attack.poison_factor)


class SkippedRound(FedPITError):
    """The client sends no update this round (``synth.on-empty = skip``)."""


def _degenerate(cfg: RunConfig, info: RoundInfo) -> None:
    """A round in which SynGen kept no candidate: say so, and skip it if configured."""
    upload = {
        "fedpit": "β·W_l + (1−β)·W_g (W_s stays W_g)",
        "fedpit-v1": "W_g unchanged",
        "fedmit": "W_l trained on the private data alone",
        "local-selfgen": "W_l trained on the private data alone",
    }[cfg.method]
    skip = cfg.synth.on_empty == "skip" and cfg.method in ("fedpit", "fedpit-v1")
    then = "skipping the round (synth.on-empty = skip)" if skip else f"the update is {upload}"
    print(
        f"WARNING: client {info.client_id} round {info.server_round}: SynGen kept no "
        f"synthetic candidate; {then}",
        flush=True,
    )
    if skip:
        raise SkippedRound(
            f"client {info.client_id} round {info.server_round}: SynGen kept no synthetic "
            "candidate and synth.on-empty = skip: no update sent"
        )


def _write_private_log(state_dir: Path, info: RoundInfo, log: dict[str, object]) -> None:
    """Append this round's record to the client's own metrics and synthetic-data files."""
    state_dir.mkdir(parents=True, exist_ok=True)
    synthetic = log.pop("synthetic", None)
    if synthetic is not None:
        path = state_dir / "synthetic" / f"round-{info.server_round:03d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = cast("list[dict[str, object]]", synthetic)  # as _Round.select logs them
        path.write_text("".join(jsonio.dumps(r) + "\n" for r in rows))
    with (state_dir / "metrics.jsonl").open("a") as fh:
        fh.write(jsonio.dumps(log) + "\n")
