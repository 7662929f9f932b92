"""The results table: ``results.json`` (or any subset of its sections) as Markdown rows.

Every figure sits beside its baseline, their ratio and the target it is judged
against. Pure formatting: no measurement, no heavy imports.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from bench.phases import PHASES
from bench.units import GB

TARGETS = {"generation": 8.0, "training": 1.5, "memory": 1.3, "scale": 1.3}
"""Targets: generation and training speed-ups (≥); memory and scale ratios (≤)."""

HEADERS = ["measure", "value", "baseline", "ratio", "target / note"]
"""Columns of the results table."""


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


def _limits_rows(
    limits: dict[str, float], gen: dict[str, Any] | None, train: dict[str, Any] | None
) -> list[list[str]]:
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
    if gen and "compute_bound" in gen:
        shares = " / ".join(
            f"{100 * gen[w]['share_of_compute_bound']:.0f}%"
            for w in ("ours", "ours_bf16", "generate", "naive")
            if w in gen
        )
        rows.append(
            [
                "generation compute bound (prefill counted)",
                f"{gen['compute_bound']:.1f} tok/s",
                "",
                "",
                f"2·N·(prompt + new) ÷ fp32 peak · share ours / bf16 / generate / naive: {shares}",
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


def _interval(value: Sequence[float]) -> str:
    return f"{value[0]:.2f} [{value[1]:.2f}, {value[2]:.2f}]"


def _quality_rows(quality: dict[str, Any] | None) -> list[list[str]]:
    """SynGen quality of each speed lever against the default, over the seeds."""
    if not quality:
        return []
    summary = quality["summary"]
    ref = summary.get("fp32")
    rows = []
    for name, v in summary.items():
        if name == "fp32" or ref is None or "ifs_auc_vs_reference" not in v:
            continue
        rows.append(
            [
                f"SynGen yield, {name} vs fp32 ({len(v['seeds'])} seeds, round 1)",
                fmt_num(v["yield_mean"], 3),
                fmt_num(ref["yield_mean"], 3),
                fmt_ratio(v["seconds_ratio_vs_reference"]),
                f"ratio = speed-up · AUC vs fp32 (0.5 = same): IFS "
                f"{_interval(v['ifs_auc_vs_reference'])}, response length "
                f"{_interval(v['length_auc_vs_reference'])} · "
                f"{v['candidates']} vs {ref['candidates']} kept{_retry_note(v, ref)}",
            ]
        )
    return rows


def _retry_note(variant: dict[str, Any], ref: dict[str, Any]) -> str:
    """What the retry rounds of failed responses cost each (results before it: nothing)."""
    if "retry_share" not in variant or "retry_share" not in ref:
        return ""
    return (
        f" · retry rounds {variant['retry_share']:.0%} vs {ref['retry_share']:.0%} of SynGen's time"
    )


def _rate_row(
    name: str, ours: dict[str, Any], base: dict[str, Any], ratio: float, note: str
) -> list[str]:
    """A tokens/s row: ours, the baseline, the ratio and a note."""
    return [
        name,
        fmt_num(ours["tokens_per_s"]),
        fmt_num(base["tokens_per_s"]),
        fmt_ratio(ratio),
        note,
    ]


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
        if "generate" in gen:
            rows.append(
                [
                    "generation tokens/s (ours vs batched generate)",
                    fmt_num(gen["ours"]["tokens_per_s"]),
                    fmt_num(gen["generate"]["tokens_per_s"]),
                    fmt_ratio(gen["speedup_vs_generate"]),
                    "same batches, left-padded",
                ]
            )
        if "ours_bf16" in gen:
            bf16 = gen["ours_bf16"]
            rows.append(
                _rate_row(
                    "generation tokens/s (ours, base in bf16, vs naive)",
                    bf16,
                    gen["naive"],
                    gen["speedup_bf16"],
                    f"synth.generation-dtype = bfloat16 · greedy texts equal to fp32: "
                    f"{100 * bf16['same_text_share']:.0f}%",
                )
            )
        if "ours_shared" in gen:
            sh = gen["ours_shared"]
            rows.append(
                [
                    f"generation tokens/s (ours, demonstrations shared by {sh['shared_demos']})",
                    fmt_num(sh["tokens_per_s"]),
                    fmt_num(gen["naive"]["tokens_per_s"]),
                    fmt_ratio(gen["speedup_shared"]),
                    f"synth.shared-demos = {sh['shared_demos']} · prefill tokens computed "
                    f"{sh['prefill_tokens']} vs {sh['prefill_tokens_unshared']} unshared · "
                    f"{sh['seconds']:.1f} s vs {gen['ours']['seconds']:.1f} s",
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
        if "ours_bf16" in train:
            b16 = train["ours_bf16"]
            rows.append(
                _rate_row(
                    "training tokens/s (ours, base in bf16, vs ours fp32)",
                    b16,
                    train["ours"],
                    train["speedup_bf16"],
                    f"train.base-dtype = bfloat16 · alternated with fp32 · mean loss "
                    f"{b16['mean_loss']:.3f} vs {train['ours']['mean_loss']:.3f}",
                )
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
    scale = results.get("scale")
    if scale:
        first, last = scale["runs"][0], scale["runs"][-1]
        versus = f"({last['clients']} vs {first['clients']} clients, 10 per round)"
        for label, key, ratio in (
            ("scale: peak PSS GB", "peak_pss_gb", "pss_ratio"),
            ("scale: seconds per round", "mean_round_s", "round_seconds_ratio"),
        ):
            middle = " · ".join(f"{r['clients']}: {r[key]:.2f}" for r in scale["runs"])
            rows.append(
                [
                    f"{label} {versus}",
                    fmt_num(last[key], 2),
                    fmt_num(first[key], 2),
                    fmt_ratio(scale[ratio]),
                    f"≤ {TARGETS['scale']}× · {middle}",
                ]
            )
    rows += _quality_rows(results.get("quality"))
    step = results.get("compile_step")
    if step and "compiled_ms_per_step" in step:
        rows.append(
            [
                f"decoding step ms, batch {step['prompts']} (torch.compile vs eager)",
                fmt_num(step["compiled_ms_per_step"]),
                fmt_num(step["eager_ms_per_step"]),
                fmt_ratio(step["speedup"]),
                f"python -m bench.compile_step · compilation {step['compile_s']:.0f} s · "
                f"same tokens: {step['same_tokens']}",
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
        for name, c in phases.get("synth_calls", {}).items():
            rows.append(
                [
                    f"SynGen call: {name}, seconds (mean)",
                    fmt_num(c["seconds_mean"]),
                    "",
                    "",
                    f"{c['share']:.0%} of SynGen · {c['prompts_mean']:.1f} prompts · "
                    f"in {c['rounds']} client rounds",
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
    rows += _default_runs_rows(results.get("default_runs", {}))
    # An earlier alternated comparison kept beside the last one (merged results files).
    rows += _default_runs_rows(results.get("default_runs_earlier", {}), " (earlier runs)")
    if "limits" in results:
        rows += _limits_rows(results["limits"], gen, train)
    return rows


def _outcome_note(phases: Sequence[dict[str, Any]]) -> str:
    """Yield and final test loss of each run, and SynGen's and training's mean seconds."""

    def mean(key: str) -> float:
        return statistics.fmean(p["mean"][key] or 0.0 for p in phases)

    kept = " ".join(
        f"{p['synth_kept']:.0f}/{p['synth_attempts']:.0f}" for p in phases if p["synth_attempts"]
    )
    losses = " ".join(f"{p['test_loss']:.3f}" for p in phases if p["test_loss"] is not None)
    return (
        f"kept {kept or '–'} · test loss {losses or '–'} · per client round synth "
        f"{mean('synth'):.1f} s, train-local {mean('train-local'):.1f} s"
    )


def _default_runs_rows(runs: dict[str, dict[str, Any]], label: str = "") -> list[list[str]]:
    """The default job against each variant of it, alternated: seconds end to end.

    ``label`` marks the rows of a second comparison in the same table.
    """
    if not runs:
        return []
    mine = runs["default"]
    base_s = statistics.fmean(mine["end_to_end_s"])
    rows = [
        [
            f"default job end to end, s (alternated runs){label}",
            fmt_num(base_s),
            "",
            "",
            f"{len(mine['end_to_end_s'])} run(s) · {_outcome_note(mine['phases'])}",
        ]
    ]
    for name, other in runs.items():
        if name == "default":
            continue
        other_s = statistics.fmean(other["end_to_end_s"])
        rows.append(
            [
                f"default job vs {name}, s{label}",
                fmt_num(base_s),
                fmt_num(other_s),
                fmt_ratio(other_s / base_s),
                _outcome_note(other["phases"]),
            ]
        )
        mine_synth, other_synth = _mean_phase(mine["phases"]), _mean_phase(other["phases"])
        if mine_synth and other_synth:
            rows.append(
                [
                    f"SynGen per client round vs {name}, s{label}",
                    fmt_num(mine_synth),
                    fmt_num(other_synth),
                    fmt_ratio(other_synth / mine_synth),
                    "mean seconds-synth over every client round of those runs",
                ]
            )
    return rows


def _mean_phase(phases: Sequence[dict[str, Any]], phase: str = "synth") -> float | None:
    """A phase's mean seconds per client round over runs (None: no run timed it)."""
    values = [p["mean"][phase] for p in phases if p["mean"].get(phase)]
    return statistics.fmean(values) if values else None


def render(results: dict[str, Any]) -> str:
    """The results table of ``results`` (the ``table`` entry of ``results.json``)."""
    return format_table(HEADERS, build_rows(results))
