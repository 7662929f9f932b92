import json

import pytest

from fedpit.data import FieldMap, load_examples
from fedpit.errors import DataError


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_defaults_ids_inputs_and_meta(tmp_path):
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"id": "a", "instruction": "Q1", "output": "A1", "source": "GHR", "n": 3},
            {"instruction": "Q2", "input": "ctx", "output": "A2", "tags": ["x", "y"], "z": None},
        ],
    )
    first, second = load_examples(path)
    assert (first.id, first.instruction, first.input, first.output) == ("a", "Q1", "", "A1")
    assert dict(first.meta) == {"source": "GHR", "n": "3"}
    assert second.id == "qa-2"  # file stem and line number
    assert second.input == "ctx"
    assert dict(second.meta) == {"tags": '["x", "y"]'}  # lists kept as JSON text, null dropped


def test_blank_lines_are_skipped_but_counted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('\n{"instruction": "Q", "output": "A"}\n\n', encoding="utf-8")
    (example,) = load_examples(path)
    assert example.id == "d-2"


def test_field_map(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl", [{"key": 7, "question": "Q", "context": "C", "answer": "A"}]
    )
    fields = FieldMap(instruction="question", input="context", output="answer", id="key")
    (example,) = load_examples(path, fields)
    assert (example.id, example.instruction, example.input, example.output) == ("7", "Q", "C", "A")
    assert dict(example.meta) == {}


def test_empty_id_field_name_numbers_by_line(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "x", "instruction": "Q", "output": "A"},
            {"id": "x", "instruction": "R", "output": "B"},
        ],
    )
    examples = load_examples(path, FieldMap(id=""))
    assert [e.id for e in examples] == ["m-1", "m-2"]
    assert [e.meta["id"] for e in examples] == ["x", "x"]


def test_json_list_reports_line_of_each_object(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        '[\n  {"instruction": "Q1", "output": "A1"},\n\n  {"instruction": "Q2",\n'
        '   "output": "A2"}\n]\n',
        encoding="utf-8",
    )
    examples = load_examples(path)
    assert [(e.id, e.instruction) for e in examples] == [("d-1", "Q1"), ("d-2", "Q2")]

    path.write_text('[\n {"instruction": "Q", "output": "A"},\n {"instruction": "Q"}\n]')
    with pytest.raises(DataError, match=r"d\.json:3: missing field 'output'"):
        load_examples(path)


def test_a_json_array_on_one_line_loads_with_distinct_ids(tmp_path):
    """The layout of Alpaca's alpaca_data.json and most instruction sets."""
    path = tmp_path / "alpaca_data.json"
    rows = [{"instruction": f"Q{i}", "input": "", "output": f"A{i}"} for i in range(3)]
    path.write_text(json.dumps(rows), encoding="utf-8")
    examples = load_examples(path)
    assert [e.id for e in examples] == ["alpaca_data-1", "alpaca_data-2", "alpaca_data-3"]
    assert [e.output for e in examples] == ["A0", "A1", "A2"]


def test_json_must_be_a_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"instruction": "Q", "output": "A"}')
    with pytest.raises(DataError, match=r"d\.json:1: .*list of objects"):
        load_examples(path)


def test_csv_with_multiline_value_and_blank_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        'instruction,output,source\nQ1,"line one\nline two",GHR\n\nQ2,A2,CDC\n', encoding="utf-8"
    )
    first, second = load_examples(path)
    assert first.output == "line one\nline two"
    assert (first.id, dict(first.meta)) == ("d-2", {"source": "GHR"})
    assert (second.id, second.input) == ("d-5", "")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "d.jsonl",
            '{"instruction": "Q", "output": "A"}\n{"instruction": "Q2",\n',
            r"d\.jsonl:2: malformed JSON",
        ),
        (
            "d.jsonl",
            '{"instruction": "Q", "output": "A"}\n[1, 2]\n',
            r"d\.jsonl:2: expected a JSON object, got list",
        ),
        ("d.jsonl", '{"output": "A"}\n', r"d\.jsonl:1: missing field 'instruction'"),
        ("d.jsonl", '{"instruction": "Q"}\n', r"d\.jsonl:1: missing field 'output'"),
        (
            "d.jsonl",
            '{"instruction": "Q", "output": "A"}\n{"instruction": " \\t", "output": "A"}\n',
            r"d\.jsonl:2: field 'instruction' is empty",
        ),
        (
            "d.jsonl",
            '{"instruction": "Q", "output": "\\n"}\n',
            r"d\.jsonl:1: field 'output' is empty",
        ),
        (
            "d.jsonl",
            '{"instruction": "Q", "output": 3}\n',
            r"d\.jsonl:1: field 'output' must be a string",
        ),
        (
            "d.jsonl",
            '{"id": 1, "instruction": "Q", "output": "A"}\n'
            '{"id": "1", "instruction": "R", "output": "B"}\n',
            r"d\.jsonl:2: duplicate id '1' \(first used at .*d\.jsonl:1\)",
        ),
        ("d.jsonl", "", r"d\.jsonl: no examples"),
        ("d.jsonl", "\n  \n", r"d\.jsonl: no examples"),
        ("d.json", "[]", r"d\.json: no examples"),
        (
            "d.json",
            '[{"instruction": "Q", "output": "A"}\n {"x": 1}]',
            r"d\.json:2: malformed JSON",
        ),
        ("d.csv", "instruction,output\n", r"d\.csv: no examples"),
        (
            "d.csv",
            "instruction,output\nQ,A\nQ2,A2,extra\n",
            r"d\.csv:3: more values than the header",
        ),
        ("d.csv", "question,output\nQ,A\n", r"d\.csv:2: missing field 'instruction'"),
        (
            "d.txt",
            "hello",
            r"d\.txt: unsupported file type '\.txt'; allowed: \.jsonl, \.json, \.csv",
        ),
    ],
)
def test_loader_errors_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_examples(path)


def test_non_utf8_reports_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        b'{"instruction": "Q", "output": "A"}\n{"instruction": "caf\xe9", "output": "A"}\n'
    )
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid UTF-8 \(byte 0xe9\)"):
        load_examples(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        load_examples(tmp_path / "nope.jsonl")


def test_hub_loader_maps_rows_and_wraps_failures(monkeypatch):
    import datasets

    from fedpit.data import load_hub_dataset

    rows = [{"question": "Q", "answer": "A", "qtype": "info"}, {"question": "R", "answer": ""}]
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: rows[:1])
    fields = FieldMap(instruction="question", output="answer")
    (example,) = load_hub_dataset("org/med", fields=fields)
    assert (example.id, example.instruction, example.output) == ("med-0", "Q", "A")
    assert dict(example.meta) == {"qtype": "info"}

    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: rows)
    with pytest.raises(DataError, match=r"org/med\[train\] row 1: field 'answer' is empty"):
        load_hub_dataset("org/med", fields=fields)

    def offline(name, split):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError, match=r"cannot load Hub data set 'org/med' split 'test': no network"
    ):
        load_hub_dataset("org/med", split="test")


def test_a_plain_alpaca_file_runs_with_the_default_partition(tmp_path):
    """No ``source`` column: the default natural partition falls back to iid, and says so."""
    from fedpit.config.load import from_flat
    from fedpit.data.prepare import load_run_data

    path = tmp_path / "mine.json"
    rows = [
        {"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(30)
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")
    cfg = from_flat(
        {
            "data.name": str(path),
            "data.num-clients": 2,
            "data.examples-per-client": 4,
            "data.test-size": 4,
        }
    )
    data = load_run_data(cfg.data)
    assert data.partition == "iid"
    assert "no 'source' column for the natural partition: split iid" in data.description
    assert [len(c) for c in data.split.clients] == [4, 4]
    # With the column present, natural partitioning is kept.
    for i, row in enumerate(rows):
        row["source"] = "A" if i % 2 else "B"
    path.write_text(json.dumps(rows), encoding="utf-8")
    load_run_data.cache_clear()
    assert load_run_data(cfg.data).partition == "natural"
