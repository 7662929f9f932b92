"""FedPIT performance benchmark: one command, one run, side by side.

``python -m bench.run [--quick] [--out bench/results.json] [--run-dir RUN_DIR]``

Measures, on the default model and real MedQuAD examples:

1. self-generation tokens/s: our batched generator vs a naive one-prompt-at-a-time loop
   over ``model.generate`` on the same SynGen response prompts (greedy outputs must be
   equal: the benchmark fails otherwise);
2. LoRA training tokens/s (non-padding tokens): our trainer vs TRL ``SFTTrainer`` at its
   efficient CPU settings, on identical token sequences;
3. peak resident memory of the simulation backend with 1 vs N clients, all training;
4. peak memory and seconds per round with 10, 50 and 100 clients, 10 sampled per round;
5. seconds per phase of a client round and the wall time of a run (read from a run dir,
   or of the default job it starts, alternated with variants of it: ``--default-run-vs``);
   SynGen's yield, IFS and response lengths under each speed lever, over seeds;
6. the machine's limits: fp32 matmul FLOP/s and memory bandwidth, turned into model
   FLOP utilisation for training and the weight-streaming bound for decoding.

This module is the entry point only: the command line, the order of the sections and
the results file. Each section lives in its own module: ``bench.machine``,
``bench.generation``, ``bench.quality``, ``bench.training``, ``bench.memory``, ``bench.scale``,
``bench.phases``;
``bench.table`` renders the results. See bench/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.generation import bench_generation
from bench.machine import (
    add_decode_bounds,
    add_training_mfu,
    load_average,
    machine_facts,
    machine_limits,
    model_size,
)
from bench.memory import QUICK_OVERRIDES, bench_memory
from bench.phases import default_runs, phase_seconds, source_tree
from bench.quality import bench_quality
from bench.scale import bench_scale
from bench.table import TARGETS, render
from bench.training import bench_training


def _say(t_start: float, message: str) -> None:
    print(f"[{time.perf_counter() - t_start:.0f} s] {message}", flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a harness check)")
    p.add_argument("--out", default="bench/results.json", help="JSON results file")
    p.add_argument("--run-dir", help="finished run directory for the per-phase seconds")
    p.add_argument(
        "--default-run",
        action="store_true",
        help="start the default `fedpit run` (about 8 minutes) and read its phases",
    )
    p.add_argument(
        "--default-run-vs",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="with --default-run: also run a variant of the default job with these settings, "
        "alternating with it (A B, B A, …); repeat the option for more variants",
    )
    p.add_argument(
        "--default-run-vs-commit",
        action="append",
        default=[],
        metavar="REV",
        help="with --default-run: also run the default job as commit REV of this repository "
        "ran it (its code, its defaults; extracted into the scratch directory), alternating "
        "with it; the same-machine ratio against an earlier baseline",
    )
    p.add_argument(
        "--default-run-repeats",
        type=int,
        default=1,
        help="with --default-run: runs of the default job and of each variant (default 1)",
    )
    p.add_argument(
        "--sections",
        default="limits,generation,quality,training,memory,scale",
        help="comma-separated subset of limits,generation,quality,training,memory,scale",
    )
    p.add_argument("--prompts", type=int, help="generation prompts (default 16; quick 4)")
    p.add_argument("--max-new-tokens", type=int, help="default synth.max-response-tokens")
    p.add_argument(
        "--quality-seeds", help="seeds of the SynGen quality section (default 0,1,2; quick 0)"
    )
    p.add_argument("--steps", type=int, help="training steps (default 6; quick 2)")
    p.add_argument("--clients", type=int, help="the larger client count (default 10; quick 2)")
    p.add_argument(
        "--scale-clients",
        help="client counts of the scale runs (default 10,50,100; quick 10,20)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: train.threads, 0 = every CPU, as runs use)",
    )
    p.add_argument("--work-dir", help="scratch directory (default: a new temporary one)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON; non-zero if outputs differ."""
    args = parse_args(argv)
    from fedpit.config.load import from_flat, parse_overrides
    from fedpit.errors import FedPITError

    try:  # a variant's bad setting is an error now, not after the default job has run
        for variant in args.default_run_vs:
            from_flat(parse_overrides(variant.split(",")))
    except FedPITError as err:
        print(f"--default-run-vs: {err}", file=sys.stderr)
        return 2
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedpit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:  # an unknown commit is an error now, too
        commits = dict(source_tree(rev, work) for rev in args.default_run_vs_commit)
    except ValueError as err:
        print(f"--default-run-vs-commit: {err}", file=sys.stderr)
        return 2
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    from fedpit.data.prepare import run_data_for
    from fedpit.lm.runtime import get_runtime, set_threads

    cfg = from_flat({})
    set_threads(cfg.train.threads if args.threads is None else args.threads)
    t_start = time.perf_counter()
    results: dict[str, Any] = {"quick": args.quick, **machine_facts(), "targets": TARGETS}

    if "limits" in sections:
        _say(t_start, "measuring machine limits …")
        results["limits"] = machine_limits(args.quick)

    rt = clients = None
    if sections & {"generation", "quality", "training"}:
        _say(t_start, "loading the default model and data …")
        rt = get_runtime(cfg.model, cfg.lora)
        clients = run_data_for(cfg).split.clients
        results["model"] = model_size(cfg.model.name, rt.model.get_base_model())

    if "generation" in sections:
        n = args.prompts or (4 if args.quick else 16)
        new = args.max_new_tokens or (16 if args.quick else cfg.synth.max_response_tokens)
        _say(t_start, f"generation: {n} prompts × ≤{new} new tokens, ours, generate, then naive …")
        gen = bench_generation(rt, cfg, clients, n, new)
        if "limits" in results:
            model = results["model"]
            add_decode_bounds(gen, results["limits"], model["weight_bytes"], model["params"])
        results["generation"] = gen

    if "quality" in sections:
        seeds = [
            int(x) for x in (args.quality_seeds or ("0" if args.quick else "0,1,2")).split(",")
        ]
        qcfg = cfg
        if args.quick:
            synth = replace(cfg.synth, attempts=2, max_response_tokens=16)
            qcfg = replace(cfg, synth=synth)
        _say(t_start, f"quality: round-1 SynGen of every client, seeds {seeds}, 3 variants …")
        results["quality"] = bench_quality(rt, qcfg, clients, seeds)

    if "training" in sections:
        steps = args.steps or (2 if args.quick else 6)
        batch = 4 if args.quick else cfg.train.batch_size
        micro = 2 if args.quick else (cfg.train.micro_batch_size or batch)
        _say(
            t_start,
            f"training: {steps} steps of {batch} (micro {micro}), ours (fp32, bf16), TRL …",
        )
        train = bench_training(rt, cfg, clients, steps, batch, micro)
        if "limits" in results:
            add_training_mfu(train, results["limits"], results["model"]["params"])
        results["training"] = train

    if "memory" in sections:
        big = args.clients or (2 if args.quick else 10)
        overrides = list(QUICK_OVERRIDES) if args.quick else []
        _say(t_start, f"memory: `fedpit run` with 1 then {big} clients …")
        results["memory"] = bench_memory([1, big], overrides, work)

    if "scale" in sections:
        default_counts = "10,20" if args.quick else "10,50,100"
        counts = [int(c) for c in (args.scale_clients or default_counts).split(",")]
        overrides = list(QUICK_OVERRIDES) if args.quick else []
        _say(t_start, f"scale: `fedpit run` with {counts} clients, 10 per round, 3 rounds …")
        results["scale"] = bench_scale(counts, overrides, work / "scale")

    if args.run_dir:
        results["phases"] = phase_seconds(Path(args.run_dir))
    if args.default_run:
        variants = [v.split(",") for v in args.default_run_vs]
        n = (1 + len(variants) + len(commits)) * args.default_run_repeats
        _say(t_start, f"default run{'s' if n > 1 else ''} into {work} ({n} × about 8 minutes) …")
        runs = default_runs(work, variants, args.default_run_repeats, commits)
        mine = runs["default"]
        results["default_run_end_to_end_s"] = statistics.fmean(mine["end_to_end_s"])
        results["phases"] = mine["phases"][0]
        if n > 1:
            results["default_runs"] = runs

    results["seconds"] = time.perf_counter() - t_start
    results["load_average_at_end"] = load_average()
    table = render(results)
    results["table"] = table
    print()
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {out} ({results['seconds']:.0f} s)")
    gen = results.get("generation")
    if gen and not gen["outputs_equal"]:
        print(
            f"FAIL: batched greedy outputs differ from the naive loop's on prompts "
            f"{gen['mismatched_prompts']}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
