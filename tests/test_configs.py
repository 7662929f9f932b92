"""Every shipped configuration in ``configs/`` parses and validates, post steps included."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpit.cli import make_parser
from fedpit.config import from_flat, load_toml
from fedpit.sweep import load_sweep, plan, post_commands

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


def test_there_are_configs() -> None:
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid(path: Path) -> None:
    if "sweep" not in {k.split(".", 1)[0] for k in load_toml(path)}:
        from_flat(load_toml(path))  # raises ConfigError naming the bad key
        return
    spec = load_sweep(path)  # validates every cell's configuration
    cells = plan(spec)
    assert cells
    parser = make_parser()
    for argv in post_commands(spec, cells[0]):
        args = parser.parse_args(argv[3:])  # drop "python -m fedpit.cli"
        assert callable(args.func)
