"""The benchmark's pure helpers (no timing assertions, no default-model runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from bench.generation import batched, count_new_tokens
from bench.machine import compute_bound, decode_bound, model_flops_utilisation
from bench.memory import RssSampler, tree_rss
from bench.phases import PHASES, phase_seconds, synth_calls
from bench.table import build_rows, format_table


def test_count_new_tokens_counts_eos_not_padding():
    assert count_new_tokens([5, 6, 7], eos_id=2, pad_id=0) == 3
    assert count_new_tokens([5, 6, 2, 0, 0], eos_id=2, pad_id=0) == 3  # eos counts
    assert count_new_tokens([5, 6, 0, 0], eos_id=2, pad_id=0) == 2  # stopped by a stop string
    assert count_new_tokens([5, 2, 2, 2], eos_id=2, pad_id=2) == 2  # pad == eos
    assert count_new_tokens([], eos_id=2, pad_id=2) == 0
    assert count_new_tokens([5, 6], eos_id=None, pad_id=None) == 2


def test_format_table_aligns_columns():
    table = format_table(["a", "bee"], [["xx", 1], ["y", None]])
    lines = table.splitlines()
    assert lines[0] == "| a  | bee |"
    assert lines[1] == "|----|-----|"
    assert lines[2] == "| xx | 1   |"
    assert lines[3] == "| y  |     |"
    assert len({len(line) for line in lines}) == 1


def test_flop_utilisation_arithmetic():
    # 6 · 100 params · 1000 tokens / 2 s = 300,000 FLOP/s; peak 1.2 MFLOP/s → 25 %.
    out = model_flops_utilisation(tokens=1000, seconds=2.0, params=100, peak_flops=1.2e6)
    assert out["model_flops_per_s"] == pytest.approx(3e5)
    assert out["mfu"] == pytest.approx(0.25)
    assert model_flops_utilisation(10, 0.0, 100, 1e6)["mfu"] == 0.0


def test_compute_bound_counts_the_prefill():
    # 100 params, 300 prompt + 100 new tokens: 2 · 100 · 400 = 80,000 FLOPs for 100 new
    # tokens; at 1 MFLOP/s that is 0.08 s, i.e. 1250 new tokens/s.
    assert compute_bound(300, 100, 100, 1e6) == pytest.approx(1250.0)
    assert compute_bound(0, 0, 100, 1e6) == 0.0


class _Tok:
    eos_token_id = 9

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) - 96 for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join("<e>" if i == 9 else chr(i + 96) for i in ids)


def test_batched_sorts_by_length_and_counts_eos_where_a_row_ended_on_it():
    seen = []

    def run(texts, ids, spec):  # echo each prompt back; rows of odd length end on eos
        seen.append(list(texts))
        return [(list(x), len(x) % 2 == 1) for x in ids]

    class Spec:
        stop = ()

    texts, ids = batched(run, _Tok(), ["ab", "abc", "a", "abcd"], Spec(), batch_size=2)
    assert seen == [["abcd", "abc"], ["ab", "a"]]  # longest first, in batches of 2
    assert texts == ["ab", "abc", "a", "abcd"]
    assert ids == [[1, 2], [1, 2, 3, 9], [1, 9], [1, 2, 3, 4]]


def test_decode_bound_arithmetic():
    # 0.5 GB of weights at 10 GB/s: 20 tokens/s single-stream, 16 × that at batch 16.
    assert decode_bound(0.5e9, 10e9) == pytest.approx(20.0)
    assert decode_bound(0.5e9, 10e9, batch=16) == pytest.approx(320.0)


def test_rss_sampler_sees_a_process_tree():
    # A shell with a sleeping child: the tree holds at least two processes.
    proc = subprocess.Popen(["sh", "-c", "sleep 1.5 & wait"])
    with RssSampler(proc.pid, interval=0.1) as sampler:
        proc.wait()
    assert sampler.samples >= 2
    assert sampler.peak > 0
    assert 0 < sampler.peak_pss <= sampler.peak  # PSS splits shared pages
    assert tree_rss(proc.pid) == 0  # gone


def test_rss_sampler_counts_children():
    code = "import subprocess, sys, time; p = subprocess.Popen(['sleep', '5']); time.sleep(5)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        for _ in range(50):
            if psutil.Process(proc.pid).children():
                break
            subprocess.run(["sleep", "0.1"], check=True)
        child = psutil.Process(proc.pid).children()[0]
        own = psutil.Process(proc.pid).memory_info().rss
        assert tree_rss(proc.pid) == pytest.approx(own + child.memory_info().rss, rel=0.1)
    finally:
        for p in psutil.Process(proc.pid).children():
            p.kill()
        proc.kill()
        proc.wait()


def test_phase_seconds_reads_a_run_dir(tmp_path):
    calls = [{"phase": "instruction", "prompts": 12, "seconds": 4.0}]
    for client, rows in {"0": [1.0, 3.0], "1": [2.0]}.items():
        d = tmp_path / "clients" / client
        d.mkdir(parents=True)
        lines = [
            {"round": i + 1, "counters": {f"seconds-{p}": s for p in PHASES}}
            for i, s in enumerate(rows)
        ]
        if client == "1":
            lines[0]["synth-calls"] = calls
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (tmp_path / "summary.json").write_text(json.dumps({"method": "fedpit", "seconds": 42.0}))
    out = phase_seconds(tmp_path)
    assert out["client_rounds"] == 3
    assert out["mean"]["synth"] == pytest.approx(2.0)
    assert out["max"]["total"] == pytest.approx(3.0)
    assert out["run_seconds"] == 42.0
    assert out["method"] == "fedpit"
    assert out["synth_calls"] == {
        "instruction": {"rounds": 1, "prompts_mean": 12.0, "seconds_mean": 4.0, "share": 1.0}
    }
    rows = build_rows({"phases": out})
    assert len(rows) == len(PHASES) + 2
    assert rows[len(PHASES)][0] == "SynGen call: instruction, seconds (mean)"


def test_synth_calls_are_named_by_position_and_shared_out_by_seconds():
    def call(phase, prompts, seconds):
        return {"phase": phase, "prompts": prompts, "seconds": seconds}

    rounds = [
        [call("instruction", 12, 10.0), call("response", 12, 20.0), call("response", 2, 10.0)],
        [call("instruction", 12, 6.0), call("response", 10, 14.0)],
    ]
    out = synth_calls(rounds)
    assert list(out) == ["instruction", "response 1", "response 2"]
    assert out["instruction"] == {"rounds": 2, "prompts_mean": 12.0, "seconds_mean": 8.0,
                                  "share": 16 / 60}  # fmt: skip
    assert out["response 1"]["prompts_mean"] == 11.0
    assert out["response 1"]["share"] == pytest.approx(34 / 60)
    assert out["response 2"] == {"rounds": 1, "prompts_mean": 2.0, "seconds_mean": 10.0,
                                 "share": 10 / 60}  # fmt: skip
    assert synth_calls([]) == {}


def test_build_rows_formats_every_section():
    results = {
        "limits": {"matmul_flops": 1.4e11, "bandwidth_bytes_per_s": 1e10},
        "generation": {
            "ours": {"tokens_per_s": 80.0, "seconds": 20.0},
            "naive": {"tokens_per_s": 13.0},
            "speedup": 80 / 13,
            "ours_shared": {
                "tokens_per_s": 104.0,
                "seconds": 15.0,
                "shared_demos": 4,
                "prefill_tokens": 900,
                "prefill_tokens_unshared": 3600,
            },
            "speedup_shared": 8.0,
            "outputs_equal": True,
            "batch_size": 16,
            "bound_batch1": 18.0,
            "bound_batched": 288.0,
        },
        "training": {
            "ours": {"tokens_per_s": 150.0, "mean_loss": 1.5, "mfu": 0.5},
            "trl": {"tokens_per_s": 75.0, "mean_loss": 1.52, "mfu": 0.25},
            "speedup": 2.0,
            "ours_bf16": {"tokens_per_s": 330.0, "mean_loss": 1.501},
            "speedup_bf16": 2.2,
        },
        "memory": {
            "arrangements": {
                "one worker": {
                    "runs": [
                        {"clients": 1, "peak_rss_gb": 2.0, "peak_pss_gb": 1.5},
                        {"clients": 10, "peak_rss_gb": 2.4, "peak_pss_gb": 1.8},
                    ],
                    "ratio": 1.2,
                    "ratio_rss": 1.2,
                }
            }
        },
        "scale": {
            "runs": [
                {"clients": 10, "peak_pss_gb": 4.0, "mean_round_s": 20.0},
                {"clients": 100, "peak_pss_gb": 4.4, "mean_round_s": 27.0},
            ],
            "pss_ratio": 1.1,
            "round_seconds_ratio": 1.35,
        },
    }
    table = format_table(["m", "v", "b", "r", "t"], build_rows(results))
    assert "1.10×" in table and "1.35×" in table and "10: 20.00 · 100: 27.00" in table
    assert "6.15×" in table
    assert "8.00×" in table and "900 vs 3600 unshared · 15.0 s vs 20.0 s" in table
    assert "2.00×" in table
    assert "2.20×" in table and "mean loss 1.501 vs 1.500" in table
    assert "1.20×" in table
    assert "50.0% / 25.0%" in table


def test_round_seconds_are_the_differences_of_elapsed(tmp_path):
    from bench.scale import round_seconds

    rows = [{"round": 1, "elapsed_s": 15.0}, {"round": 0, "elapsed_s": 5.0}]
    rows.append({"round": 2, "elapsed_s": 40.0})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert round_seconds(tmp_path) == [10.0, 25.0]


def test_prefill_tokens_count_what_prefix_reuse_leaves():
    from bench.generation import prefill_tokens

    # Sorted longest first: [1,2,3,4,5] computed whole (5); [1,2,3,9] shares 3 (1 more);
    # [1,2] shares 2 but one token is always computed (1); [7] shares nothing (1).
    assert prefill_tokens([[1, 2], [1, 2, 3, 9], [7], [1, 2, 3, 4, 5]]) == 5 + 1 + 1 + 1
    # In batches of 2 the short pair cannot reuse the long pair's prefix.
    assert (
        prefill_tokens([[1, 2], [1, 2, 3, 9], [7], [1, 2, 3, 4, 5]], batch_size=2) == 5 + 1 + 2 + 1
    )


def test_shared_bench_prompts_group_a_clients_demonstrations():
    from types import SimpleNamespace

    from bench.generation import response_prompts

    from fedpit.data.example import Example
    from fedpit.model.prompts import make_prompt_format

    fmt = make_prompt_format("alpaca", None)
    clients = [
        [Example(f"c{c}-{i}", f"Question {c} {i} ?", "", f"Answer {c} {i}.") for i in range(8)]
        for c in range(2)
    ]
    cfg = SimpleNamespace(seed=0, synth=SimpleNamespace(response_demos=2, demo_answer_words=80))
    own = response_prompts(cfg, fmt, clients, 8)
    shared = response_prompts(cfg, fmt, clients, 8, shared=2)
    assert own == response_prompts(cfg, fmt, clients, 8, shared=1)

    def demos(p: str) -> str:
        return p[: p.rindex("### Instruction:")]

    # Prompts 0, 2 (client 0's first two questions) share; 4, 6 share; clients differ.
    assert demos(shared[0]) == demos(shared[2]) != demos(shared[4]) == demos(shared[6])
    assert demos(shared[1]) == demos(shared[3]) != demos(shared[0])
    for p in shared:  # no prompt shows its own question among the demonstrations
        asked = p[p.rindex("### Instruction:") :].split("\n")[1]
        assert asked not in demos(p)
    assert len({demos(p) for p in own}) == 8


def test_auc_interval_against_hand_values():
    from bench.quality import auc_interval

    # Pairs (a, b): 3 > 1, 3 > 2, 2 > 1, 2 = 2 (½): (1 + 1 + 1 + 0.5) / 4.
    point, low, high = auc_interval([3.0, 2.0], [1.0, 2.0], resamples=500)
    assert point == pytest.approx(0.875) and 0.0 <= low <= point <= high <= 1.0
    assert auc_interval([1.0, 1.0], [1.0], resamples=200) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least one value"):
        auc_interval([], [1.0])


def test_quality_summary_pools_seeds_and_compares_with_the_default():
    from bench.quality import summarise

    def cell(seed, variant, kept, ifs, seconds):
        retry = 6.0 if variant == "fp32" else 0.0  # fp32 needs a second response call
        return {
            "seed": seed,
            "variant": variant,
            "attempts": 4,
            "kept": kept,
            "rejected": {"format": 4 - kept, "copy": 0},
            "response_failures": {"too_short": 1 if retry else 0},
            "calls": [
                {"phase": "instruction", "prompts": 4, "seconds": 4.0},
                {"phase": "response", "prompts": 4, "seconds": 10.0 - retry},
                *([{"phase": "response", "prompts": 1, "seconds": retry}] if retry else []),
            ],
            "ifs": ifs,
            "lengths": [10 * x for x in ifs],
            "seconds": seconds,
        }

    cells = [
        cell(0, "fp32", 4, [0.5, 0.6, 0.7, 0.8], 20.0),
        cell(1, "fp32", 2, [0.9, 1.0], 20.0),
        cell(0, "bf16", 3, [0.5, 0.6, 0.7], 10.0),
        cell(1, "bf16", 3, [0.8, 0.9, 1.0], 10.0),
    ]
    out = summarise(cells)
    assert out["fp32"]["yield_per_seed"] == [1.0, 0.5] and out["fp32"]["yield_mean"] == 0.75
    assert out["bf16"]["yield_mean"] == 0.75 and out["bf16"]["rejected"] == {"format": 2}
    assert out["fp32"]["candidates"] == 6 and out["fp32"]["ifs_median"] == pytest.approx(0.75)
    assert out["bf16"]["seconds_ratio_vs_reference"] == 2.0
    assert out["bf16"]["ifs_auc_vs_reference"][0] == pytest.approx(0.5)  # the same six values
    assert "ifs_auc_vs_reference" not in out["fp32"]
    # The generate calls: the retry round's share of SynGen, the failures that caused it.
    assert out["fp32"]["retry_share"] == pytest.approx(6.0 / 14.0)
    assert out["bf16"]["retry_share"] == 0.0 and out["bf16"]["response_failures"] == {}
    assert out["fp32"]["response_failures"] == {"too_short": 2}
    assert out["fp32"]["synth_calls"]["response 2"]["rounds"] == 2
    row = build_rows({"quality": {"summary": out}})[0]
    assert row[0].startswith("SynGen yield, bf16 vs fp32")
    assert "retry rounds 0% vs 43% of SynGen's time" in row[4]


def test_the_compile_row_states_both_timings():
    results = {
        "compile_step": {
            "prompts": 16,
            "eager_ms_per_step": 145.0,
            "compiled_ms_per_step": 290.0,
            "speedup": 0.5,
            "compile_s": 167.0,
            "same_tokens": True,
        }
    }
    (row,) = build_rows(results)
    assert row[1:4] == ["290.0", "145.0", "0.50×"] and "compilation 167 s" in row[4]


def test_alternate_calls_the_variants_in_turn_and_times_each_call():
    from bench.timing import alternate

    calls = []
    timed = alternate({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2})
    assert calls == ["a", "b", "b", "a"]  # A B B A: neither always first, drift cancels
    assert [r for _, r in timed["a"]] == [1, 1] and [r for _, r in timed["b"]] == [2, 2]
    assert all(t >= 0 for reps in timed.values() for t, _ in reps)
    calls.clear()
    timed = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"] and [len(v) for v in timed.values()] == [3, 3]


def test_default_runs_alternate_the_variants_and_read_each_run(tmp_path, monkeypatch):
    import bench.phases as phases_mod

    ran = []

    def fake_run(run_dir, job):
        overrides = job.overrides
        ran.append((run_dir.name, list(overrides)))
        kept = 60.0 if overrides else 65.0
        (run_dir / "clients" / "0").mkdir(parents=True)
        counters = {f"seconds-{p}": 10.0 for p in PHASES}
        counters["seconds-synth"] = 15.0 if overrides else 10.0
        (run_dir / "clients" / "0" / "metrics.jsonl").write_text(
            json.dumps({"round": 1, "counters": counters}) + "\n"
        )
        summary = {
            "method": "fedpit",
            "seconds": 90.0,
            "test_loss": {"0": 2.5, "1": 2.3, "2": 2.2},
            "synthetic": {"synth-kept": kept, "synth-attempts": 72.0},
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return 100.0 + 20.0 * bool(overrides)

    monkeypatch.setattr(phases_mod, "default_run", fake_run)
    variant = ["synth.generation-dtype=float32"]
    runs = phases_mod.default_runs(tmp_path, [variant], repetitions=2)
    # A B, then B A: each run in its own directory, the variant with its overrides.
    assert ran == [
        ("default-run-0", []),
        ("default-run-1", variant),
        ("default-run-2", variant),
        ("default-run-3", []),
    ]
    other = runs["synth.generation-dtype=float32"]
    assert runs["default"]["end_to_end_s"] == [100.0, 100.0]
    assert other["end_to_end_s"] == [120.0, 120.0]
    assert [p["run_dir"] for p in other["phases"]] == [
        str(tmp_path / "default-run-1"),
        str(tmp_path / "default-run-2"),
    ]
    assert other["phases"][0]["test_loss"] == 2.2  # the last round's
    assert other["phases"][0]["synth_kept"] == 60.0
    rows = build_rows({"default_runs": runs})
    assert [r[0] for r in rows] == [
        "default job end to end, s (alternated runs)",
        "default job vs synth.generation-dtype=float32, s",
        "SynGen per client round vs synth.generation-dtype=float32, s",
    ]
    assert rows[1][1:4] == ["100.0", "120.0", "1.20×"]
    assert "kept 60/72 60/72 · test loss 2.200 2.200" in rows[1][4]
    assert rows[2][1:4] == ["10.0", "15.0", "1.50×"]
    # An earlier comparison kept beside the last one is labelled as such.
    both = build_rows({"default_runs": runs, "default_runs_earlier": runs})
    assert [r[0] for r in both[3:]] == [r[0] + " (earlier runs)" for r in rows]


def _commit_tree(repo: Path, marker: str) -> str:
    """A git repository whose one commit's ``fedpit`` entry point writes a run's summary."""
    (repo / "src" / "oldfed").mkdir(parents=True)
    (repo / "pyproject.toml").write_text(
        '[project]\nname = "oldfed"\n[project.scripts]\nfedpit = "oldfed.entry:main"\n'
    )
    (repo / "src" / "oldfed" / "__init__.py").write_text("")
    (repo / "src" / "oldfed" / "entry.py").write_text(
        "import json, os, sys\nfrom pathlib import Path\n\n"
        "def main():\n"
        "    args = sys.argv[1:]\n"
        "    run_dir = Path(next(a for a in args if a.startswith('run-dir=')).split('=', 1)[1])\n"
        "    run_dir.mkdir(parents=True)\n"
        f"    summary = {{'method': {marker!r}, 'seconds': 1.0, 'argv': args,\n"
        "               'data': os.environ.get('FEDPIT_DATA_DIR')}\n"
        "    (run_dir / 'summary.json').write_text(json.dumps(summary))\n"
        "    return 0\n"
    )
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run(
        [*git, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "old"], check=True
    )
    return subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_default_job_of_an_earlier_commit_runs_that_commits_code(tmp_path, monkeypatch):
    import bench.phases as phases_mod

    repo = tmp_path / "repo"
    short = _commit_tree(repo, "from-the-old-commit")
    (repo / "src" / "oldfed" / "entry.py").write_text("raise SystemExit('uncommitted')\n")
    monkeypatch.setenv("FEDPIT_DATA_DIR", "/data/here")
    name, tree = phases_mod.source_tree("HEAD", tmp_path / "work", repo)
    assert name == short and (tree / "src" / "oldfed" / "entry.py").is_file()
    run_dir = tmp_path / "run"
    seconds = phases_mod.default_run(run_dir, phases_mod.Job(tree=tree))
    summary = json.loads((run_dir / "summary.json").read_text())
    # The commit's files, not the working copy's; its entry point from its pyproject.
    assert summary["method"] == "from-the-old-commit" and seconds > 0
    assert summary["argv"] == ["run", f"run-dir={run_dir}"]
    assert summary["data"] == "/data/here"
    # Without $FEDPIT_DATA_DIR, the tree gets the data directory this checkout finds.
    monkeypatch.delenv("FEDPIT_DATA_DIR")
    monkeypatch.setattr(phases_mod, "find_data_file", lambda name: tmp_path / "shared" / name)
    assert phases_mod.tree_env(tree)["FEDPIT_DATA_DIR"] == str(tmp_path / "shared")
    with pytest.raises(ValueError, match="'nope' is not a commit"):
        phases_mod.source_tree("nope", tmp_path / "work", repo)


def test_an_unknown_baseline_commit_is_refused_before_any_run(tmp_path, capsys):
    from bench.run import main

    argv = ["--sections", "", "--default-run", "--default-run-vs-commit", "no-such-rev"]
    assert main([*argv, "--work-dir", str(tmp_path)]) == 2
    assert "--default-run-vs-commit: 'no-such-rev' is not a commit" in capsys.readouterr().err


def test_a_bad_variant_setting_is_refused_before_any_run(capsys):
    from bench.run import main

    assert main(["--sections", "", "--default-run", "--default-run-vs", "synth.x=1"]) == 2
    assert "--default-run-vs: unknown configuration key 'synth.x'" in capsys.readouterr().err
