"""Convert the MedMCQA questions shipped with OpenAI's ``evals`` package into examples.

Each record there is a chat: a system message, then a user message of the form
``"Subject: Anatomy", a blank line, the question, a blank line, "a) ...", "b) ..."``; the
answer is in ``ideal`` (``"c) Atrophy"``). The subject becomes ``meta["subject"]``, the
natural partition key.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from fedpit.data.example import Example
from fedpit.errors import DataError

SAMPLES = Path("registry", "data", "medmcqa", "samples.jsonl")
SUBJECT_PREFIX = "Subject: "


def find_medmcqa() -> Path | None:
    """Locate MedMCQA's ``samples.jsonl`` in the installed ``evals`` package.

    ``evals`` is installed without its dependencies, so importing it would fail; the
    file is found from the package's location alone.

    Returns:
        The file's path, or None if ``evals`` (or the file) is not installed.

    """
    spec = importlib.util.find_spec("evals")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / SAMPLES
        if path.is_file():
            return path
    return None


def load_medmcqa(path: str | Path) -> list[Example]:
    """Load MedMCQA chat records as examples.

    Args:
        path: An ``evals`` MedMCQA ``samples.jsonl`` file.

    Returns:
        One example per line: instruction = question and lettered options, output = the
        ideal answer (``"c) Atrophy"``), ``meta["subject"]`` = the subject; ids are
        ``"medmcqa-<line>"``.

    Raises:
        DataError: If the file is missing or a line is not in the format above.

    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    examples = []
    with path.open(encoding="utf-8") as lines:
        for line, raw in enumerate(lines, start=1):
            if raw.strip():
                examples.append(_to_example(raw, f"{path}:{line}", f"medmcqa-{line}"))
    if not examples:
        raise DataError(f"{path}: no examples (the file is empty)")
    return examples


def _to_example(raw: str, where: str, example_id: str) -> Example:
    try:
        record = json.loads(raw)
        user = next(m["content"] for m in record["input"] if m["role"] == "user")
        ideal = record["ideal"]
    except (json.JSONDecodeError, KeyError, TypeError, StopIteration) as err:
        raise DataError(
            f"{where}: not an evals MedMCQA record "
            '(expected {"input": [..., {"role": "user", ...}], "ideal": ...})'
        ) from err
    subject_line, _, question = user.partition("\n\n")
    if not subject_line.startswith(SUBJECT_PREFIX) or not question.strip():
        raise DataError(
            f"{where}: user message must start with {SUBJECT_PREFIX!r}<subject>, "
            "a blank line, then the question"
        )
    return Example(
        id=example_id,
        instruction=question.strip(),
        input="",
        output=str(ideal).strip(),
        meta={"subject": subject_line.removeprefix(SUBJECT_PREFIX).strip()},
    )
