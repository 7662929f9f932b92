"""The command line: clear errors, never a traceback; help that explains."""

import pytest

from fedpit.cli.main import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "fed.beta=2"], "fed.beta = 2.0 is invalid; allowed: a number in [0, 1]"),
        (["run", "fed.rounds=0"], "fed.rounds"),
        (["run", "nonsense"], "must look like key=value"),
        (["run", "model.nam=x"], "did you mean 'model.name'"),
        (["run", "data.name=/no/such/file.jsonl"], "neither a known data set nor an existing file"),
        (["run", "--config", "/no/such.toml"], "does not exist"),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedpit: error: ") and message in err
    assert "Traceback" not in err


def test_unknown_model_path_is_a_clear_error(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "What is gout ?", "output": "A kind of arthritis."}\n' * 1)
    code = main(
        [
            "run",
            "model.name=/no/such/model",
            f"data.name={data}",
            "data.partition=iid",
            "data.num-clients=1",
            "data.test-size=0",
            "data.examples-per-client=1",
        ]
    )
    assert code == 2
    assert "model.name: path /no/such/model does not exist" in capsys.readouterr().err


def test_keys_lists_every_key_with_its_default(capsys):
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    assert "fed.beta = 0.5" in out and 'synth.novelty = "focus"' in out


def test_help_explains_configuration(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "key=value" in capsys.readouterr().out


def test_auto_parallel_keeps_cores_busy_within_memory():
    from fedpit.cli.main import auto_parallel

    assert auto_parallel(3, 1, cpus=2, memory_gb=24) == 3  # the default: all 3 at once
    assert auto_parallel(10, 1, cpus=2, memory_gb=24) == 3  # not 10 base models
    assert auto_parallel(10, 1, cpus=16, memory_gb=24) == 3  # memory-bound
    assert auto_parallel(2, 1, cpus=8, memory_gb=256) == 2
    assert auto_parallel(4, 2, cpus=2, memory_gb=64) == 2


def test_the_command_line_starts_without_the_model_stack():
    """`fedpit --help` and every parser stay fast: no torch, transformers, Flower or nltk."""
    import subprocess
    import sys

    code = (
        "import sys; from fedpit.cli.main import make_parser; make_parser(); "
        "print(' '.join(m for m in ('torch', 'transformers', 'peft', 'flwr', "
        "'rouge_score', 'nltk', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
