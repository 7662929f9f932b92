"""The base-output cache: keyed by everything that shapes a value, robust to bad entries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fedpit.lm import base_cache
from fedpit.lm.generation import Generation, GenerationSpec
from fedpit.lm.runtime import Runtime


@dataclass(frozen=True)
class FakeFingerprint:
    digest: str


class FakeRuntime:
    """Only what the cache reads of a runtime: the base fingerprint's digest."""

    def __init__(self, digest: str) -> None:
        self.fingerprint = FakeFingerprint(digest)


@pytest.fixture
def on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDPIT_CACHE", str(tmp_path))
    monkeypatch.delenv("FEDPIT_NO_BASE_CACHE")
    return tmp_path / "base-outputs"


def counter() -> tuple[list[int], object]:
    calls: list[int] = []

    def compute() -> list[float]:
        calls.append(1)
        return [0.1, 1 / 3, -2.5e-7]

    return calls, compute


def test_a_value_is_computed_once_and_round_trips_exactly(on: Path) -> None:
    rt = FakeRuntime("a")
    calls, compute = counter()
    first = base_cache.cached(rt, "nll", {"x": [1, 2]}, compute)  # type: ignore[arg-type]
    second = base_cache.cached(rt, "nll", {"x": [1, 2]}, compute)  # type: ignore[arg-type]
    assert first == second == [0.1, 1 / 3, -2.5e-7] and calls == [1]


@pytest.mark.parametrize(
    ("digest", "kind", "key"),
    [("b", "nll", {"x": [1, 2]}), ("a", "other", {"x": [1, 2]}), ("a", "nll", {"x": [2, 1]})],
)
def test_another_base_kind_or_key_is_another_entry(on: Path, digest, kind, key) -> None:
    calls, compute = counter()
    base_cache.cached(FakeRuntime("a"), "nll", {"x": [1, 2]}, compute)  # type: ignore[arg-type]
    base_cache.cached(FakeRuntime(digest), kind, key, compute)  # type: ignore[arg-type]
    assert calls == [1, 1]


def test_a_corrupt_entry_is_recomputed_and_the_switch_bypasses(
    on: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = FakeRuntime("a")
    calls, compute = counter()
    base_cache.cached(rt, "nll", {}, compute)  # type: ignore[arg-type]
    (entry,) = on.iterdir()
    entry.write_text('{"kind": "nll", "val')
    assert base_cache.cached(rt, "nll", {}, compute) == [0.1, 1 / 3, -2.5e-7]  # type: ignore[arg-type]
    assert calls == [1, 1]
    monkeypatch.setenv("FEDPIT_NO_BASE_CACHE", "1")
    base_cache.cached(rt, "nll", {}, compute)  # type: ignore[arg-type]
    assert calls == [1, 1, 1]


def test_base_generate_replays_texts_and_finished_flags(on: Path) -> None:
    calls: list[list[str]] = []

    def generate(prompts, spec):  # type: ignore[no-untyped-def]
        calls.append(list(prompts))
        return [Generation(f"{p}!", i % 2 == 0) for i, p in enumerate(prompts)]

    cached = base_cache.base_generate(FakeRuntime("a"), generate)  # type: ignore[arg-type]
    spec = GenerationSpec(max_new_tokens=4)
    first = cached(["p", "q"], spec)
    assert cached(["p", "q"], spec) == first == [Generation("p!", True), Generation("q!", False)]
    cached(["p", "q"], GenerationSpec(max_new_tokens=5))
    assert calls == [["p", "q"], ["p", "q"]]


def test_the_key_includes_the_real_base_fingerprint(tiny_model_dir: Path, on: Path) -> None:
    from fedpit.config.load import from_flat
    from fedpit.lm.runtime import get_runtime

    cfg = from_flat({"model.name": str(tiny_model_dir)})
    rt: Runtime = get_runtime(cfg.model, cfg.lora)
    path = base_cache.cache_path(rt, "generate", {"prompts": ["x"]})
    assert path.parent == on
    assert path != base_cache.cache_path(FakeRuntime("a"), "generate", {"prompts": ["x"]})  # type: ignore[arg-type]
    assert len(base_cache.code_version()) == 64


def test_the_round_0_global_models_test_losses_are_the_base_models_and_cached(
    tiny_model_dir: Path, on: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's round-0 test loss (a global model that changes nothing) is computed
    once per machine; every trained global model is scored afresh."""
    from types import SimpleNamespace

    import torch

    from fedpit.adapters import PUBLIC, get_state, initial_state, is_identity
    from fedpit.fed import server_app
    from tests.helpers import examples, tiny_runtime

    rt = tiny_runtime(tiny_model_dir)
    run_data = SimpleNamespace(split=SimpleNamespace(test=examples(3)))
    round0 = initial_state(get_state(rt.model, PUBLIC), seed=5)
    assert is_identity(round0)
    first = server_app.global_test_losses(rt, run_data, 64, round0)  # type: ignore[arg-type]
    with rt.model.disable_adapter():  # the base alone: the same floats
        assert first == server_app.test_losses(rt, run_data, 64)  # type: ignore[arg-type]
    assert len(list(on.iterdir())) == 1

    def no_scoring(*args: object, **kwargs: object) -> list[float]:
        raise AssertionError("scored again")

    monkeypatch.setattr(server_app, "response_nll", no_scoring)
    # Another seed's round-0 model (other A matrices, B still zero) reads the same entry.
    other = initial_state(get_state(rt.model, PUBLIC), seed=6)
    assert server_app.global_test_losses(rt, run_data, 64, other) == first  # type: ignore[arg-type]
    trained = {k: v + 0.01 if "lora_B" in k else v for k, v in round0.items()}
    assert not is_identity(trained) and not is_identity({"w": torch.zeros(2)})
    with pytest.raises(AssertionError, match="scored again"):
        server_app.global_test_losses(rt, run_data, 64, trained)  # type: ignore[arg-type]
