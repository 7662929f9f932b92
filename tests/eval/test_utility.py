"""Utility evaluation, ``fedpit generate`` and ``fedpit export`` on a fake run of the tiny model."""

import argparse
import importlib
import json
import shutil

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedpit.adapters import PUBLIC, get_state, initial_state, save_adapter
from fedpit.cli.evaluate import add_commands
from fedpit.config.load import from_flat
from fedpit.data.example import Example
from fedpit.data.prepare import run_data_for
from fedpit.errors import ConfigError, DataError, FedPITError
from fedpit.eval import utility
from fedpit.eval.attack.targets import activate, load_runtime, resolve_target
from fedpit.lm.batched_generation import make_generate_fn
from fedpit.lm.generation import GenerationSpec
from fedpit.model.resolve import load_model, load_tokenizer
from fedpit.runs.rundir import create_run_dir
from fedpit.synth.rouge import rouge_l
from tests.helpers import examples


def fake_embed(texts):
    """Bag of the letters a–z: a deterministic, cheap stand-in for MiniLM."""
    return np.array([[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts])


def write_jsonl(path, exs):
    path.write_text(
        "".join(
            json.dumps({"id": e.id, "instruction": e.instruction, "output": e.output}) + "\n"
            for e in exs
        )
    )
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    """A run directory: config over the tiny model and a 16-example file, a global adapter."""
    root = tmp_path_factory.mktemp("fake-run")
    data = write_jsonl(root / "toy.jsonl", examples(16))
    cfg = from_flat(
        {
            "model.name": str(tiny_model_dir),
            "model.template": "chat",
            "data.name": str(data),
            "data.partition": "iid",
            "data.num-clients": 2,
            "data.examples-per-client": 4,
            "data.test-size": 4,
            "lora.rank": 4,
            "lora.alpha": 8,
            "lora.dropout": 0.0,
            "fed.rounds": 2,
            "run-dir": str(root / "run"),
        }
    )
    rd = create_run_dir(cfg)
    _, rt = load_runtime(rd.root)
    state = initial_state(get_state(rt.model, PUBLIC), seed=1)
    gen = torch.Generator().manual_seed(2)
    for key in state:
        if "lora_B" in key:  # a non-zero update, so the adapter changes the model
            state[key] = torch.randn(state[key].shape, generator=gen) * 0.5
    save_adapter(state, cfg.lora, cfg.model.name, rd.final_adapter)
    return rd


def parse(argv):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args([str(a) for a in argv])


# --- test sets -------------------------------------------------------------------------


def test_heldout_is_the_runs_test_split(run):
    label, exs = utility.load_test_set("heldout", run.root)
    cfg, _ = load_runtime(run.root)
    split = run_data_for(cfg).split
    assert label == "heldout"
    assert [e.id for e in exs] == [e.id for e in split.test] and len(exs) == 4
    assert not {e.id for e in exs} & {e.id for c in split.clients for e in c}
    assert "held-out split (4 examples" in utility.describe_test_set("heldout", run.root)


def test_file_test_set_is_labelled_by_its_stem(run, tmp_path):
    path = write_jsonl(tmp_path / "my-questions.jsonl", examples(3, prefix="f"))
    label, exs = utility.load_test_set(str(path), run.root)
    assert label == "my-questions" and [e.id for e in exs] == ["f-0", "f-1", "f-2"]
    with pytest.raises(DataError, match="neither 'heldout', 'medinstruct' nor an existing file"):
        utility.load_test_set(str(tmp_path / "missing.jsonl"), run.root)


def test_medinstruct_follows_the_data_dir_rules(run, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDPIT_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"medinstruct_test\.jsonl does not exist"):
        utility.load_test_set("medinstruct", run.root)
    write_jsonl(tmp_path / "medinstruct_test.jsonl", examples(2, prefix="m"))
    label, exs = utility.load_test_set("medinstruct", run.root)
    assert label == "medinstruct" and [e.id for e in exs] == ["m-0", "m-1"]
    assert "out of distribution for MedQuAD" in utility.describe_test_set("medinstruct", run.root)


def test_subsample_is_seeded_and_keeps_order():
    exs = examples(10)
    a = utility.subsample(exs, 4, seed=0)
    assert a == utility.subsample(exs, 4, seed=0)
    assert len(a) == 4 and a == sorted(a, key=exs.index)
    assert any(utility.subsample(exs, 4, seed=s) != a for s in range(1, 5))
    assert utility.subsample(exs, 0, seed=0) == exs
    assert utility.subsample(exs, 10, seed=3) == exs


def test_target_round(run, tmp_path):
    assert utility.target_round(run.root, "base") == 0
    assert utility.target_round(run.root, "round:1") == 1
    assert utility.target_round(run.root, "global") == 2  # fed.rounds, no summary yet
    assert utility.target_round(run.root, "client:0") is None
    other = tmp_path / "run"
    other.mkdir()
    shutil.copy(run.config, other / "config.toml")
    (other / "summary.json").write_text(json.dumps({"rounds": 5}))
    assert utility.target_round(other, "global") == 5


# --- scoring and evaluation ------------------------------------------------------------


def test_score_answers_hand_computed():
    exs = [
        Example("a", "q1", "", "the cat sat down"),
        Example("b", "q2", "", "fever chills"),
    ]
    rows, metrics = utility.score_answers(exs, ["the cat sat", "fever fever fever"], fake_embed)
    assert [r["token_f1"] for r in rows] == pytest.approx([0.8, 0.4])
    assert rows[0]["rouge_l"] == pytest.approx(2 * 1.0 * 0.75 / 1.75)  # LCS 3: P 3/3, R 3/4
    assert rows[1]["semantic"] == pytest.approx(
        float(np.dot(fake_embed(["fever fever fever"])[0], fake_embed(["fever chills"])[0]))
        / float(
            np.linalg.norm(fake_embed(["fever fever fever"])[0])
            * np.linalg.norm(fake_embed(["fever chills"])[0])
        )
    )
    assert metrics["token_f1"] == pytest.approx(0.6)
    assert metrics["rouge_l"] == pytest.approx((rows[0]["rouge_l"] + rows[1]["rouge_l"]) / 2)
    assert rows[0]["reference"] == "the cat sat down" and rows[0]["answer"] == "the cat sat"
    with pytest.raises(DataError, match="no examples"):
        utility.score_answers([], [], fake_embed)


def test_evaluate_answers_with_the_targets_adapter(run, tiny_model_dir):
    _, rt = load_runtime(run.root)
    _, exs = utility.load_test_set("heldout", run.root)
    target = resolve_target(run.root, "global")
    rows, metrics = utility.evaluate(rt, target, exs, 12, 2, fake_embed, progress=False)

    # The same answers from an independent model: base + the adapter loaded by PEFT.
    tok = load_tokenizer(str(tiny_model_dir))
    base = load_model(str(tiny_model_dir), torch.device("cpu"), torch.float32)
    reference_model = PeftModel.from_pretrained(base, str(run.final_adapter))
    spec = GenerationSpec(12, repetition_penalty=1.2)
    expected = make_generate_fn(reference_model, tok, progress=False)(
        [rt.fmt.prompt(e) for e in exs], spec
    )
    assert [r["answer"] for r in rows] == [g.text.strip() for g in expected]
    assert [r["finished"] for r in rows] == [g.finished for g in expected]
    assert [r["id"] for r in rows] == [e.id for e in exs]
    for row in rows:
        assert row["rouge_l"] == pytest.approx(rouge_l(row["answer"], row["reference"]))
    for name in ("rouge_l", "token_f1", "semantic"):
        assert metrics[name] == pytest.approx(np.mean([r[name] for r in rows]))

    base_rows, _ = utility.evaluate(
        rt, resolve_target(run.root, "base"), exs, 12, 2, fake_embed, progress=False
    )
    assert [r["answer"] for r in base_rows] != [r["answer"] for r in rows]


def test_write_eval_files(tmp_path):
    rows = [{"id": "a", "answer": "x", "rouge_l": 0.5, "token_f1": 0.25, "semantic": 1.0}]
    metrics = {"rouge_l": 0.5, "token_f1": 0.25, "semantic": 1.0}
    path = utility.write_eval(tmp_path, "round:2", "heldout", rows, metrics, 2)
    assert path == tmp_path / "eval" / "round-2__heldout.json"
    assert json.loads(path.read_text()) == {
        "target": "round:2",
        "round": 2,
        "test_set": "heldout",
        "n": 1,
        "metrics": metrics,
        "judge": None,
    }
    lines = (tmp_path / "eval" / "round-2__heldout.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "round-2__heldout.json",
        "round-2__heldout.jsonl",
    ]


# --- commands --------------------------------------------------------------------------


def test_eval_command_writes_results_for_each_target(run, monkeypatch, capsys):
    partition_module = importlib.import_module("fedpit.data.partition")
    monkeypatch.setattr(partition_module, "embed_minilm", fake_embed)
    args = parse(["eval", run.root, "--limit", "2", "--max-new-tokens", "6"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "TEST SET: the run's held-out split" in out and "evaluating 2 examples" in out
    for name, round_ in (("base", 0), ("global", 2)):
        summary = json.loads((run.root / "eval" / f"{name}__heldout.json").read_text())
        assert summary["target"] == name and summary["round"] == round_ and summary["n"] == 2
        assert any(line.startswith(name) for line in out.splitlines())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "{run}", "--target", "nope"], "target 'nope'; allowed"),
        (["eval", "{run}", "--target", "round:7"], "no adapter"),
        (["eval", "{missing}"], "not a FedPIT run directory"),
        (["eval", "{run}", "--test-set", "{missing}"], "neither 'heldout'"),
        (["export", "{missing}", "--out", "{out}"], "not a FedPIT run directory"),
        (["export", "{run}", "--target", "base", "--out", "{out}"], "no adapter to merge"),
        (["generate", "{run}", "hi", "--target", "nope"], "target 'nope'"),
        (["generate", "{missing}", "hi"], "does not exist"),
    ],
)
def test_command_errors(run, tmp_path, argv, message):
    names = {"run": run.root, "missing": tmp_path / "missing", "out": tmp_path / "out"}
    args = parse([a.format(**names) for a in argv])
    with pytest.raises(FedPITError, match=message):
        args.func(args)


def test_generate_from_run_and_from_plain_model(run, tiny_model_dir, capsys):
    args = parse(["generate", run.root, "What is gout ?", "--target", "base"])
    assert args.func(args) == 0
    from_run = capsys.readouterr().out
    args = parse(["generate", tiny_model_dir, "What is gout ?", "--max-new-tokens", "256"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == from_run  # base target = the plain base model
    args = parse(["generate", tiny_model_dir, "hi", "--target", "global"])
    with pytest.raises(ConfigError, match="--target needs a run directory"):
        args.func(args)


def test_generate_prints_the_global_models_answer(run, capsys):
    _, rt = load_runtime(run.root)
    activate(rt, resolve_target(run.root, "global"))
    prompt = rt.fmt.prompt(Example("p", "What is gout ?", "", ""))
    spec = GenerationSpec(10, repetition_penalty=1.2)
    (expected,) = make_generate_fn(rt.model, rt.tokenizer, progress=False)([prompt], spec)
    args = parse(["generate", run.root, "What is gout ?", "--max-new-tokens", "10"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == expected.text.strip() + "\n"


def test_export_equals_the_adapter_model(run, tmp_path):
    out = tmp_path / "exported"
    args = parse(["export", run.root, "--out", out])
    assert args.func(args) == 0

    _, rt = load_runtime(run.root)
    ids = torch.tensor([rt.tokenizer("What is asthma ? Asthma is")["input_ids"]])
    activate(rt, resolve_target(run.root, "global"))
    with torch.no_grad():
        adapter_logits = rt.model(input_ids=ids).logits
        exported = AutoModelForCausalLM.from_pretrained(out).eval()
        exported_logits = exported(input_ids=ids).logits
        activate(rt, resolve_target(run.root, "base"))
        base_logits = rt.model(input_ids=ids).logits
    torch.testing.assert_close(exported_logits, adapter_logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(base_logits, adapter_logits, atol=1e-3)  # the merge did something
    assert not any("lora" in k for k in exported.state_dict())
    assert AutoTokenizer.from_pretrained(out).get_vocab() == rt.tokenizer.get_vocab()
    assert json.loads((out / "fedpit.json").read_text())["target"] == "global"
    assert not list(tmp_path.glob(".*export-tmp"))

    with pytest.raises(ConfigError, match="exists and is not an empty directory"):
        args.func(args)


def test_eval_command_with_an_openai_compatible_judge(run, monkeypatch, capsys):
    from tests.eval.test_judge import ChatServer, reply

    partition_module = importlib.import_module("fedpit.data.partition")
    monkeypatch.setattr(partition_module, "embed_minilm", fake_embed)
    # A judge that always prefers answer A: it fails the sanity checks, so WT is withheld.
    with ChatServer(content=reply([5, 5, 5, 5], [1, 1, 1, 1])) as server:
        args = parse(
            [
                "eval",
                run.root,
                "--target",
                "global",
                "--limit",
                "2",
                "--max-new-tokens",
                "4",
                "--judge",
                "openai",
                "--judge-url",
                server.url,
                "--judge-model",
                "judge-x",
            ]
        )
        assert args.func(args) == 0
        assert server.requests and server.requests[0]["body"]["model"] == "judge-x"
    summary = json.loads((run.root / "eval" / "global__heldout.json").read_text())
    judge = summary["judge"]
    assert judge["status"].startswith("unavailable") and judge["wt"] is None
    rows = (run.root / "eval" / "global__heldout.jsonl").read_text().splitlines()
    assert all("judge" in json.loads(r) for r in rows)


def test_base_answers_are_reused_from_the_cache(run, tmp_path, monkeypatch):
    _, rt = load_runtime(run.root)
    _, exs = utility.load_test_set("heldout", run.root)
    base = resolve_target(run.root, "base")
    fresh, _ = utility.evaluate(rt, base, exs, 12, 2, fake_embed, progress=False)
    monkeypatch.setenv("FEDPIT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEDPIT_NO_BASE_CACHE")
    calls = []

    def counting(*args, **kwargs):
        inner = make_generate_fn(*args, **kwargs)
        return lambda prompts, spec: calls.append(len(prompts)) or inner(prompts, spec)

    monkeypatch.setattr(utility, "make_generate_fn", counting)
    runs = [utility.evaluate(rt, base, exs, 12, 2, fake_embed, progress=False) for _ in range(2)]
    assert runs[0][0] == runs[1][0] == fresh and calls == [len(exs)]
    # Adapters are never answered from the cache.
    for _ in range(2):
        utility.evaluate(rt, resolve_target(run.root, "global"), exs, 12, 2, fake_embed, False)
    assert calls == [len(exs)] * 3
