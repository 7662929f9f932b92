"""Read instruction examples from JSONL, JSON, CSV files or a Hugging Face Hub data set.

Every record becomes an :class:`Example`. Records are checked as they are read, and a
bad one stops loading with a :class:`DataError` naming the file and line, because a
silently skipped record would change the federation without anyone noticing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedpit.data.example import Example
from fedpit.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv")


@dataclass(frozen=True)
class FieldMap:
    """Names of the source fields that hold each :class:`Example` field.

    ``id=""`` ignores any id in the data and numbers examples ``"<file stem>-<line or position>"``
    (a source ``id`` field is then kept in ``meta["id"]``).
    """

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    id: str = "id"


def load_examples(path: str | Path, fields: FieldMap = FieldMap()) -> list[Example]:
    """Load examples from a ``.jsonl``, ``.json`` (a list of objects) or ``.csv`` file.

    A missing ``input`` becomes ""; a missing id becomes ``"<file stem>-<line>"`` (in a
    JSON array ``"<file stem>-<position>"``). Every other field goes to ``Example.meta``:
    strings as they are, other values (numbers, booleans, lists, objects) as their JSON
    text so nothing is lost; nulls are dropped.

    Args:
        path: The file to read.
        fields: Which source fields hold instruction, input, output and id.

    Returns:
        The examples in file order.

    Raises:
        DataError: If the file is missing, has an unsupported extension, is not UTF-8,
            holds malformed or invalid records (reported as ``file:line``), holds no
            examples, or repeats an id.

    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
            f"allowed: {', '.join(SUFFIXES)}"
        )
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    text = _read_utf8(path)
    readers = {".jsonl": _jsonl_records, ".json": _json_records, ".csv": _csv_records}
    records = readers[path.suffix.lower()](text, path)
    # A JSON array may hold many records on one line (Alpaca's own files are written so):
    # its records are numbered by position; JSONL and CSV records by their line.
    by_position = path.suffix.lower() == ".json"
    examples = _to_examples(
        (
            (f"{path}:{line}", f"{path.stem}-{i if by_position else line}", record)
            for i, (line, record) in enumerate(records, start=1)
        ),
        fields,
    )
    if not examples:
        raise DataError(f"{path}: no examples (the file is empty)")
    return examples


def load_hub_dataset(
    name: str, split: str = "train", fields: FieldMap = FieldMap()
) -> list[Example]:
    """Load examples from a Hugging Face Hub data set (needs network or a local cache).

    Args:
        name: The Hub data set id, e.g. ``"lavita/MedQuAD"``.
        split: The split to read.
        fields: Which columns hold instruction, input, output and id.

    Returns:
        The examples in row order; missing ids become ``"<name>-<row>"``.

    Raises:
        DataError: If the data set cannot be loaded or a row is invalid.

    """
    import datasets  # Imported here: it is slow to import and only this loader needs it.

    try:
        rows = datasets.load_dataset(name, split=split)
    except Exception as err:  # The Hub raises many unrelated types; report them all alike.
        raise DataError(f"cannot load Hub data set {name!r} split {split!r}: {err}") from err
    stem = name.rsplit("/", 1)[-1]
    examples = _to_examples(
        ((f"{name}[{split}] row {i}", f"{stem}-{i}", row) for i, row in enumerate(rows)),
        fields,
    )
    if not examples:
        raise DataError(f"Hub data set {name!r} split {split!r} has no rows")
    return examples


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {data[err.start]:#04x}); save the file as UTF-8"
        ) from err


def _jsonl_records(text: str, path: Path) -> Iterator[tuple[int, object]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield line, json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{line}: malformed JSON ({err.msg})") from err


def _json_records(text: str, path: Path) -> Iterator[tuple[int, object]]:
    # Decode element by element so each record keeps the line it starts on.
    decoder = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip_space(pos: int) -> int:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        return pos

    pos = skip_space(0)
    if pos == len(text):
        return
    if text[pos] != "[":
        raise DataError(f"{path}:{line_of(pos)}: a .json file must hold a list of objects")
    pos = skip_space(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from err
        yield line_of(pos), record
        pos = skip_space(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip_space(pos + 1)
        elif pos < len(text) and text[pos] == "]":
            return
        else:
            raise DataError(f"{path}:{line_of(pos)}: malformed JSON (expected ',' or ']')")


def _csv_records(text: str, path: Path) -> Iterator[tuple[int, object]]:
    # csv.reader rather than DictReader: reading the line counter before each row gives
    # the line a record starts on, even after blank lines or multi-line quoted values.
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(f"{path}:{line}: malformed CSV ({err})") from err
        if not row:
            continue
        if len(row) > len(header):
            raise DataError(f"{path}:{line}: more values than the header has columns")
        yield line, dict(zip(header, row, strict=False))


def _to_examples(records: Iterable[tuple[str, str, object]], fields: FieldMap) -> list[Example]:
    examples: list[Example] = []
    seen: dict[str, str] = {}
    for where, default_id, record in records:
        example = _to_example(record, where, default_id, fields)
        if example.id in seen:
            raise DataError(
                f"{where}: duplicate id {example.id!r} (first used at {seen[example.id]}); "
                "ids must be unique"
            )
        seen[example.id] = where
        examples.append(example)
    return examples


def _to_example(record: object, where: str, default_id: str, fields: FieldMap) -> Example:
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")

    def text(field: str, required: bool) -> str:
        value = record.get(field)
        if value is None:
            if required:
                raise DataError(
                    f"{where}: missing field {field!r}; fields present: {sorted(record)}; "
                    f"every record needs {fields.instruction!r} and {fields.output!r} text"
                )
            return ""
        if not isinstance(value, str):
            raise DataError(f"{where}: field {field!r} must be a string, got {value!r}")
        if required and not value.strip():
            raise DataError(f"{where}: field {field!r} is empty; it must hold text")
        return value

    raw_id = record.get(fields.id) if fields.id else None
    if isinstance(raw_id, (dict, list)):
        raise DataError(f"{where}: field {fields.id!r} must be a string or number")
    mapped = {fields.instruction, fields.input, fields.output, fields.id}
    meta = {
        key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for key, value in record.items()
        if key not in mapped and value is not None
    }
    return Example(
        id=str(raw_id) if raw_id not in (None, "") else default_id,
        instruction=text(fields.instruction, required=True),
        input=text(fields.input, required=False),
        output=text(fields.output, required=True),
        meta=meta,
    )
