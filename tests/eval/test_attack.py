"""The privacy attacks end to end on the tiny model (pure scores: test_leakage.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

import fedpit.data.prepare
from fedpit.adapters import LOCAL, get_state, save_adapter
from fedpit.cli.attack import add_commands
from fedpit.config.load import from_flat
from fedpit.data.canary import CANARY_KEY, is_canary, make_canaries, plant
from fedpit.eval.attack import runner as attack
from fedpit.eval.attack.targets import activate, load_runtime, resolve_target
from fedpit.lm.batching import encode_pair
from fedpit.lm.generation import Generation, GenerationSpec
from fedpit.lm.scoring import response_nll
from fedpit.lm.train import train_adapter
from fedpit.runs.rundir import RunDir, append_jsonl, create_run_dir

# --- a fake run on the tiny model ------------------------------------------------------

SYLLABLES = ["ka", "zu", "mi", "te", "ro", "ba", "ne", "fo", "li", "gu", "pe", "so"]


def data_rows(n: int) -> list[dict[str, str]]:
    """``n`` examples whose answers are random codes: learnable only by memorising them."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        code = " ".join("".join(rng.choice(SYLLABLES) for _ in range(3)) for _ in range(3))
        rows.append(
            {
                "id": f"ex-{i}",
                "instruction": f"What is the reference code of case {i}?",
                "output": f"The code is {code}.",
            }
        )
    return rows


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory: config, data, round and global adapters, synthetic rows."""
    tmp = tmp_path_factory.mktemp("attack-run")
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in data_rows(44)))
    cfg = from_flat(
        {
            "method": "fedavg",
            "run-dir": str(tmp / "run"),
            "model.name": str(tiny_model_dir),
            "model.template": "chat",
            "model.max-length": 96,
            "data.name": str(data),
            "data.partition": "iid",
            "data.num-clients": 2,
            "data.examples-per-client": 8,
            "data.test-size": 12,
            "lora.rank": 8,
            "lora.alpha": 16,
            "lora.dropout": 0.0,
            "lora.target-modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
            "fed.rounds": 1,
        }
    )
    rd = create_run_dir(cfg)
    _, rt = load_runtime(rd.root)
    split = fedpit.data.prepare.run_data_for(cfg).split
    members = [e for client in split.clients for e in client]
    encoded = [
        encode_pair(rt.tokenizer, rt.fmt.prompt(e), e.output + rt.fmt.end_text, 96) for e in members
    ]
    for epochs, where in ((10, rd.round_adapter(1)), (90, rd.final_adapter)):
        train_adapter(
            rt.model, LOCAL, encoded, lr=5e-3, epochs=epochs, batch_size=4,
            pad_id=rt.tokenizer.pad_token_id, seed=0,
        )  # fmt: skip
        save_adapter(get_state(rt.model, LOCAL), cfg.lora, rt.base_name, where)
    copied = split.clients[0][0]
    synthetic = rd.client_dir(0) / "synthetic" / "round-001.jsonl"
    for row in (
        {"id": "s0", "instruction": copied.instruction, "output": copied.output},
        {"id": "s1", "instruction": "List three fruits.", "output": "Apple, pear, plum."},
    ):
        append_jsonl(synthetic, {**row, "ifs": 0.5, "selected": True})
    return rd.root


@pytest.fixture
def with_canaries(monkeypatch: pytest.MonkeyPatch) -> list:
    """Plant two canaries in client 0's data, as the run's data loading does."""
    canaries = make_canaries(2, seed=5)
    real = fedpit.data.prepare.load_run_data

    def planted(*args, **kwargs):  # type: ignore[no-untyped-def]
        rd = real(*args, **kwargs)
        clients = [plant(rd.split.clients[0], canaries), *rd.split.clients[1:]]
        return dataclasses.replace(rd, split=dataclasses.replace(rd.split, clients=clients))

    monkeypatch.setattr(fedpit.data.prepare, "load_run_data", planted)
    return canaries


def test_fake_generation_scores_and_result_file(run_dir: Path, with_canaries: list) -> None:
    cfg, rt = load_runtime(run_dir)
    split = fedpit.data.prepare.run_data_for(cfg).split
    member_answers = {rt.fmt.prompt(e): e.output for c in split.clients for e in c}
    seen: list[GenerationSpec] = []

    def fake(prompts: Sequence[str], spec: GenerationSpec) -> list[Generation]:
        seen.append(spec)
        return [Generation(member_answers.get(p, "no idea"), True) for p in prompts]

    result = attack.run_attack(run_dir, "global", generate=fake, reference_secrets=20)
    assert seen == [GenerationSpec(max_new_tokens=64)]  # greedy, no repetition penalty
    assert result["target"] == "global" and result["round"] == 1
    assert (result["n_members"], result["n_non_members"]) == (16, 16)
    members = result["extraction"]["members"]
    assert members["rouge_l"] == 1.0 and members["exact_match"] == 1.0
    outputs = [e.output for c in split.clients for e in c if not is_canary(e)]
    longest = max(len(rt.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs)
    assert members["lcs_tokens_max"] == longest  # a verbatim copy: the whole response
    assert result["extraction"]["non_members"]["exact_match"] == 0.0
    assert result["canaries"]["n"] == 2 and result["canaries"]["emitted"] == 2
    assert 0.0 <= result["canaries"]["mean_exposure"] <= math.log2(21)
    overlap = result["synthetic_overlap"]
    assert overlap["n"] == 2 and overlap["rouge_l_max"] == 1.0
    copied = split.clients[0][0]
    assert overlap["longest_span_tokens"] == len(
        rt.tokenizer(f"{copied.instruction}\n{copied.output}", add_special_tokens=False)[
            "input_ids"
        ]
    )
    path = run_dir / "attack" / "global.json"
    assert json.loads(path.read_text()) == result
    rows = [json.loads(line) for line in path.with_suffix(".jsonl").read_text().splitlines()]
    canary_rows = [r for r in rows if r["kind"] == "canary"]
    assert [r["id"] for r in canary_rows] == [c.id for c in with_canaries]
    assert all(r["emitted"] for r in canary_rows)
    # Log-probability in nats = −(mean token NLL) × response tokens, under the target.
    activate(rt, resolve_target(run_dir, "global"))
    canary = with_canaries[0]
    nll = response_nll(rt.model, rt.tokenizer, [rt.fmt.prompt(canary)], [canary.output], 96)[0]
    count = len(rt.tokenizer(canary.output, add_special_tokens=False)["input_ids"])
    assert canary_rows[0]["logprob"] == pytest.approx(-nll * count, rel=1e-4)
    assert canary.meta[CANARY_KEY] in canary_rows[0]["generation"]


def test_trained_adapter_is_caught_by_membership_inference(run_dir: Path) -> None:
    trained = attack.run_attack(run_dir, "global", max_new_tokens=16)
    base = attack.run_attack(run_dir, "base", max_new_tokens=16)
    assert trained["mia"]["loss_members"] < trained["mia"]["loss_non_members"]
    assert trained["mia"]["auc"] > 0.8
    assert trained["mia"]["auc_calibrated"] > 0.8
    assert base["mia"]["auc_calibrated"] is None
    assert 0.15 < base["mia"]["auc"] < 0.85  # the floor: no training, no signal
    assert trained["canaries"] is None  # this run planted none
    # Greedy extraction of memorised random codes beats the base floor.
    assert trained["extraction"]["members"]["rouge_l"] > base["extraction"]["members"]["rouge_l"]


def test_cli_attack_prints_a_row_per_target(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["attack", str(run_dir), "--all-rounds", "--limit", "4"])
    assert attack.default_targets(run_dir, True) == ["base", "round:1", "global"]
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("target")
    assert [line.split()[0] for line in out[1:4]] == ["base", "round:1", "global"]
    saved = json.loads((run_dir / "attack" / "round-1.json").read_text())
    assert saved["round"] == 1 and saved["n_members"] == 4 == saved["n_non_members"]


def test_unknown_target_is_a_config_error(run_dir: Path) -> None:
    from fedpit.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed"):
        attack.run_attack(run_dir, "best", generate=lambda p, s: [])
    assert not RunDir(run_dir).root.joinpath("attack", "best.json").exists()


def test_loss_only_attack_skips_extraction_but_keeps_mia(run_dir):
    from fedpit.eval.attack.runner import run_attack

    calls = []

    def counting(prompts, spec):
        calls.append(len(prompts))
        return [Generation("x", True) for _ in prompts]

    result = run_attack(run_dir, "global", generate=counting, extraction=False)
    assert result["extraction"] == {"members": None, "non_members": None}
    assert result["mia"]["auc"] is not None
    assert sum(calls) == 0  # no canaries planted here, so nothing was generated


def test_shared_inputs_change_nothing_and_score_the_base_once(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = attack.run_attack(run_dir, "round:1", limit=4, extraction=False)
    scored: list[int] = []
    real = attack._losses

    def counting(rt, examples, max_length):  # type: ignore[no-untyped-def]
        scored.append(len(examples))
        return real(rt, examples, max_length)

    monkeypatch.setattr(attack, "_losses", counting)
    inputs = attack.prepare(run_dir, None, limit=4, seed=0)
    shared = [
        attack.run_attack(run_dir, t, 4, 0, extraction=False, inputs=inputs)
        for t in ("round:1", "global")
    ]
    assert shared[0] == fresh
    assert scored == [8, 8, 8]  # the base once, then each target
    with pytest.raises(ValueError, match="do not fit"):
        attack.run_attack(run_dir, "global", 4, 1, extraction=False, inputs=inputs)
    with pytest.raises(ValueError, match="do not fit"):
        attack.run_attack(run_dir, "global", 5, 0, extraction=False, inputs=inputs)


@pytest.fixture
def base_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The base-output cache switched on, in a fresh directory."""
    monkeypatch.setenv("FEDPIT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEDPIT_NO_BASE_CACHE")
    return tmp_path / "base-outputs"


def test_base_attack_is_computed_once_per_split_and_equals_a_fresh_one(
    run_dir: Path, with_canaries: list, base_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedpit.lm.batched_generation

    monkeypatch.setenv("FEDPIT_NO_BASE_CACHE", "1")
    fresh = attack.run_attack(run_dir, "base", limit=4, max_new_tokens=8, reference_secrets=5)
    monkeypatch.delenv("FEDPIT_NO_BASE_CACHE")
    assert not base_cache.exists()
    generated: list[int] = []
    scored: list[int] = []
    real_make, real_losses, real_canaries = (
        fedpit.lm.batched_generation.make_generate_fn,
        attack._losses,
        attack._canary_logprobs,
    )

    def make(*args, **kwargs):  # type: ignore[no-untyped-def]
        inner = real_make(*args, **kwargs)
        return lambda prompts, spec: generated.append(len(prompts)) or inner(prompts, spec)

    monkeypatch.setattr(fedpit.lm.batched_generation, "make_generate_fn", make)
    monkeypatch.setattr(attack, "_losses", lambda *a: scored.append(1) or real_losses(*a))
    monkeypatch.setattr(
        attack, "_canary_logprobs", lambda *a: scored.append(2) or real_canaries(*a)
    )
    again = [
        attack.run_attack(run_dir, "base", limit=4, max_new_tokens=8, reference_secrets=5)
        for _ in range(2)
    ]
    assert again[0] == again[1] == fresh  # JSON keeps every float exactly
    assert generated == [4 + 4 + 2] and scored == [1, 2]  # the second time: all cached
    kinds = sorted(p.name.split("-")[0] for p in base_cache.iterdir())
    assert kinds == ["canary", "generate", "response"]
    # A different decoding budget is a different entry.
    attack.run_attack(run_dir, "base", limit=4, max_new_tokens=9, reference_secrets=5)
    assert generated == [10, 10]


def test_a_run_without_a_global_model_is_attacked_per_client(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The local baseline: each client's own model, attacked on that client's data."""
    import argparse
    import shutil

    local = tmp_path / "local-run"
    shutil.copytree(run_dir, local, ignore=shutil.ignore_patterns("attack"))
    for cid in (0, 1):
        shutil.copytree(local / "global", local / "clients" / str(cid) / "adapters" / "model")
    shutil.rmtree(local / "global")
    shutil.rmtree(local / "rounds")
    assert attack.default_targets(local, True) == ["base", "client:0", "client:1"]
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["attack", str(local), "--all-rounds", "--limit", "4"])
    assert args.func(args) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in rows[1:4]] == ["base", "client:0", "client:1"]
    ids = {}
    for cid in (0, 1):
        result = json.loads((local / "attack" / f"client-{cid}.json").read_text())
        assert result["n_members"] == 4 and result["mia"]["auc"] > 0.5
        lines = (local / "attack" / f"client-{cid}.jsonl").read_text().splitlines()
        ids[cid] = {json.loads(x)["id"] for x in lines if json.loads(x)["kind"] == "member"}
    assert not ids[0] & ids[1]  # each client's own members
