"""``fedpit eval``, ``fedpit generate`` and ``fedpit export``: use the models of a run.

Heavy modules (torch, transformers) are imported inside the commands so that the
``fedpit`` command itself starts quickly.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, cast

from fedpit.errors import ConfigError
from fedpit.eval.judge.backends import add_judge_arguments, make_backend
from fedpit.eval.judge.judge import judge_pairs

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from fedpit.config.schema import LoraSettings
    from fedpit.model.prompts import PromptFormat


EVAL_HELP = """\
Answer a test set with models of a run and score the answers against the references
(ROUGE-L, token F1, MiniLM semantic similarity). Writes RUN_DIR/eval/<target>__<testset>.json
and .jsonl (per-example answers). Targets: base, global, round:N, client:ID.

  fedpit eval runs/my-run                                   # base and global, held-out split
  fedpit eval runs/my-run --target round:1 --target global --test-set medinstruct --limit 50
"""


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``eval``, ``generate`` and ``export`` to the ``fedpit`` command."""
    ev = subparsers.add_parser(
        "eval",
        help="utility of a run's models on a test set",
        description=EVAL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    ev.add_argument(
        "--target",
        action="append",
        metavar="T",
        help="base, global, round:N or client:ID (repeatable; default: base and the final "
        "model: global, or each client:ID of a run without one, e.g. local)",
    )
    ev.add_argument(
        "--test-set",
        default="heldout",
        metavar="SET",
        help="heldout (the run's held-out split), medinstruct, or a JSON/JSONL/CSV file",
    )
    ev.add_argument("--limit", type=int, default=0, metavar="N", help="evaluate N examples")
    ev.add_argument("--seed", type=int, default=0, help="seed of the --limit subsample")
    ev.add_argument("--max-new-tokens", type=int, default=128, metavar="N")
    ev.add_argument("--batch-size", type=int, default=8, metavar="N")
    add_judge_arguments(ev)
    ev.set_defaults(func=cmd_eval)

    gen = subparsers.add_parser(
        "generate",
        help="answer one prompt with a trained model",
        description="Answer PROMPT with a run's model (RUN_DIR) or any base model (MODEL: "
        "smollm2, a model directory such as an export, a .gguf file or a hub id).",
    )
    gen.add_argument("model", metavar="RUN_DIR|MODEL")
    gen.add_argument("prompt", metavar="PROMPT")
    gen.add_argument(
        "--target", metavar="T", help="with RUN_DIR: base, global (default), round:N, client:ID"
    )
    gen.add_argument("--max-new-tokens", type=int, default=256, metavar="N")
    gen.set_defaults(func=cmd_generate)

    exp = subparsers.add_parser(
        "export",
        help="merge an adapter into the base model and save a Hugging Face model",
        description="Merge a run's adapter into its base weights and save a standard "
        "Hugging Face model and tokenizer to DIR (loadable without FedPIT or PEFT).",
    )
    exp.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    exp.add_argument("--target", default="global", metavar="T", help="global, round:N, client:ID")
    exp.add_argument("--out", required=True, type=Path, metavar="DIR", help="new directory")
    exp.set_defaults(func=cmd_export)


def cmd_eval(args: argparse.Namespace) -> int:
    """``fedpit eval``: evaluate each target on one test set, write and print the results."""
    from fedpit.data.partition import embed_minilm
    from fedpit.eval import utility
    from fedpit.eval.attack.targets import default_targets, load_runtime, resolve_target, run_config

    if args.limit < 0 or args.max_new_tokens < 1 or args.batch_size < 1:
        raise ConfigError("--limit must be ≥ 0, --max-new-tokens and --batch-size ≥ 1")
    run_config(args.run_dir)  # fails first if RUN_DIR is not a run directory
    names = list(dict.fromkeys(args.target or default_targets(args.run_dir)))
    targets = [resolve_target(args.run_dir, name) for name in names]
    label, examples = utility.load_test_set(args.test_set, args.run_dir)
    examples = utility.subsample(examples, args.limit, args.seed)
    print(f"TEST SET: {utility.describe_test_set(args.test_set, args.run_dir)}", flush=True)
    print(f"          evaluating {len(examples)} examples", flush=True)
    backend = make_backend(args)  # configuration errors surface before any generation
    _, rt = load_runtime(args.run_dir)
    table = []
    for target in targets:
        rows, metrics = utility.evaluate(
            rt, target, examples, args.max_new_tokens, args.batch_size, embed_minilm
        )
        round_ = utility.target_round(args.run_dir, target.name)
        judged = None
        if backend is not None:
            result = judge_pairs(
                [utility.question_text(e) for e in examples],
                [r["answer"] for r in rows],
                [e.output for e in examples],
                backend,
                retries=args.judge_retries,
                seed=args.seed,
            )
            for row, comparison in zip(rows, result.comparisons, strict=True):
                row["judge"] = comparison.verdict
            judged = result.to_dict()
        utility.write_eval(args.run_dir, target.name, label, rows, metrics, round_, judged)
        table.append((target.name, round_, len(rows), metrics))
    print(format_table(table))
    print(f"results: {Path(args.run_dir) / 'eval'}")
    return 0


def format_table(results: list[tuple[str, int | None, int, dict[str, float]]]) -> str:
    """A plain-text table: one line per target with its mean scores."""
    width = max(len("target"), *(len(name) for name, *_ in results))
    lines = [f"{'target':<{width}}  round    n  ROUGE-L  token-F1  semantic"]
    for name, round_, n, m in results:
        shown = "-" if round_ is None else str(round_)
        lines.append(
            f"{name:<{width}}  {shown:>5}  {n:>3}  {m['rouge_l']:>7.4f}  "
            f"{m['token_f1']:>8.4f}  {m['semantic']:>8.4f}"
        )
    return "\n".join(lines)


def cmd_generate(args: argparse.Namespace) -> int:
    """``fedpit generate``: answer one prompt, greedy, and print the answer."""
    from fedpit.data.example import Example
    from fedpit.eval.attack.targets import GLOBAL, activate, load_runtime, resolve_target
    from fedpit.eval.utility import REPETITION_PENALTY
    from fedpit.lm.batched_generation import make_generate_fn
    from fedpit.lm.generation import GenerationSpec

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens = {args.max_new_tokens}; expected ≥ 1")
    source = Path(args.model).expanduser()
    model: torch.nn.Module  # a run's PEFT model, or a plain base or exported model
    if (source / "config.toml").is_file():
        _, rt = load_runtime(source)
        activate(rt, resolve_target(source, args.target or GLOBAL))
        model, tokenizer, fmt = rt.model, rt.tokenizer, rt.fmt
    else:
        if args.target:
            raise ConfigError(f"--target needs a run directory; {args.model} has no config.toml")
        model, tokenizer, fmt = _load_plain(args.model)
    example = Example(id="prompt", instruction=args.prompt, input="", output="")
    generate = make_generate_fn(model, tokenizer, batch_size=1, progress=False)
    spec = GenerationSpec(args.max_new_tokens, repetition_penalty=REPETITION_PENALTY)
    (answer,) = generate([fmt.prompt(example)], spec)
    print(answer.text.strip())
    return 0


def _load_plain(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, PromptFormat]:
    """A base or exported model (no adapters), its tokenizer and its prompt format."""
    import torch

    from fedpit.model import resolve as model_lib
    from fedpit.model.prompts import make_prompt_format

    path = Path(name).expanduser()
    if not path.exists() and path.parent != Path(".") and path.parent.is_dir():
        # "runs/typo" is a local path, not a hub id: do not go looking on the hub.
        raise ConfigError(f"{name} is neither a run directory nor a model: it does not exist")
    resolved = model_lib.prepare(name)
    tokenizer = model_lib.load_tokenizer(resolved)
    model = model_lib.load_model(resolved, model_lib.pick_device("auto"), torch.float32)
    return model, tokenizer, make_prompt_format("auto", tokenizer)


def cmd_export(args: argparse.Namespace) -> int:
    """``fedpit export``: merge the target's adapter into its base and save the model."""
    from fedpit.eval.attack.targets import resolve_target, run_config

    out = Path(args.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty directory; choose another")
    cfg = run_config(args.run_dir)
    target = resolve_target(args.run_dir, args.target)
    if target.adapter_dir is None:
        raise ConfigError(
            f"target {target.name!r} has no adapter to merge; export global, round:N or client:ID"
        )
    provenance = {
        "run_dir": str(Path(args.run_dir).resolve()),
        "target": target.name,
        "base_model": cfg.model.name,
    }
    export_merged(cfg.model.name, cfg.lora, target.adapter_dir, out, provenance)
    print(f"exported {target.name} of {args.run_dir} (merged into {cfg.model.name}) to {out}")
    return 0


def merge_adapter(base_path: str, lora: LoraSettings, adapter_dir: Path) -> PreTrainedModel:
    """A fresh copy of the base model with the adapter's LoRA update merged into its weights."""
    import torch
    from safetensors.torch import load_file

    from fedpit.adapters import set_state, wrap
    from fedpit.model import resolve as model_lib

    base = model_lib.load_model(base_path, torch.device("cpu"), torch.float32)
    peft_model = wrap(base, lora)
    set_state(peft_model, "default", load_file(str(adapter_dir / "adapter_model.safetensors")))
    # peft types the result as a Module; for a LoRA model it is the base model, merged.
    return cast("PreTrainedModel", peft_model.merge_and_unload())


def export_merged(
    model_name: str,
    lora: LoraSettings,
    adapter_dir: Path,
    out: Path,
    provenance: dict[str, str],
) -> None:
    """Save the merged model, the base tokenizer and ``fedpit.json`` to ``out``, atomically."""
    from transformers import AutoTokenizer

    from fedpit.model import resolve as model_lib

    base_path = model_lib.prepare(model_name)
    merged = merge_adapter(base_path, lora, adapter_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.export-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base_path).save_pretrained(tmp)
        (tmp / "fedpit.json").write_text(json.dumps(provenance, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # checked empty by the caller
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
