import pytest

from fedpit.data import sources
from fedpit.errors import DataError


def test_hub_names_resolve_and_load_through_datasets(monkeypatch):
    seen = {}

    def fake_load(name, split="train", fields=None):
        seen["args"] = (name, split)
        return ["ex"]

    monkeypatch.setattr(sources, "load_hub_dataset", fake_load)
    src = sources.resolve_data("hf:org/med-qa:test")
    assert src.name == "hub" and "network" in src.description
    assert src.load() == ["ex"] and seen["args"] == ("org/med-qa", "test")
    assert sources.resolve_data("hf:org/med-qa").load() == ["ex"]
    assert seen["args"] == ("org/med-qa", "train")
    with pytest.raises(DataError, match="needs a data set id"):
        sources.resolve_data("hf:")
