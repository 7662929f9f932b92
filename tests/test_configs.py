"""Every shipped configuration in ``configs/`` parses and validates, post steps included."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpit.cli.main import make_parser
from fedpit.config.load import from_flat, load_toml
from fedpit.runs.sweep import load_sweep, plan, post_commands

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
        args = parser.parse_args(argv[3:])  # drop "python -m fedpit"
        assert callable(args.func)


def test_every_config_file_the_help_and_readme_name_exists() -> None:
    import re

    from fedpit.cli import main as cli

    root = Path(__file__).parents[1]
    text = cli.RUN_HELP + (root / "README.md").read_text()
    named = set(re.findall(r"configs/[\w.-]+\.toml", text))
    assert named, "no config named"
    missing = sorted(n for n in named if not (root / n).is_file())
    assert not missing
