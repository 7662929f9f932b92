import tomllib
from pathlib import Path

import pytest

from fedpit.config.load import default_flat, from_flat, load_toml, parse_overrides, to_flat
from fedpit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_flower_config_equals_the_dataclass_defaults():
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert load_toml(ROOT / "pyproject.toml") == default_flat()
    assert "config" in doc["tool"]["flwr"]["app"]


def test_round_trip_and_coercion_from_strings():
    cfg = from_flat(
        {"fed.beta": "0.25", "fed.rounds": "3", "method": "fedavg", "synth.do-sample": "true"}
    )
    assert cfg.fed.beta == 0.25 and cfg.fed.rounds == 3 and cfg.method == "fedavg"
    assert cfg.synth.do_sample is True
    assert from_flat(to_flat(cfg)) == cfg


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"fed.beta": 1.5}, "fed.beta = 1.5 is invalid; allowed: a number in [0, 1]"),
        ({"fed.rounds": 0}, "fed.rounds"),
        ({"fed.rounds": "two"}, "expected int"),
        ({"method": "fedsgd"}, "allowed: fedpit, fedpit-v1"),
        ({"fed.clients-per-round": 5, "data.num-clients": 3}, "fed.clients-per-round"),
        ({"fed.betta": 0.5}, "did you mean 'fed.beta'"),
        ({"synth.novelty": "exact"}, "rouge, focus"),
        ({"fed.min-clients": 0}, "fed.min-clients = 0 is invalid; allowed: 1 to the clients"),
        (
            {"fed.min-clients": 3, "fed.clients-per-round": 2},
            "allowed: 1 to the clients sampled per round = 2",
        ),
        ({"fed.round-timeout": -1}, "fed.round-timeout = -1.0 is invalid; allowed: ≥ 0 seconds"),
        (
            {"train.base-dtype": "float16"},
            "train.base-dtype = 'float16' is invalid; allowed: auto, float32, bfloat16",
        ),
        ({"synth.generation-dtype": "int8"}, "allowed: auto, float32, bfloat16"),
    ],
)
def test_invalid_values_are_named_with_what_is_allowed(values, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_flat(values)


def test_toml_files_nested_or_flat_and_overrides(tmp_path):
    (tmp_path / "a.toml").write_text('method = "fedavg"\n[fed]\nbeta = 0.0\n')
    (tmp_path / "b.toml").write_text('"fed.beta" = 0.75\n')
    assert load_toml(tmp_path / "a.toml") == {"method": "fedavg", "fed.beta": 0.0}
    assert load_toml(tmp_path / "b.toml") == {"fed.beta": 0.75}
    assert parse_overrides(["fed.beta=0.5", "model.name='x'"]) == {
        "fed.beta": "0.5",
        "model.name": "x",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["fed.beta"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("method = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_toml(tmp_path / "bad.toml")


def test_shipped_presets_parse():
    from fedpit.runs.sweep import load_sweep, plan

    for path in sorted((ROOT / "configs").glob("*.toml")):
        if "[sweep]" in path.read_text():
            assert plan(load_sweep(path))  # validates every cell's configuration
        else:
            from_flat(load_toml(path))
