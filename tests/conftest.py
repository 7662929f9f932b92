"""Shared fixtures: a tiny model directory built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny import save_tiny

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_base_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests compute base-model outputs afresh (tests of the cache switch it back on)."""
    monkeypatch.setenv("FEDPIT_NO_BASE_CACHE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face model directory holding the tiny Llama and its tokenizer."""
    return save_tiny(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def flower_task(monkeypatch):
    """Messages need a run id, as if they were created inside a Flower run."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)
