"""``fedpit attack RUN_DIR``: the privacy attacks on models of a run, as a table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

ATTACK_HELP = """\
Attack models of a run: extraction (true prompt → greedy → ROUGE-L, exact match,
longest common token span), loss-based membership inference (AUC raw and calibrated
against the base model), planted canaries (emitted, log-probability, exposure) and the
overlap of synthetic with private data. The base model's scores are the floor.

Writes RUN_DIR/attack/<target>.json (and per-example rows in .jsonl), e.g.:

  fedpit attack runs/fedavg --all-rounds
  fedpit attack runs/fedpit --target global --target client:0 --limit 32
"""


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``attack`` to the ``fedpit`` command line."""
    cmd = subparsers.add_parser(
        "attack",
        help="privacy attacks (extraction, membership inference, canaries)",
        description=ATTACK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory")
    cmd.add_argument(
        "--target",
        action="append",
        metavar="T",
        help="base, global, round:N or client:ID (repeatable; default: base and the final "
        "model: global, or each client:ID of a run without one, e.g. local)",
    )
    cmd.add_argument(
        "--all-rounds", action="store_true", help="also attack the global model of every round"
    )
    cmd.add_argument(
        "--limit", type=int, default=0, help="at most N members and N non-members (0: all)"
    )
    cmd.add_argument(
        "--extraction-every-round",
        action="store_true",
        help="also run greedy extraction on round:N targets (default: losses and canaries only)",
    )
    cmd.add_argument(
        "--canary-references",
        type=int,
        default=100,
        metavar="N",
        help="random same-format secrets per canary for its exposure (a quarter of them on "
        "round:N targets); exposure is at most log2(N+1) bits",
    )
    cmd.add_argument("--seed", type=int, default=0, help="seed of the subsample and references")
    cmd.set_defaults(func=cmd_attack)


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack every requested target and print one table row each."""
    from fedpit.eval.attack.runner import (
        AttackInputs,
        clients_of,
        default_targets,
        prepare,
        run_attack,
    )

    targets = args.target or default_targets(args.run_dir, args.all_rounds)
    if args.target and args.all_rounds:
        targets = [*targets, *(t for t in default_targets(args.run_dir, True) if t not in targets)]
    print(HEADER)
    # Sampled examples, base losses and synthetic overlap are shared by the targets.
    shared: dict[str | None, AttackInputs] = {}
    for target in targets:
        client = clients_of(target)
        if client not in shared:
            shared[client] = prepare(args.run_dir, client, args.limit, args.seed)
        # Per-round targets get the cheap loss-based attacks unless asked for more.
        full = not target.startswith("round:") or args.extraction_every_round
        # Exposure needs a forward pass per reference secret: fewer on per-round curves.
        refs = args.canary_references if full else max(1, args.canary_references // 4)
        result = run_attack(
            args.run_dir,
            target,
            args.limit,
            args.seed,
            extraction=full,
            reference_secrets=refs,
            inputs=shared[client],
        )
        print(format_row(result), flush=True)
    print(f"results: {Path(args.run_dir) / 'attack'}")
    return 0


HEADER = (
    f"{'target':<10} {'n':>7} {'ROUGE-L m/nm':>13} {'LCS m/nm':>11} {'EM m':>5} "
    f"{'loss m/nm':>11} {'AUC':>5} {'AUCcal':>6} {'canary emit/lp/exp':>20} {'synth R/span':>13}"
)


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_row(result: dict[str, Any]) -> str:
    """One compact table row of an attack result."""
    ext = result["extraction"]
    mem, non = ext["members"] or {}, ext["non_members"] or {}
    m = result["mia"]
    can = result["canaries"]
    syn = result["synthetic_overlap"]
    canary = (
        f"{can['emitted']}/{can['n']} {can['mean_logprob']:.1f} {can['mean_exposure']:.1f}"
        if can
        else "-"
    )
    synth = f"{syn['rouge_l_mean']:.2f}/{syn['longest_span_tokens']}" if syn else "-"
    return (
        f"{result['target']:<10} {result['n_members']:>3}/{result['n_non_members']:<3} "
        f"{_num(mem.get('rouge_l')):>6}/{_num(non.get('rouge_l')):<6} "
        f"{_num(mem.get('lcs_tokens'), 1):>5}/{_num(non.get('lcs_tokens'), 1):<5} "
        f"{_num(mem.get('exact_match')):>5} "
        f"{_num(m['loss_members']):>5}/{_num(m['loss_non_members']):<5} "
        f"{_num(m['auc']):>5} {_num(m['auc_calibrated']):>6} {canary:>20} {synth:>13}"
    )
