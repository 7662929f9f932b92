"""FedPIT performance benchmark (issue 4): one command, one run, side by side.

``python -m bench.run [--quick] [--out bench/results.json] [--run-dir RUN_DIR]``

Measures, on the default model and real MedQuAD examples:

1. self-generation tokens/s: our batched generator vs a naive one-prompt-at-a-time loop
   over ``model.generate`` on the same SynGen response prompts (greedy outputs must be
   equal: the benchmark fails otherwise);
2. LoRA training tokens/s (non-padding tokens): our trainer vs TRL ``SFTTrainer`` at its
   efficient CPU settings, on identical token sequences;
3. peak resident memory of the simulation backend with 1 vs N clients, all training;
4. seconds per phase of a client round and the wall time of a run (read from a run dir);
5. the machine's limits: fp32 matmul FLOP/s and memory bandwidth, turned into model
   FLOP utilisation for training and the weight-streaming bound for decoding.

See bench/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import torch

PHASES = ("synth", "train-local", "select", "train-public", "total")
TARGETS = {"generation": 4.0, "training": 1.5, "memory": 1.3}
GB = 1e9


# --------------------------------------------------------------------------- helpers


def count_new_tokens(new_ids: Sequence[int], eos_id: int | None, pad_id: int | None) -> int:
    """Tokens a sequence really generated, from its new ids (the prompt cut off).

    The end-of-sequence token counts (the model produced it); what follows it, and any
    padding a batch adds after a sequence has stopped, does not.

    Args:
        new_ids: Generated ids of one row of a ``generate`` output.
        eos_id: End-of-sequence id (None: none).
        pad_id: Padding id (None: none; may equal ``eos_id``).

    Returns:
        The number of generated tokens.
    """
    for i, tok in enumerate(new_ids):
        if eos_id is not None and tok == eos_id:
            return i + 1
        if pad_id is not None and tok == pad_id:
            return i
    return len(new_ids)


def model_flops_utilisation(
    tokens: int, seconds: float, params: int, peak_flops: float
) -> dict[str, float]:
    """Training model FLOP/s and their share of the measured matmul peak.

    Uses the usual approximation of 6·N FLOPs per token for forward + backward (N the
    base model's parameters). With a frozen base and LoRA the backward skips the base
    weight gradients, so the real count is nearer 4·N: the 6·N figure is the convention
    that makes numbers comparable, not an exact count.

    Args:
        tokens: Non-padding tokens trained on.
        seconds: Wall time.
        params: Base model parameters N.
        peak_flops: Measured matmul FLOP/s of this machine.

    Returns:
        ``model_flops_per_s`` and ``mfu`` (a fraction of ``peak_flops``).
    """
    flops = 6.0 * params * tokens / seconds if seconds > 0 else 0.0
    return {"model_flops_per_s": flops, "mfu": flops / peak_flops if peak_flops > 0 else 0.0}


def decode_bound(weight_bytes: float, bandwidth: float, batch: int = 1) -> float:
    """Most tokens/s memory bandwidth allows when every step reads all weights once.

    A decoding step streams the weights once for the whole batch, so batch ``B`` divides
    the bytes read per generated token by ``B`` (the bound ignores the KV cache and
    compute, so it holds only while decoding stays memory bound).

    Args:
        weight_bytes: Bytes of weights read per decoding step.
        bandwidth: Memory bandwidth in bytes/s.
        batch: Sequences decoded together.

    Returns:
        The bound in generated tokens per second.
    """
    return bandwidth * batch / weight_bytes if weight_bytes > 0 else 0.0


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table (Markdown pipe syntax), columns padded to their widest cell."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def fmt_num(value: float | None, digits: int = 1) -> str:
    """A number for the table ("–" when missing)."""
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    """A ratio for the table, e.g. ``4.2×``."""
    return "–" if value is None else f"{value:.2f}×"


def tree_memory(pid: int) -> tuple[int, int]:
    """Summed RSS and PSS in bytes of process ``pid`` and all its descendants.

    RSS counts a page shared by several processes (mmap'd weights, libraries) once per
    process; PSS splits it among them, so summed PSS is the memory the tree really uses.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = pss = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = proc.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return rss, pss


def tree_rss(pid: int) -> int:
    """Summed resident set size in bytes of process ``pid`` and all its descendants."""
    return tree_memory(pid)[0]


class RssSampler:
    """Samples the summed RSS and PSS of a process tree on a background thread.

    Use as a context manager around the process's lifetime; ``peak`` / ``peak_pss`` are
    the largest samples (bytes).
    """

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            rss, pss = tree_memory(self.pid)
            self.peak = max(self.peak, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def phase_seconds(run_dir: Path) -> dict[str, Any]:
    """Seconds per client-round phase and the run's wall time, from a run directory.

    Reads ``clients/*/metrics.jsonl`` (the ``seconds-*`` counters of every client
    round) and ``summary.json`` (``seconds``, ``method``).

    Args:
        run_dir: A finished run directory.

    Returns:
        ``client_rounds``, ``mean`` and ``max`` seconds per phase, ``run_seconds``,
        ``method``.
    """
    values: dict[str, list[float]] = {p: [] for p in PHASES}
    rounds = 0
    for path in sorted(run_dir.glob("clients/*/metrics.jsonl")):
        for text in path.read_text().splitlines():
            if not text.strip():
                continue
            counters = json.loads(text).get("counters", {})
            rounds += 1
            for p in PHASES:
                values[p].append(float(counters.get(f"seconds-{p}", 0.0)))
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {
        "run_dir": str(run_dir),
        "method": summary.get("method"),
        "client_rounds": rounds,
        "mean": {p: statistics.fmean(v) if v else None for p, v in values.items()},
        "max": {p: max(v) if v else None for p, v in values.items()},
        "run_seconds": summary.get("seconds"),
    }


def best_of(fn: Callable[[], None], repeats: int) -> float:
    """The shortest wall time of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# --------------------------------------------------------------------------- machine


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s of an n×n product (best of ``repeats``, current threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    seconds = best_of(lambda: torch.mm(a, b, out=out), repeats)
    return 2.0 * n**3 / seconds


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Copy bandwidth in bytes/s (bytes read + bytes written) of a large fp32 tensor."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    seconds = best_of(lambda: dst.copy_(src), repeats)
    return 2.0 * src.numel() * 4 / seconds


def machine_limits(quick: bool) -> dict[str, float]:
    """Matmul FLOP/s and memory bandwidth of this machine, as this process uses it."""
    flops = matmul_flops(1024 if quick else 2048, 2 if quick else 5)
    bandwidth = memory_bandwidth(128 if quick else 512, 2 if quick else 5)
    return {
        "threads": torch.get_num_threads(),
        "matmul_flops": flops,
        "bandwidth_bytes_per_s": bandwidth,
    }


# --------------------------------------------------------------------------- generation


def response_prompts(cfg: Any, fmt: Any, clients: Sequence[Sequence[Any]], n: int) -> list[str]:
    """``n`` real SynGen response-phase prompts from the clients' private examples.

    Each prompt asks for the answer to one private question (round-robin over clients)
    with ``synth.response-demos`` other examples of the same client as demonstrations.
    """
    import random

    from fedpit.synth.responses import response_prompt

    rng = random.Random(cfg.seed)
    prompts = []
    for i in range(n):
        client = clients[i % len(clients)]
        example = client[(i // len(clients)) % len(client)]
        others = [e for e in client if e.id != example.id]
        demos = rng.sample(others, min(cfg.synth.response_demos, len(others)))
        prompts.append(
            response_prompt(example.instruction, demos, fmt, cfg.synth.demo_answer_words)
        )
    return prompts


class _Recorder:
    """A model proxy that records every ``generate`` output (to count real tokens)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.outputs: list[tuple[int, torch.Tensor]] = []

    def parameters(self) -> Iterable[torch.nn.Parameter]:
        return self.model.parameters()

    def eval(self) -> torch.nn.Module:
        return self.model.eval()

    def generate(self, **kwargs: Any) -> torch.Tensor:
        out = self.model.generate(**kwargs)
        self.outputs.append((kwargs["input_ids"].shape[1], out))
        return out


def _trim(new: list[int], eos_id: int | None, pad_id: int | None) -> list[int]:
    return new[: count_new_tokens(new, eos_id, pad_id)]


def naive_generate(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], spec: Any
) -> tuple[list[str], list[list[int]]]:
    """One ``model.generate`` call per prompt (what OpenFedLLM/Shepherd-style code does).

    Returns:
        The decoded texts (cut at end-of-sequence and the spec's stop strings) and the
        generated ids of each prompt.
    """
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    texts, ids = [], []
    model.eval()
    with torch.no_grad():
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            kwargs: dict[str, Any] = {
                "max_new_tokens": spec.max_new_tokens,
                "do_sample": False,
                "repetition_penalty": spec.repetition_penalty,
                "eos_token_id": eos_id,
                "pad_token_id": pad_id,
                "temperature": None,
                "top_p": None,
                "top_k": None,
            }
            if spec.stop:
                kwargs.update(stop_strings=list(spec.stop), tokenizer=tokenizer)
            out = model.generate(**enc, **kwargs)
            new = _trim(out[0, enc["input_ids"].shape[1] :].tolist(), eos_id, pad_id)
            ids.append(new)
            body = new[:-1] if new and new[-1] == eos_id else new
            text = tokenizer.decode(body, skip_special_tokens=True)
            for stop in spec.stop:
                text = text.split(stop, 1)[0]
            texts.append(text)
    return texts, ids


def bench_generation(
    rt: Any, cfg: Any, clients: Sequence[Sequence[Any]], n: int, max_new_tokens: int
) -> dict[str, Any]:
    """Our batched generator vs the naive loop on the same prompts; asserts equal output."""
    from fedpit.adapters import PUBLIC
    from fedpit.generator import make_generate_fn
    from fedpit.synth.responses import response_spec

    tok = rt.tokenizer
    prompts = response_prompts(cfg, rt.fmt, clients, n)
    spec = response_spec(rt.fmt, max_new_tokens, cfg.synth.repetition_penalty)
    rt.model.set_adapter(PUBLIC)  # SynGen runs with W_g in the public slot

    naive_generate(rt.model, tok, prompts[:1], replace(spec, max_new_tokens=2))  # warm-up
    recorder = _Recorder(rt.model)
    generate = make_generate_fn(recorder, tok, progress=False)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    ours = generate(prompts, spec)
    ours_s = time.perf_counter() - t0
    ours_ids = [
        _trim(out[row, width:].tolist(), tok.eos_token_id, tok.pad_token_id)
        for width, out in recorder.outputs
        for row in range(out.shape[0])
    ]

    t0 = time.perf_counter()
    naive_texts, naive_ids = naive_generate(rt.model, tok, prompts, spec)
    naive_s = time.perf_counter() - t0

    ours_texts = [g.text for g in ours]
    mismatches = [i for i, (a, b) in enumerate(zip(ours_texts, naive_texts, strict=True)) if a != b]
    same_ids = sorted(map(tuple, ours_ids)) == sorted(map(tuple, naive_ids))
    ours_tokens = sum(map(len, ours_ids))
    naive_tokens = sum(map(len, naive_ids))
    prompt_tokens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return {
        "prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "batch_size": min(16, len(prompts)),  # make_generate_fn's default batch
        "prompt_tokens_mean": statistics.fmean(prompt_tokens),
        "ours": {
            "seconds": ours_s,
            "tokens": ours_tokens,
            "tokens_per_s": ours_tokens / ours_s,
        },
        "naive": {
            "seconds": naive_s,
            "tokens": naive_tokens,
            "tokens_per_s": naive_tokens / naive_s,
        },
        "speedup": (ours_tokens / ours_s) / (naive_tokens / naive_s),
        "outputs_equal": not mismatches and same_ids,
        "mismatched_prompts": mismatches,
        "example": {"prompt_tail": prompts[0][-200:], "output": ours_texts[0][:300]},
    }


# --------------------------------------------------------------------------- training


def _trl_trainer(
    rt: Any,
    cfg: Any,
    encoded: Sequence[Any],
    batch: int,
    micro: int,
    seed: int,
    out_dir: Path,
) -> Any:
    """TRL ``SFTTrainer`` on a fresh copy of the base with the runtime's initial LoRA."""
    from datasets import Dataset
    from peft import get_peft_model
    from peft.utils import set_peft_model_state_dict
    from trl import SFTConfig, SFTTrainer

    from fedpit import model as model_lib
    from fedpit.adapters import LOCAL, get_state, lora_config
    from fedpit.batching import IGNORE_INDEX

    base = model_lib.load_model(
        model_lib.prepare(cfg.model.name), torch.device("cpu"), torch.float32
    )
    peft_model = get_peft_model(base, lora_config(cfg.lora))
    set_peft_model_state_dict(peft_model, get_state(rt.model, LOCAL))  # same start
    # A prompt-completion dataset in TRL's tokenised form: identical token sequences,
    # the loss on the completion (response) only, as ours.
    data = Dataset.from_list(
        [
            {
                "input_ids": list(e.input_ids),
                "completion_mask": [int(t != IGNORE_INDEX) for t in e.labels],
            }
            for e in encoded
        ]
    )
    args = SFTConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=max(1, batch // micro),
        num_train_epochs=1,
        learning_rate=cfg.train.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm,
        optim="adamw_torch",
        bf16=False,
        fp16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        max_length=cfg.model.max_length,
        packing=False,
        padding_free=False,
        completion_only_loss=True,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=seed,
    )
    return SFTTrainer(
        model=peft_model, args=args, train_dataset=data, processing_class=rt.tokenizer
    )


def bench_training(
    rt: Any, cfg: Any, clients: Sequence[Sequence[Any]], steps: int, batch: int, micro: int
) -> dict[str, Any]:
    """Our ``train_adapter`` vs TRL ``SFTTrainer`` on the same encoded examples."""
    from fedpit.adapters import LOCAL, get_state, set_state
    from fedpit.client import _encode
    from fedpit.train import train_adapter

    pool = [e for client in clients for e in client]
    examples = pool[: steps * batch]
    encoded = _encode(rt, examples, cfg.model.max_length)
    tokens = sum(len(e.input_ids) for e in encoded)
    targets = sum(e.num_target_tokens for e in encoded)
    seed = cfg.seed
    start_state = get_state(rt.model, LOCAL)

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    stats = train_adapter(
        rt.model,
        LOCAL,
        encoded,
        lr=cfg.train.lr,
        epochs=1,
        batch_size=batch,
        pad_id=rt.tokenizer.pad_token_id,
        seed=seed,
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm,
        micro_batch_size=micro,
        desc="bench train",
    )
    ours_s = time.perf_counter() - t0
    set_state(rt.model, LOCAL, start_state)

    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        trainer = _trl_trainer(rt, cfg, encoded, batch, micro, seed, Path(tmp))
        t0 = time.perf_counter()
        result = trainer.train()
        trl_s = time.perf_counter() - t0
    history = trainer.state.log_history
    step_losses = [h["loss"] for h in history if "loss" in h]
    counted = [int(h["num_tokens"]) for h in history if "num_tokens" in h]
    del trainer
    return {
        "examples": len(encoded),
        "batch_size": batch,
        "micro_batch_size": micro,
        "max_length": cfg.model.max_length,
        "lora": {"rank": cfg.lora.rank, "modules": list(cfg.lora.modules)},
        "tokens": tokens,
        "target_tokens": targets,
        "ours": {
            "seconds": ours_s,
            "steps": stats.steps,
            "tokens_per_s": tokens / ours_s,
            "mean_loss": stats.mean_loss,
        },
        "trl": {
            "seconds": trl_s,
            "steps": result.global_step,
            "tokens_per_s": tokens / trl_s,
            "mean_loss": result.training_loss,
            "last_step_loss": step_losses[-1] if step_losses else None,
            # TRL's own count of non-padding tokens: equal to "tokens" when both trainers
            # saw the same sequences.
            "counted_tokens": counted[-1] if counted else None,
        },
        "speedup": trl_s / ours_s,
    }


# --------------------------------------------------------------------------- memory


def simulation_peak(
    num_clients: int, overrides: Sequence[str], work: Path, interval: float = 0.5
) -> dict[str, Any]:
    """Run ``fedpit run`` (FedAvg, 1 round, all clients training) and sample its RSS."""
    run_dir = work / f"mem-{num_clients}"
    log = work / f"mem-{num_clients}.log"
    cmd = [
        sys.executable,
        "-m",
        "fedpit.cli",
        "run",
        "method=fedavg",
        "fed.rounds=1",
        f"data.num-clients={num_clients}",
        "data.partition=iid",
        f"run-dir={run_dir}",
        *overrides,
    ]
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        with RssSampler(proc.pid, interval) as sampler:
            code = proc.wait()
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{tail}")
    return {
        "clients": num_clients,
        "peak_rss_gb": sampler.peak / GB,
        "peak_pss_gb": sampler.peak_pss / GB,
        "samples": sampler.samples,
        "seconds": time.perf_counter() - t0,
        "command": " ".join(cmd[1:]),
    }


MEMORY_ARRANGEMENTS = {
    "default": [],  # workers = fed.parallel-clients auto: min(clients, CPUs + 1, memory)
    "one worker": ["fed.parallel-clients=1"],  # every client in one process, one base model
}


def bench_memory(counts: Sequence[int], overrides: Sequence[str], work: Path) -> dict[str, Any]:
    """Peak summed RSS/PSS per client count, for each worker arrangement.

    The ratio is the last count's peak over the first's (PSS: memory really used).
    """
    out: dict[str, Any] = {"overrides": list(overrides), "arrangements": {}}
    for name, extra in MEMORY_ARRANGEMENTS.items():
        sub = work / name.replace(" ", "-")
        sub.mkdir(parents=True, exist_ok=True)
        runs = [simulation_peak(n, [*overrides, *extra], sub) for n in counts]
        out["arrangements"][name] = {
            "runs": runs,
            "ratio": runs[-1]["peak_pss_gb"] / runs[0]["peak_pss_gb"],
            "ratio_rss": runs[-1]["peak_rss_gb"] / runs[0]["peak_rss_gb"],
        }
    return out


# --------------------------------------------------------------------------- main


def _limits_rows(limits: dict[str, float], gen: dict | None, train: dict | None) -> list[list]:
    rows = [
        ["machine: fp32 matmul", f"{limits['matmul_flops'] / 1e9:.1f} GFLOP/s", "", "", ""],
        ["machine: copy bandwidth", f"{limits['bandwidth_bytes_per_s'] / GB:.1f} GB/s", "", "", ""],
    ]
    if gen:
        rows.append(
            [
                f"decode bound (batch 1 / {gen['batch_size']})",
                f"{gen['bound_batch1']:.1f} / {gen['bound_batched']:.1f} tok/s",
                "",
                "",
                "weights ÷ bandwidth",
            ]
        )
    if train:
        rows.append(
            [
                "training MFU (ours / TRL)",
                f"{100 * train['ours']['mfu']:.1f}% / {100 * train['trl']['mfu']:.1f}%",
                "",
                "",
                "6·N·tokens ÷ matmul peak",
            ]
        )
    return rows


def build_rows(results: dict[str, Any]) -> list[list[str]]:
    """The table rows of a results dict (any section may be missing)."""
    rows: list[list[str]] = []
    gen, train = results.get("generation"), results.get("training")
    mem, phases = results.get("memory"), results.get("phases")
    if gen:
        rows.append(
            [
                "generation tokens/s (ours vs naive)",
                fmt_num(gen["ours"]["tokens_per_s"]),
                fmt_num(gen["naive"]["tokens_per_s"]),
                fmt_ratio(gen["speedup"]),
                f"≥ {TARGETS['generation']}× · outputs equal: {gen['outputs_equal']}",
            ]
        )
    if train:
        rows.append(
            [
                "training tokens/s (ours vs SFTTrainer)",
                fmt_num(train["ours"]["tokens_per_s"]),
                fmt_num(train["trl"]["tokens_per_s"]),
                fmt_ratio(train["speedup"]),
                f"≥ {TARGETS['training']}×",
            ]
        )
        rows.append(
            [
                "training mean loss (ours vs SFTTrainer)",
                fmt_num(train["ours"]["mean_loss"], 3),
                fmt_num(train["trl"]["mean_loss"], 3),
                "",
                "comparable",
            ]
        )
    for name, arr in (mem or {}).get("arrangements", {}).items():
        first, last = arr["runs"][0], arr["runs"][-1]
        kinds = (("PSS", "peak_pss_gb", "ratio"), ("RSS", "peak_rss_gb", "ratio_rss"))
        for kind, key, ratio in kinds:
            rows.append(
                [
                    f"peak {kind} GB, {name} ({last['clients']} vs {first['clients']} clients)",
                    fmt_num(last[key], 2),
                    fmt_num(first[key], 2),
                    fmt_ratio(arr[ratio]),
                    f"≤ {TARGETS['memory']}×" if kind == "PSS" else "shared pages per process",
                ]
            )
    if phases:
        for p in PHASES:
            rows.append(
                [
                    f"client round: seconds-{p} (mean / max)",
                    fmt_num(phases["mean"][p]),
                    fmt_num(phases["max"][p]),
                    "",
                    f"{phases['client_rounds']} client rounds",
                ]
            )
        rows.append(["run wall time, s", fmt_num(phases["run_seconds"]), "", "", phases["run_dir"]])
    if "default_run_end_to_end_s" in results:
        rows.append(
            [
                "default run end to end, s",
                fmt_num(results["default_run_end_to_end_s"]),
                "",
                "",
                "process start to exit (model load, Ray, federation, summary)",
            ]
        )
    if "limits" in results:
        rows += _limits_rows(results["limits"], gen, train)
    return rows


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
        "--sections",
        default="limits,generation,training,memory",
        help="comma-separated subset of limits,generation,training,memory",
    )
    p.add_argument("--prompts", type=int, help="generation prompts (default 16; quick 4)")
    p.add_argument("--max-new-tokens", type=int, help="default synth.max-response-tokens")
    p.add_argument("--steps", type=int, help="training steps (default 6; quick 2)")
    p.add_argument("--clients", type=int, help="the larger client count (default 10; quick 2)")
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
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    from fedpit.config import from_flat
    from fedpit.run_data import run_data_for
    from fedpit.runtime import get_runtime, set_threads

    cfg = from_flat({})
    set_threads(cfg.train.threads if args.threads is None else args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedpit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "quick": args.quick,
        "torch_threads": torch.get_num_threads(),
        "cpus": psutil.cpu_count(),
        "load_average_at_start": list(psutil.getloadavg()),
        "targets": TARGETS,
    }

    if "limits" in sections:
        _say(t_start, "measuring machine limits …")
        results["limits"] = machine_limits(args.quick)

    rt = clients = None
    if sections & {"generation", "training"}:
        _say(t_start, "loading the default model and data …")
        rt = get_runtime(cfg.model, cfg.lora)
        clients = run_data_for(cfg).split.clients
        base = rt.model.get_base_model()
        params = sum(p.numel() for p in base.parameters())  # tied weights count once
        weight_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
        results["model"] = {"name": cfg.model.name, "params": params, "weight_bytes": weight_bytes}

    if "generation" in sections:
        n = args.prompts or (4 if args.quick else 16)
        new = args.max_new_tokens or (16 if args.quick else cfg.synth.max_response_tokens)
        _say(t_start, f"generation: {n} prompts × ≤{new} new tokens, ours then naive …")
        gen = bench_generation(rt, cfg, clients, n, new)
        if "limits" in results:
            bw = results["limits"]["bandwidth_bytes_per_s"]
            wb = results["model"]["weight_bytes"]
            gen["bound_batch1"] = decode_bound(wb, bw, 1)
            gen["bound_batched"] = decode_bound(wb, bw, gen["batch_size"])
            gen["naive"]["share_of_bound"] = gen["naive"]["tokens_per_s"] / gen["bound_batch1"]
            gen["ours"]["share_of_bound"] = gen["ours"]["tokens_per_s"] / gen["bound_batched"]
        results["generation"] = gen

    if "training" in sections:
        steps = args.steps or (2 if args.quick else 6)
        batch = 4 if args.quick else cfg.train.batch_size
        micro = 2 if args.quick else (cfg.train.micro_batch_size or batch)
        _say(t_start, f"training: {steps} steps of {batch} (micro {micro}), ours then TRL …")
        train = bench_training(rt, cfg, clients, steps, batch, micro)
        if "limits" in results:
            peak = results["limits"]["matmul_flops"]
            params = results["model"]["params"]
            for who in ("ours", "trl"):
                secs = train[who]["seconds"]
                train[who].update(model_flops_utilisation(train["tokens"], secs, params, peak))
        results["training"] = train

    if "memory" in sections:
        big = args.clients or (2 if args.quick else 10)
        overrides = (
            [
                "data.examples-per-client=4",
                "data.test-size=4",
                "eval.client-test-size=0",
                "model.max-length=64",
                "train.batch-size=4",
                "train.micro-batch-size=0",
            ]
            if args.quick
            else []
        )
        _say(t_start, f"memory: `fedpit run` with 1 then {big} clients …")
        results["memory"] = bench_memory([1, big], overrides, work)

    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.default_run:
        run_dir = work / "default-run"
        _say(t_start, f"default run into {run_dir} (about 8 minutes) …")
        cmd = [sys.executable, "-m", "fedpit.cli", "run", f"run-dir={run_dir}"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        results["default_run_end_to_end_s"] = time.perf_counter() - t0
    if run_dir is not None:
        results["phases"] = phase_seconds(run_dir)

    results["seconds"] = time.perf_counter() - t_start
    results["load_average_at_end"] = list(psutil.getloadavg())
    headers = ["measure", "value", "baseline", "ratio", "target / note"]
    table = format_table(headers, build_rows(results))
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
