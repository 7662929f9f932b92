"""What each SuperNode is given: its private data file, state directory and client id.

A node's files are private: :func:`check_not_packed` refuses any that ``flwr run`` would
pack into the app (:func:`find_app_dir`) it sends to every node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpit.deploy.credentials import KEY_MODE
from fedpit.deploy.errors import DeployError


@dataclass(frozen=True)
class NodeSpec:
    """What one SuperNode is given through its node configuration.

    Attributes:
        client_id: The client's id (``client-id``): names it in the logs and seeds it.
        data_path: Its private training examples (``data-path``; JSON/JSONL/CSV).
        state_dir: Where it keeps its private state (``state-dir``): its adapters,
            synthetic data and metrics. Never sent anywhere.
        test_path: Its private held-out examples for federated evaluation
            (``test-path``), or ``None``.
        policy_path: Its privacy policy file (``policy-file``, see
            :mod:`fedpit.privacy.policy`), or ``None`` for the safe default policy.
    """

    client_id: int
    data_path: Path
    state_dir: Path
    test_path: Path | None = None
    policy_path: Path | None = None

    def node_config(self) -> str:
        """The ``flower-supernode --node-config`` value (TOML literal strings)."""
        items = {"data-path": self.data_path, "state-dir": self.state_dir}
        if self.test_path is not None:
            items["test-path"] = self.test_path
        if self.policy_path is not None:
            items["policy-file"] = self.policy_path
        parts = []
        for key, path in items.items():
            text = str(Path(path).expanduser().resolve())
            if "'" in text:
                raise DeployError(f"{key} {text!r}: a path with a single quote is not supported")
            parts.append(f"{key}='{text}'")
        return " ".join([*parts, f"client-id={self.client_id}"])


def write_examples(path: Path, examples: Iterable[Any]) -> Path:
    """Write :class:`~fedpit.data.example.Example` records as JSONL ``load_examples`` reads.

    The ``meta`` fields become top-level fields again, so a reload gives equal examples.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for ex in examples:
        record = {k: v for k, v in ex.meta.items() if k not in ("instruction", "input", "output")}
        record.update(id=ex.id, instruction=ex.instruction, input=ex.input, output=ex.output)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE)  # private data: 0600
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(lines)
    return path


def split_to_nodes(cfg: Any, directory: Path) -> list[NodeSpec]:
    """Write each client's share of the run's data split to its own node directory.

    ``directory/<i>/data.jsonl`` (and ``test.jsonl`` when ``eval.client-test-size`` > 0)
    hold exactly what simulated client ``i`` would train (and evaluate) on; each node's
    state goes to ``directory/<i>/state``. For trying a deployment on one machine: real
    data owners bring their own files.
    """
    from fedpit.data.prepare import run_data_for

    split = run_data_for(cfg).split
    nodes = []
    for i, examples in enumerate(split.clients):
        node_dir = directory / str(i)
        test = None
        if split.client_tests and split.client_tests[i]:
            test = write_examples(node_dir / "test.jsonl", split.client_tests[i])
        data = write_examples(node_dir / "data.jsonl", examples)
        nodes.append(NodeSpec(i, data, node_dir / "state", test))
    return nodes


def find_app_dir() -> Path:
    """The FedPIT Flower app directory (the ``pyproject.toml`` with ``[tool.flwr.app]``)."""
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and "[tool.flwr.app]" in pyproject.read_text(encoding="utf-8"):
        return root
    raise DeployError(
        "cannot find FedPIT's pyproject.toml (the Flower app); pass --app DIR with the "
        "directory of a FedPIT checkout"
    )


def check_not_packed(path: Path, app_dir: Path) -> None:
    """Refuse a private path that ``flwr run`` would pack into the app it ships.

    ``flwr run APP`` builds a FAB from every file of ``APP`` that ``.gitignore`` does not
    exclude and whose name ends in .py, .toml, .md, .json, .jsonl, .yaml or .yml, and
    sends it to the SuperLink and every SuperNode. ``runs/`` is git-ignored.
    """
    path = Path(path).expanduser().resolve()
    if path.is_relative_to(app_dir) and not path.is_relative_to(app_dir / "runs"):
        raise DeployError(
            f"{path} is inside the Flower app {app_dir}: `flwr run` would pack its data "
            "files into the app it sends to every node; use a path outside it or under runs/"
        )
