"""Privacy attacks on a model of a run: extraction, membership inference, canaries.

- Discoverable-memorisation extraction (the paper's metric): prompt the target with a
  member's true prompt, decode greedily, compare with the true response (ROUGE-L, exact
  match, longest common token span). Non-members give the same scores for what the
  model can answer without having seen the example.
- Loss-based membership inference: AUC of ``-loss`` over members vs non-members, raw and
  calibrated by the base model's loss on the same example (measured with the
  default model: leakage shows in losses, not in greedy extraction; docs/results.md).
- Canaries (when the run planted any): emitted under greedy decoding, log-probability,
  and exposure against random secrets of the same format.
- Synthetic-vs-private overlap of each client's self-generated data.

Results go to ``RUN_DIR/attack/<target>.json`` (the contract's schema) with per-example
rows in ``RUN_DIR/attack/<target>.jsonl``. The scores themselves are pure functions in
:mod:`fedpit.eval.attack.leakage`; this module runs the models and writes the files.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpit import jsonio
from fedpit.config.schema import RunConfig
from fedpit.data.canary import CANARY_KEY, NAME_KEY, SEED_KEY, canary_format, is_canary
from fedpit.data.example import Example
from fedpit.eval.attack import mia
from fedpit.eval.attack import targets as targets_lib
from fedpit.eval.attack.leakage import (
    canary_summary,
    extraction_rows,
    summarise_extraction,
    synthetic_overlap,
)
from fedpit.eval.attack.targets import BASE, GLOBAL, activate, load_runtime, resolve_target
from fedpit.lm.base_cache import base_generate, cached
from fedpit.lm.batching import encode_pair, token_ids
from fedpit.lm.generation import GenerateFn, GenerationSpec
from fedpit.lm.runtime import Runtime
from fedpit.lm.scoring import response_nll, shared_prefix_logprobs
from fedpit.runs.rundir import RunDir, read_jsonl, write_atomic, write_json

MAX_NEW_TOKENS = 64
REFERENCE_SECRETS = 200
ATTACK_DIR = "attack"

# --- the model side -----------------------------------------------------------------


def text_of(example: Example) -> str:
    """An example as one text (for overlap with synthetic data)."""
    parts = [example.instruction, example.input, example.output]
    return "\n".join(p for p in parts if p)


def _losses(rt: Runtime, examples: Sequence[Example], max_length: int) -> list[float]:
    if not examples:
        return []
    prompts = [rt.fmt.prompt(e) for e in examples]
    return response_nll(rt.model, rt.tokenizer, prompts, [e.output for e in examples], max_length)


def _canary_logprobs(
    rt: Runtime, canaries: Sequence[Example], n_refs: int, seed: int, max_length: int
) -> tuple[list[float], list[list[float]]]:
    """Each canary's log-probability and those of ``n_refs`` same-format references."""
    canary_lp: list[float] = []
    reference_lp: list[list[float]] = []
    for c in canaries:
        draw = canary_format(int(c.meta[SEED_KEY]))
        rng = random.Random(f"{seed}/{c.id}")
        refs = [draw(rng) for _ in range(n_refs)]
        prompt = rt.fmt.prompt(c)
        # One prompt, one wording, different digits: the shared prefix runs once.
        encoded = [encode_pair(rt.tokenizer, prompt, r, max_length) for r in [c.output, *refs]]
        lps = shared_prefix_logprobs(rt.model, encoded, rt.tokenizer.pad_token_id)
        canary_lp.append(lps[0])
        reference_lp.append(lps[1:])
    return canary_lp, reference_lp


def _sample(examples: Sequence[Example], limit: int, rng: random.Random) -> list[Example]:
    if limit <= 0 or len(examples) <= limit:
        return list(examples)
    keep = set(rng.sample(range(len(examples)), limit))
    return [e for i, e in enumerate(examples) if i in keep]


def _read_synthetic(rd: RunDir, clients: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for client in clients:
        for path in sorted((rd.client_dir(client) / "synthetic").glob("*.jsonl")):
            rows = read_jsonl(path)
            out.setdefault(client, []).extend(
                "\n".join(p for p in (r.get("instruction", ""), r.get("output", "")) if p)
                for r in rows
            )
    return out


def _round_of(target: str, rounds: int | None) -> int | None:
    if target.startswith("round:"):
        return int(target.split(":", 1)[1])
    return rounds if target == GLOBAL else None


def result_path(run_dir: Path, target: str) -> Path:
    """Where the attack result of ``target`` is written."""
    return Path(run_dir) / ATTACK_DIR / f"{target.replace(':', '-')}.json"


@dataclass(frozen=True)
class AttackInputs:
    """What every attacked model of one run shares; built once per command by :func:`prepare`.

    The attacked examples, the base model's losses on them (the calibration reference)
    and the synthetic-vs-private overlap do not depend on the target, so a command that
    attacks the base, every round and the final model computes them once.
    """

    run_dir: Path
    client: str | None
    limit: int
    seed: int
    cfg: RunConfig
    rt: Runtime
    members: tuple[Example, ...]
    non_members: tuple[Example, ...]
    canaries: tuple[Example, ...]
    base_losses: tuple[float, ...]
    synthetic_overlap: dict[str, float] | None


def clients_of(target_name: str) -> str | None:
    """The client whose data a target is attacked on (``client:ID``/``upload:ID``), else None."""
    if target_name.startswith(("client:", "upload:")):
        return target_name.split(":", 1)[1]
    return None


def prepare(
    run_dir: Path, client: str | None = None, limit: int = 0, seed: int = 0
) -> AttackInputs:
    """Sample the attacked examples of a run and score what does not depend on the target.

    Args:
        run_dir: The run directory.
        client: Attack on this client's private data only (None: every client's).
        limit: At most this many members and this many non-members (seeded sample).
        seed: Seed of the subsample.
    """
    from fedpit.data.prepare import run_data_for

    rd = RunDir(Path(run_dir))
    cfg, rt = load_runtime(rd.root)
    split = run_data_for(cfg).split
    client_ids = [client] if client is not None else [str(i) for i in range(len(split.clients))]
    private = [e for c in client_ids for e in split.clients[int(c)]]
    # Non-members from the same clients' partitions: the members' distribution.
    held_out = [e for c in client_ids for e in split.non_members[int(c)]]
    rng = random.Random(seed)
    members = _sample([e for e in private if not is_canary(e)], limit, rng)
    non_members = _sample(held_out, limit, rng)

    def score_base() -> list[float]:
        activate(rt, resolve_target(rd.root, BASE))
        return _losses(rt, [*members, *non_members], cfg.model.max_length)

    scored = [*members, *non_members]
    base_losses = cached(
        rt,
        "response-nll",
        {
            "prompts": [rt.fmt.prompt(e) for e in scored],
            "responses": [e.output for e in scored],
            "max_length": cfg.model.max_length,
        },
        score_base,
    )

    def tokenize(text: str) -> list[int]:
        return token_ids(rt.tokenizer, text)

    planted = [e for c in client_ids for e in split.clients[int(c)] if is_canary(e)]
    overlap = synthetic_overlap(
        _read_synthetic(rd, client_ids),
        {c: [text_of(e) for e in split.clients[int(c)]] for c in client_ids},
        tokenize,
        [(e.meta.get(NAME_KEY, e.instruction), e.meta[CANARY_KEY]) for e in planted],
    )
    return AttackInputs(
        run_dir=rd.root,
        client=client,
        limit=limit,
        seed=seed,
        cfg=cfg,
        rt=rt,
        members=tuple(members),
        non_members=tuple(non_members),
        canaries=tuple(e for e in private if is_canary(e)),
        base_losses=tuple(base_losses),
        synthetic_overlap=overlap,
    )


def run_attack(
    run_dir: Path,
    target_name: str,
    limit: int = 0,
    seed: int = 0,
    generate: GenerateFn | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    reference_secrets: int = REFERENCE_SECRETS,
    extraction: bool = True,
    inputs: AttackInputs | None = None,
) -> dict[str, Any]:
    """Attack one model of a run, write ``RUN_DIR/attack/<target>.json`` and return it.

    Args:
        run_dir: The run directory.
        target_name: ``base``, ``global``, ``round:N`` or ``client:ID``.
        limit: At most this many members and this many non-members (seeded sample);
            0 for all. Canaries are always all attacked.
        seed: Seed of the subsample and of the reference secrets.
        generate: The generation function (default: greedy on the run's model).
        max_new_tokens: Greedy decoding budget per prompt.
        reference_secrets: Random same-format secrets per canary for its exposure.
        extraction: Run the (slow) greedy extraction on members and non-members; without
            it only the losses (membership inference) and the canaries are attacked,
            which is what per-round leakage curves need.
        inputs: The run's shared inputs from :func:`prepare` with the same run, client,
            ``limit`` and ``seed`` (computed here when None).
    """
    from fedpit.lm.batched_generation import make_generate_fn

    rd = RunDir(Path(run_dir))
    target = resolve_target(rd.root, target_name)
    key = (rd.root, clients_of(target_name), limit, seed)
    if inputs is None:
        inputs = prepare(*key)
    elif (inputs.run_dir, inputs.client, inputs.limit, inputs.seed) != key:
        raise ValueError(f"attack inputs {inputs.run_dir} do not fit target {target_name!r}")
    cfg, rt = inputs.cfg, inputs.rt
    members, non_members, canaries = inputs.members, inputs.non_members, inputs.canaries
    base_losses = list(inputs.base_losses)
    max_length = cfg.model.max_length
    is_base = target.adapter_dir is None
    if generate is None:
        generate = make_generate_fn(rt.model, rt.tokenizer)
        if is_base:  # the floor is the same for every run on this split: reuse it
            generate = base_generate(rt, generate)

    def tokenize(text: str) -> list[int]:
        return token_ids(rt.tokenizer, text)

    activate(rt, target)
    losses = base_losses if is_base else _losses(rt, [*members, *non_members], max_length)
    attacked = [*members, *non_members, *canaries]
    spec = GenerationSpec(max_new_tokens=max_new_tokens)
    prompted = attacked if extraction else list(canaries)
    texts = (
        [g.text for g in generate([rt.fmt.prompt(e) for e in prompted], spec)] if prompted else []
    )
    if not extraction:
        texts = [""] * (len(members) + len(non_members)) + texts
    rows = extraction_rows(texts, [e.output for e in attacked], tokenize)

    def score_canaries() -> tuple[list[float], list[list[float]]]:
        return _canary_logprobs(rt, canaries, reference_secrets, seed, max_length)

    if is_base and canaries:
        canary_key = {
            "canaries": [[c.id, rt.fmt.prompt(c), c.output, c.meta[SEED_KEY]] for c in canaries],
            "references": reference_secrets,
            "seed": seed,
            "max_length": max_length,
        }
        canary_lp, reference_lp = cached(rt, "canary-logprobs", canary_key, score_canaries)
    else:
        canary_lp, reference_lp = score_canaries()

    n_m, n_n = len(members), len(non_members)
    kinds = ["member"] * n_m + ["non_member"] * n_n + ["canary"] * len(canaries)
    per_example = []
    for i, (ex, kind, text, row) in enumerate(zip(attacked, kinds, texts, rows, strict=True)):
        record = {"kind": kind, "id": ex.id, **row, "generation": text}
        if kind != "canary":
            record.update(loss=losses[i], base_loss=base_losses[i])
        else:
            j = i - n_m - n_n
            record.update(
                emitted=ex.meta[CANARY_KEY] in text,
                logprob=canary_lp[j],
                exposure=mia.exposure(canary_lp[j], reference_lp[j]),
            )
        per_example.append(record)

    mia_result: dict[str, Any] = {
        "auc": None,
        "auc_calibrated": None,
        "loss_members": statistics.fmean(losses[:n_m]) if n_m else None,
        "loss_non_members": statistics.fmean(losses[n_m:]) if n_n else None,
    }
    if n_m and n_n:
        mia_result["auc"] = mia.auc(mia.loss_scores(losses[:n_m]), mia.loss_scores(losses[n_m:]))
        if target.adapter_dir is not None:
            cal = mia.calibrated_scores(losses, base_losses)
            mia_result["auc_calibrated"] = mia.auc(cal[:n_m], cal[n_m:])

    rounds = cfg.fed.rounds if cfg.is_federated else None
    result = {
        "target": target_name,
        "round": _round_of(target_name, rounds),
        "n_members": n_m,
        "n_non_members": n_n,
        "extraction": {
            "members": summarise_extraction(rows[:n_m]) if extraction else None,
            "non_members": summarise_extraction(rows[n_m : n_m + n_n]) if extraction else None,
        },
        "mia": mia_result,
        "canaries": canary_summary(
            [r["emitted"] for r in per_example if r["kind"] == "canary"], canary_lp, reference_lp
        ),
        "synthetic_overlap": inputs.synthetic_overlap,
    }
    path = result_path(rd.root, target_name)
    write_atomic(path.with_suffix(".jsonl"), "".join(jsonio.dumps(r) + "\n" for r in per_example))
    write_json(path, result)
    return result


def default_targets(run_dir: Path, all_rounds: bool) -> list[str]:
    """The base model and the run's final model(s), plus every saved ``round:N`` if asked.

    The final model is ``global``, or each ``client:ID`` of a standalone baseline.
    """
    targets = targets_lib.default_targets(run_dir)
    if all_rounds:
        rounds = sorted(
            int(p.name.split("-", 1)[1]) for p in (Path(run_dir) / "rounds").glob("round-*")
        )
        targets[1:1] = [f"round:{r}" for r in rounds]
    return targets
