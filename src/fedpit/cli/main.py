"""``fedpit`` command line: ``fedpit run [--config FILE] [key=value ...]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fedpit.cli.console import print_summary
from fedpit.config.load import build_config, default_flat
from fedpit.config.schema import FEDERATED_METHODS, RunConfig
from fedpit.errors import ConfigError, FedPITError

if TYPE_CHECKING:
    from flwr.app.typing import ConfigRecordValues

    from fedpit.data.example import Example
    from fedpit.lm.runtime import Runtime
    from fedpit.runs.rundir import RunDir

log = logging.getLogger("fedpit")
_HANDLER = logging.StreamHandler()
_HANDLER.setFormatter(logging.Formatter("%(message)s"))

RUN_HELP = """\
Run one FedPIT (or baseline) job and write a run directory.

Configuration is read from the defaults, then --config FILE (TOML: flat dotted keys
or nested tables; a pyproject.toml's [tool.flwr.app.config] works too), then the
key=value overrides, e.g.:

  fedpit run fed.rounds=3 fed.beta=0.25
  fedpit run --config configs/medquad-9-sources.toml method=fedavg

Run `fedpit keys` to list every key with its default.

A federated run killed or failed after some rounds continues from its last completed
round with `fedpit run --resume RUN_DIR` (its saved config.toml is used).
"""


WORKER_MEMORY_GB = 6.0
"""Peak resident memory of one simulation worker with the default model (measured)."""


def auto_parallel(
    per_round: int, cpus_per_client: int, cpus: int | None = None, memory_gb: float | None = None
) -> int:
    """How many simulated clients run at once when ``fed.parallel-clients = 0``.

    One more worker than the cores allow (so a round of 3 clients on 2 cores does not
    leave a core idle while the third runs alone: measured 236 s vs 422 s per round),
    never more than the sampled clients, and never more than memory holds.
    """
    cpus = cpus or os.cpu_count() or 1
    if memory_gb is None:
        memory_gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    by_cpu = cpus // cpus_per_client + 1
    by_memory = max(1, int(memory_gb * 0.8 // WORKER_MEMORY_GB))
    return max(1, min(per_round, by_cpu, by_memory))


def resume_target(
    run_dir: str, config_file: str | None, overrides: Sequence[str]
) -> tuple[RunConfig, RunDir]:
    """The saved configuration and run directory of a federated run to continue.

    Refuses a directory that is not a run directory, a run without a server, a finished
    run, and any attempt to change the configuration of the run being continued.
    """
    from fedpit.runs.rundir import open_run_dir

    if config_file or overrides:
        raise ConfigError(
            "--resume continues a run with its saved config.toml; drop --config and the "
            "key=value overrides"
        )
    cfg, rd = open_run_dir(run_dir)
    if not cfg.is_federated:
        raise ConfigError(
            f"--resume {rd.root}: method {cfg.method} runs without a server and cannot be "
            f"resumed; resumable methods: {', '.join(FEDERATED_METHODS)}"
        )
    if rd.summary.exists():
        raise ConfigError(
            f"--resume {rd.root}: the run is already complete ({cfg.fed.rounds} rounds, "
            "summary.json written); nothing to resume"
        )
    return cfg, rd


def _simulate(cfg: RunConfig, rd: RunDir | None = None, verbose: bool = True) -> dict[str, object]:
    """Run a federated method under Flower's Simulation Engine (in ``rd`` if given).

    Without ``verbose``, Flower's and Ray's logs go to ``RUN_DIR/logs/`` (see
    :mod:`fedpit.cli.console`) and the console shows FedPIT's own lines.
    """
    from contextlib import nullcontext

    from flwr.simulation import run_simulation

    from fedpit.cli import console
    from fedpit.fed import client_app
    from fedpit.fed.server_app import make_server_app
    from fedpit.runs.rundir import create_run_dir

    if rd is None:
        rd = create_run_dir(cfg)
    print(f"Run directory: {rd.root}", flush=True)
    parallel = cfg.fed.parallel_clients or auto_parallel(
        cfg.fed.clients_per_round or cfg.data.num_clients, cfg.fed.cpus_per_client
    )
    backend: dict[str, dict[str, ConfigRecordValues]] = {
        "client_resources": {
            "num_cpus": cfg.fed.cpus_per_client,
            "num_gpus": cfg.fed.gpus_per_client,
        },
        "init_args": {
            "include_dashboard": False,
            "num_cpus": parallel * cfg.fed.cpus_per_client,
            "log_to_driver": verbose,  # the actors' output: live, or in logs/ray/
        },
    }
    logs = rd.root / "logs"
    with nullcontext() if verbose else console.quiet(logs):
        run_simulation(
            server_app=make_server_app((cfg, rd)),
            client_app=client_app.app,
            num_supernodes=cfg.data.num_clients,
            backend_config=backend,
        )
    if not verbose:
        console.copy_ray_logs(logs)
    if not rd.summary.exists():
        raise FedPITError(
            f"the federated run did not finish; see the log above and {rd.root}; continue it "
            f"after its last completed round with: fedpit run --resume {rd.root}"
        )
    summary = json.loads(rd.summary.read_text())
    if not isinstance(summary, dict):
        raise FedPITError(f"{rd.summary} does not hold a JSON object")
    return summary


def cmd_run(args: argparse.Namespace) -> int:
    """``fedpit run``: prepare data and model, federate, print a summary."""
    from fedpit.data.prepare import run_data_for
    from fedpit.lm.runtime import get_runtime
    from fedpit.model import resolve as model_lib

    rd = None
    if args.resume:
        cfg, rd = resume_target(args.resume, args.config, args.overrides)
    else:
        cfg = build_config(args.config, args.overrides)
    run_data = run_data_for(cfg)
    sizes = ", ".join(
        f"{n}: {len(c)}"
        for n, c in zip(run_data.split.client_names, run_data.split.clients, strict=True)
    )
    print(f"DATA: {run_data.description}", flush=True)
    removed = run_data.split.removed
    print(
        f"      clients ({run_data.partition}) {sizes}; held-out test {len(run_data.split.test)} "
        f"(training candidates dropped for repeating a test question: "
        f"{removed.get('same_question', 0)}, a test answer: {removed.get('same_answer', 0)})",
        flush=True,
    )
    t0 = time.perf_counter()
    path = model_lib.prepare(cfg.model.name)
    # Loaded before the run directory exists, so a model, tokenizer or template that
    # cannot be used leaves nothing behind; the server reuses this cached runtime.
    rt = get_runtime(cfg.model, cfg.lora)
    print(
        f"MODEL: {cfg.model.name} → {path} (ready in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    warn_over_budget(rt, [ex for c in run_data.split.clients for ex in c], cfg.model.max_length)
    print(f"METHOD: {cfg.method}, {cfg.fed.rounds} rounds, β = {cfg.fed.beta}", flush=True)
    if cfg.is_federated:
        summary = _simulate(cfg, rd, verbose=getattr(args, "verbose", False))
    else:
        from fedpit.fed.standalone import run_standalone

        summary = run_standalone(cfg)
    print_summary(summary)
    return 0


def warn_over_budget(rt: Runtime, examples: Sequence[Example], max_length: int) -> None:
    """Warn (on stderr) about training examples that will be truncated to the token budget.

    Tokens are counted as training encodes an example: its prompt, then its response
    with the template's end text (:func:`fedpit.fed.client._encode`).
    """
    from fedpit.data.budget import over_budget

    def count_tokens(example: Example) -> int:
        prompt = rt.tokenizer(rt.fmt.prompt(example), add_special_tokens=False)
        response = rt.tokenizer(example.output + rt.fmt.end_text, add_special_tokens=False)
        return len(prompt["input_ids"]) + len(response["input_ids"])

    warning = over_budget(examples, count_tokens, max_length).warning()
    if warning:
        import textwrap

        text = textwrap.fill(f"fedpit: warning: {warning}", width=100, subsequent_indent="  ")
        print(text, file=sys.stderr, flush=True)


def cmd_keys(args: argparse.Namespace) -> int:
    """``fedpit keys``: every configuration key and its default."""
    del args
    for key, value in default_flat().items():
        print(f"{key} = {json.dumps(value)}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fedpit`` command."""
    parser = argparse.ArgumentParser(
        prog="fedpit",
        description="FedPIT: privacy-preserving, few-shot federated instruction tuning.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run a federated (or baseline) job",
        description=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", metavar="FILE", help="TOML file of configuration keys")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted federated run after its last completed round",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        help="show Flower's and Ray's logs live (default: they go to RUN_DIR/logs/)",
    )
    run.set_defaults(func=cmd_run)
    keys = sub.add_parser("keys", help="list configuration keys and defaults")
    keys.set_defaults(func=cmd_keys)
    # Evaluation, attacks, sweeps and reports live with their components.
    from fedpit.cli.attack import add_commands as add_attack_commands
    from fedpit.cli.evaluate import add_commands as add_utility_commands
    from fedpit.cli.report import add_commands as add_report_commands

    add_utility_commands(sub)
    add_attack_commands(sub)
    from fedpit.eval.compare import add_commands as add_compare_commands

    add_compare_commands(sub)
    from fedpit.eval.paired_utility import add_commands as add_paired_utility_commands

    add_paired_utility_commands(sub)
    add_report_commands(sub)
    from fedpit.cli.deploy import add_commands as add_deploy_commands  # certs, node-key, federation

    add_deploy_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors print one clear line and exit 2, never a traceback."""
    _HANDLER.stream = sys.stderr  # the current one (tests swap it; the old may be closed)
    if _HANDLER not in log.handlers:  # once, however often main() runs in a process
        log.addHandler(_HANDLER)
    log.setLevel(logging.INFO)
    log.propagate = False  # Flower's own logger prints its lines; do not print them twice
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FedPITError as err:
        print(f"fedpit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedpit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
