"""The bad-input corpus: each case ends ``fedpit run`` with one clear line and exit 2.

Every case writes its input into ``tmp_path`` and runs the command line in-process. The
line names what was wrong, where (``file:line`` or the configuration key) and what is
allowed; nothing is written: validation stops the run before its run directory exists.
The federated simulation and the standalone runner are replaced by tripwires, so a case
that slipped through validation fails at once instead of starting Ray.

Not covered here: a mismatched base model for ``fedpit eval/attack/export``. Those
commands take the base model from the run's own ``config.toml`` and accept no
``--model``, so they cannot be pointed at another base.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fedpit.cli import main as cli
from fedpit.cli.main import main
from fedpit.data.budget import over_budget
from fedpit.data.example import Example
from fedpit.fed import standalone

GOOD = [
    {
        "instruction": f"What are the symptoms of disease {i} ?",
        "output": f"Disease {i} causes fever and fatigue.",
        "source": "AB"[i % 2],
    }
    for i in range(6)
]


def jsonl(*records: object) -> bytes:
    """Records as JSON lines (UTF-8)."""
    return "".join(json.dumps(r) + "\n" for r in records).encode()


GOOD_JSONL = jsonl(*GOOD)

# (case, file name, file bytes, overrides, the whole error line after "fedpit: error: ").
# "{file}" stands for the data file's path.
DATA_CASES = [
    (
        "malformed-json",
        "d.json",
        b'[{"instruction": "Q", "output": "A"},\n {"instruction": "Q2" "output": "A2"}]',
        [],
        "{file}:2: malformed JSON (Expecting ',' delimiter)",
    ),
    (
        "malformed-jsonl-line",
        "d.jsonl",
        jsonl(*GOOD[:2]) + b'{"instruction": "Q3", output: "A3"}\n',
        [],
        "{file}:3: malformed JSON (Expecting property name enclosed in double quotes)",
    ),
    (
        "missing-output",
        "d.jsonl",
        jsonl(GOOD[0], {"instruction": "Q2", "response": "A2"}),
        [],
        "{file}:2: missing field 'output'; fields present: ['instruction', 'response']; "
        "every record needs 'instruction' and 'output' text",
    ),
    (
        "missing-instruction",
        "d.jsonl",
        jsonl({"question": "Q", "output": "A"}),
        [],
        "{file}:1: missing field 'instruction'; fields present: ['output', 'question']; "
        "every record needs 'instruction' and 'output' text",
    ),
    (
        "empty-instruction",
        "d.jsonl",
        jsonl(GOOD[0], {"instruction": " \t", "output": "A2"}),
        [],
        "{file}:2: field 'instruction' is empty; it must hold text",
    ),
    (
        "empty-response",
        "d.jsonl",
        jsonl(GOOD[0], GOOD[1], {"instruction": "Q3", "output": ""}),
        [],
        "{file}:3: field 'output' is empty; it must hold text",
    ),
    (
        "not-utf8",
        "d.jsonl",
        jsonl(GOOD[0])
        + '{"instruction": "Qu\'est-ce que la fièvre ?", "output": "A"}\n'.encode("latin-1"),
        [],
        "{file}:2: not valid UTF-8 (byte 0xe8); save the file as UTF-8",
    ),
    ("empty-file", "d.jsonl", b"", [], "{file}: no examples (the file is empty)"),
    ("empty-json-list", "d.json", b"[]", [], "{file}: no examples (the file is empty)"),
    (
        "json-not-a-list",
        "d.json",
        json.dumps(GOOD[0]).encode(),
        [],
        "{file}:1: a .json file must hold a list of objects",
    ),
    (
        "client-without-examples",
        "d.jsonl",
        GOOD_JSONL,
        ["data.num-clients=7"],
        "data.num-clients = 7 but only 6 training examples remain after drawing 0 held-out "
        "test examples (and dropping the training examples that ask their questions); "
        "allowed: data.num-clients ≤ 6, a smaller data.test-size, or more data",
    ),
    (
        "client-without-examples-after-test-split",
        "d.jsonl",
        GOOD_JSONL,
        ["data.test-size=5"],
        "data.num-clients = 2 but only 1 training examples remain after drawing 5 held-out "
        "test examples (and dropping the training examples that ask their questions); "
        "allowed: data.num-clients ≤ 1, a smaller data.test-size, or more data",
    ),
    (
        "natural-client-without-source",
        "d.jsonl",
        GOOD_JSONL,
        ["data.partition=natural", "data.partition-column=source", "data.num-clients=3"],
        "data.num-clients = 3 but 'source' has only 2 values (A, B); natural partitioning "
        "allows at most 2 clients",
    ),
    (
        "natural-column-missing",
        "d.jsonl",
        GOOD_JSONL,
        ["data.partition=natural", "data.partition-column=hospital"],
        "example 'd-1' has no field 'hospital' to partition by (data.partition-column); "
        "its fields: ['source']",
    ),
    (
        "test-set-too-large",
        "d.jsonl",
        GOOD_JSONL,
        ["data.test-size=6"],
        "data.test-size = 6 is invalid; allowed: 0 to 5 (the data has 6 examples)",
    ),
]

# (overrides, the whole error line after "fedpit: error: ").
CONFIG_CASES = [
    (["fed.beta=1.5"], "fed.beta = 1.5 is invalid; allowed: a number in [0, 1]"),
    (["fed.beta=-0.1"], "fed.beta = -0.1 is invalid; allowed: a number in [0, 1]"),
    (["fed.rounds=0"], "fed.rounds = 0 is invalid; allowed: an integer ≥ 1"),
    (
        ["data.num-clients=3", "fed.clients-per-round=4"],
        "fed.clients-per-round = 4 is invalid; allowed: 0 (all) to data.num-clients = 3",
    ),
    (
        ["data.examples-per-client=-1"],
        "data.examples-per-client = -1 is invalid; allowed: an integer ≥ 1",
    ),
    (["data.test-size=-1"], "data.test-size = -1 is invalid; allowed: an integer ≥ 0"),
    (["train.batch-size=-4"], "train.batch-size = -4 is invalid; allowed: ≥ 1"),
    (["lora.rank=-8"], "lora.rank = -8 is invalid; allowed: an integer ≥ 1"),
    (["lora.alpha=0"], "lora.alpha = 0 is invalid; allowed: an integer ≥ 1"),
    (["data.num-clusters=0"], "data.num-clusters = 0 is invalid; allowed: an integer ≥ 1"),
    (["seed=-1"], "seed = -1 is invalid; allowed: an integer ≥ 0"),
    (
        ["method=fedsgd"],
        "method = 'fedsgd' is invalid; allowed: fedpit, fedpit-v1, fedavg, fedavg-damped, fedprox, "
        "fedadam, fedmit, local, local-selfgen, centralized",
    ),
    (["model.template=llama"], "model.template = 'llama' is invalid; allowed: auto, alpaca, chat"),
    (
        ["model.device=gpu"],
        "model.device = 'gpu' is invalid; allowed: auto, cpu, cuda, cuda:N, mps",
    ),
    (["fed.betta=0.5"], "unknown configuration key 'fed.betta'; did you mean 'fed.beta'?"),
    (["fed.rounds=abc"], "fed.rounds = 'abc': expected int"),
    (["fed.rounds=2.5"], "fed.rounds = '2.5': expected int"),
    (["fed.beta=half"], "fed.beta = 'half': expected float"),
    (["synth.trim-unfinished=maybe"], "synth.trim-unfinished = 'maybe': expected bool"),
    (["fed.beta"], "override 'fed.beta' must look like key=value, e.g. fed.beta=0.5"),
]


@pytest.fixture
def run(tmp_path, monkeypatch, capsys, tiny_model_dir):
    """Run ``fedpit run`` over a small valid setup plus ``args``; return (code, err, out)."""
    monkeypatch.chdir(tmp_path)

    def tripwire(*args: object, **kwargs: object) -> dict[str, object]:
        raise AssertionError("validation let a bad input reach the run itself")

    monkeypatch.setattr(cli, "_simulate", tripwire)
    monkeypatch.setattr(standalone, "run_standalone", tripwire)
    (tmp_path / "good.jsonl").write_bytes(GOOD_JSONL)
    defaults = [
        f"data.name={tmp_path / 'good.jsonl'}",
        "data.partition=iid",
        "data.num-clients=2",
        "data.examples-per-client=2",
        "data.test-size=0",
        f"model.name={tiny_model_dir}",
        f"run-dir={tmp_path / 'run'}",
    ]

    def invoke(*args: str, config: Path | None = None) -> tuple[int, str, str]:
        argv = ["run", *(["--config", str(config)] if config else []), *defaults, *args]
        code = main(argv)
        out, err = capsys.readouterr()
        return code, err, out

    return invoke


def assert_one_clear_error(code: int, err: str, expected: str, tmp_path: Path) -> None:
    """Exit 2, exactly the expected error line, no traceback, no run directory."""
    errors = [line for line in err.splitlines() if line.startswith("fedpit: error: ")]
    assert code == 2
    assert errors == [f"fedpit: error: {expected}"]
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("name", "content", "overrides", "expected"),
    [case[1:] for case in DATA_CASES],
    ids=[case[0] for case in DATA_CASES],
)
def test_bad_data(run, tmp_path, name, content, overrides, expected):
    path = tmp_path / name
    path.write_bytes(content)
    code, err, _ = run(f"data.name={path}", *overrides)
    assert_one_clear_error(code, err, expected.format(file=path), tmp_path)


@pytest.mark.parametrize(("overrides", "expected"), CONFIG_CASES)
def test_bad_configuration_value(run, tmp_path, overrides, expected):
    code, err, _ = run(*overrides)
    assert_one_clear_error(code, err, expected, tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[fed]\nrounds = "two"\n', "fed.rounds = 'two': expected int"),
        ("[fed]\nbeta = 2\n", "fed.beta = 2.0 is invalid; allowed: a number in [0, 1]"),
        (
            "[data]\nnum-client = 4\n",
            "unknown configuration key 'data.num-client'; did you mean 'data.num-clients'?",
        ),
        ("[fed]\nrounds = \n", "{file}: invalid TOML: Invalid value (at line 2, column 10)"),
    ],
    ids=["wrong-type", "out-of-range", "unknown-key", "invalid-toml"],
)
def test_bad_configuration_file(run, tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, err, _ = run(config=path)
    assert_one_clear_error(code, err, expected.format(file=path), tmp_path)


def test_missing_local_model_paths(run, tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    cases = [
        ("/no/such/model", "model.name: path /no/such/model does not exist"),
        (str(tmp_path / "m.gguf"), f"model.name: GGUF file {tmp_path / 'm.gguf'} does not exist"),
        (
            str(empty),
            f"model.name: {empty} exists but holds no config.json; expected a Hugging Face "
            "model directory, a .gguf file, a hub id, or 'smollm2'",
        ),
    ]
    for name, expected in cases:
        code, err, _ = run(f"model.name={name}")
        assert_one_clear_error(code, err, expected, tmp_path)


def test_incomplete_model_directories(run, tmp_path, tiny_model_dir):
    no_weights, no_tokenizer = tmp_path / "no-weights", tmp_path / "no-tokenizer"
    shutil.copytree(tiny_model_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    no_tokenizer.mkdir()
    shutil.copy(tiny_model_dir / "config.json", no_tokenizer)
    cases = [
        (
            no_weights,
            f"cannot load model from '{no_weights}': Error no file named model.safetensors, "
            f"or pytorch_model.bin, found in directory {no_weights}.",
        ),
        (
            no_tokenizer,
            f"cannot load tokenizer from '{no_tokenizer}': Couldn't instantiate the backend "
            "tokenizer from one of; a model directory needs its tokenizer files, e.g. "
            "tokenizer.json and tokenizer_config.json",
        ),
    ]
    for name, expected in cases:
        code, err, _ = run(f"model.name={name}")
        assert_one_clear_error(code, err, expected, tmp_path)


HOW_TO_USE_A_LOCAL_COPY = (
    "download it where the hub is reachable (hf download someorg/no-such-model --local-dir "
    "DIR), copy DIR here and set model.name=DIR"
)


def test_hub_id_while_offline(run, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, err, _ = run("model.name=someorg/no-such-model")
    expected = (
        "model.name = 'someorg/no-such-model' is neither a local path nor a cached hub "
        f"model, and hub access is off (HF_HUB_OFFLINE); {HOW_TO_USE_A_LOCAL_COPY}"
    )
    assert_one_clear_error(code, err, expected, tmp_path)


def test_hub_unreachable(run, tmp_path, monkeypatch):
    import huggingface_hub

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    code, err, _ = run("model.name=someorg/no-such-model")
    expected = (
        "model.name = 'someorg/no-such-model' is neither a local path nor a cached hub "
        "model, and the Hugging Face hub cannot be reached (OSError: [Errno 101] Network is "
        f"unreachable); {HOW_TO_USE_A_LOCAL_COPY}"
    )
    assert_one_clear_error(code, err, expected, tmp_path)


def test_unknown_hub_id(run, tmp_path, monkeypatch):
    import httpx
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def not_found(*args: object, **kwargs: object) -> None:
        response = httpx.Response(404, request=httpx.Request("GET", "https://huggingface.co"))
        raise RepositoryNotFoundError("404", response=response)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", not_found)
    code, err, _ = run("model.name=someorg/no-such-model")
    expected = (
        "model.name = 'someorg/no-such-model': no such local path, and no such model on the "
        "Hugging Face hub (or it is private); allowed: 'smollm2', a local model directory, "
        "a .gguf file or a hub id"
    )
    assert_one_clear_error(code, err, expected, tmp_path)


def test_chat_template_the_tokenizer_lacks(run, tmp_path, tiny_model_dir):
    plain = tmp_path / "no-chat-model"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    code, err, _ = run(f"model.name={plain}", "model.template=chat")
    expected = "model.template = 'chat' but the tokenizer has no chat template"
    assert_one_clear_error(code, err, expected, tmp_path)


def test_over_long_examples_are_truncated_with_a_warning(run, tmp_path, monkeypatch):
    reached = []

    def fake_simulate(cfg: object, *args: object, **kwargs: object) -> dict[str, object]:
        reached.append(cfg)
        return {
            "method": "fedpit",
            "rounds": 1,
            "seconds": 0.0,
            "run_dir": "r",
            "final_adapter": "g",
        }

    monkeypatch.setattr(cli, "_simulate", fake_simulate)
    code, err, _ = run("model.max-length=16")
    assert code == 0 and reached  # the run goes ahead
    # One warning, wrapped at 100 columns (continuation lines indented).
    text = err[err.index("fedpit: warning: ") :]
    wrapped = [text.splitlines()[0]]
    wrapped += [x for x in text.splitlines()[1:] if x.startswith("  ")][: text.count("\n")]
    assert all(len(x) <= 100 for x in wrapped)
    line = " ".join(x.strip() for x in wrapped)
    assert line.startswith(
        "fedpit: warning: 4 of 4 training examples are longer than model.max-length = 16 "
        "tokens (prompt + response): "
    )
    assert line.endswith(
        ", …; they are truncated to fit (the end of the response is cut). "
        "Raise model.max-length to train on them whole."
    )
    code, err, _ = run("model.max-length=4096")
    assert code == 0 and "warning" not in err


def test_over_budget_names_the_longest_first():
    examples = [Example(id=f"e{i}", instruction="q", input="", output="a") for i in range(5)]
    tokens = {"e0": 10, "e1": 40, "e2": 30, "e3": 20, "e4": 50}
    report = over_budget(examples, lambda ex: tokens[ex.id], max_length=20)
    assert report.longest == [("e4", 50), ("e1", 40), ("e2", 30)]
    assert report.warning() == (
        "3 of 5 training examples are longer than model.max-length = 20 tokens "
        "(prompt + response): e4 (50 tokens), e1 (40 tokens), e2 (30 tokens); they are "
        "truncated to fit (the end of the response is cut). Raise model.max-length to "
        "train on them whole."
    )
    assert over_budget(examples, lambda ex: tokens[ex.id], max_length=50).warning() is None
