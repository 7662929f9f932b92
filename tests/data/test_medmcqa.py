import json

import pytest

from fedpit.data import find_medmcqa, load_medmcqa
from fedpit.errors import DataError


def test_converts_the_real_evals_file():
    path = find_medmcqa()
    if path is None:
        pytest.skip("evals is not installed")
    examples = load_medmcqa(path)
    assert len(examples) == 300
    first = examples[0]
    assert first.instruction.startswith("Chronic urethral obstruction")
    assert first.instruction.endswith("a) Hyperplasia\nb) Hyperophy\nc) Atrophy\nd) Dyplasia")
    assert "Subject:" not in first.instruction
    assert (first.output, first.input, dict(first.meta)) == (
        "c) Atrophy",
        "",
        {"subject": "Anatomy"},
    )
    assert len({e.id for e in examples}) == 300
    assert all(not e.instruction.startswith("Subject") for e in examples)
    subjects = {e.meta["subject"] for e in examples}
    assert {"Anatomy", "Surgery", "Pharmacology"} <= subjects


def test_bad_record_names_line(tmp_path):
    good = {
        "input": [{"role": "user", "content": "Subject: X\n\nQ?\n\na) 1\nb) 2"}],
        "ideal": "a) 1",
    }
    bad = {"input": [{"role": "user", "content": "Q? without subject"}], "ideal": "a) 1"}
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(
        DataError, match=r"samples\.jsonl:2: user message must start with 'Subject: '"
    ):
        load_medmcqa(path)
    path.write_text(json.dumps(good) + "\n{}\n")
    with pytest.raises(DataError, match=r"samples\.jsonl:2: not an evals MedMCQA record"):
        load_medmcqa(path)
