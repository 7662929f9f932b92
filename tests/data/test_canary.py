"""Canaries: unique, deterministic, same format as their reference secrets."""

from __future__ import annotations

import random
import re

import pytest

from fedpit.data.canary import (
    CANARY_KEY,
    canary_format,
    is_canary,
    make_canaries,
    plant,
)
from fedpit.errors import DataError
from tests.helpers import examples


def test_canaries_are_unique_and_deterministic() -> None:
    a = make_canaries(20, seed=1)
    assert a == make_canaries(20, seed=1)
    assert a != make_canaries(20, seed=2)
    assert len({c.id for c in a}) == len({c.instruction for c in a}) == 20
    secrets = [c.meta[CANARY_KEY] for c in a]
    assert len(set(secrets)) == 20
    for c, secret in zip(a, secrets, strict=True):
        assert re.fullmatch(r"\d{10}", secret)
        assert secret in c.output
        assert c.instruction.startswith("What is the contact number for patient ")
        assert is_canary(c)


def test_canary_format_draws_the_canaries_wording_with_fresh_secrets() -> None:
    for seed in range(6):
        canary = make_canaries(1, seed)[0]
        draw = canary_format(seed)
        rng = random.Random(0)
        refs = [draw(rng) for _ in range(50)]
        secret = canary.meta[CANARY_KEY]
        template = canary.output.replace(secret, "{}")
        assert all(re.fullmatch(re.escape(template).replace(r"\{\}", r"\d{10}"), r) for r in refs)
        assert canary.output not in refs
        assert len(set(refs)) == 50


def test_plant_appends_and_refuses_id_clashes() -> None:
    data = examples(3)
    canaries = make_canaries(2, seed=0)
    planted = plant(data, canaries)
    assert planted == [*data, *canaries]
    assert [is_canary(e) for e in planted] == [False, False, False, True, True]
    with pytest.raises(DataError, match="collide"):
        plant(planted, canaries)


def test_too_many_canaries_is_an_error() -> None:
    with pytest.raises(ValueError, match="allowed"):
        make_canaries(10_000, seed=0)


def test_attack_config_plants_canaries_in_the_chosen_client_only(tmp_path):
    import json

    from fedpit.config.load import from_flat
    from fedpit.data.canary import is_canary
    from fedpit.data.prepare import run_data_for

    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps({"instruction": f"What is condition {i} ?", "output": f"Answer {i}."}) + "\n"
            for i in range(40)
        )
    )
    base = {
        "data.name": str(data),
        "data.partition": "iid",
        "data.num-clients": 2,
        "data.examples-per-client": 5,
        "data.test-size": 4,
    }
    plain = run_data_for(from_flat(base)).split
    cfg = from_flat({**base, "attack.canaries": 3, "attack.canary-client": 1})
    split = run_data_for(cfg).split
    assert split.clients[0] == plain.clients[0] and split.test == plain.test
    assert sum(map(is_canary, split.clients[1])) == 3
    assert split.clients[1][:5] == plain.clients[1]
    assert not any(map(is_canary, split.test))
