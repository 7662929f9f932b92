"""Utility evaluation: answer a test set with one model of a run and score the answers.

Results go to ``RUN_DIR/eval/<target>__<testset>.json`` (the summary the report reads)
and ``.jsonl`` (one row per example: question, reference, answer, scores).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedpit import jsonio
from fedpit.data.example import Example
from fedpit.data.load import load_examples
from fedpit.data.prepare import run_data_for
from fedpit.data.sources import DATA_DIR_ENV, find_data_file
from fedpit.errors import DataError
from fedpit.eval.attack.targets import BASE, GLOBAL, Target, activate, run_config
from fedpit.eval.metrics import Embed, rouge_l, semantic_similarity, token_f1
from fedpit.lm.base_cache import base_generate
from fedpit.lm.batched_generation import make_generate_fn
from fedpit.lm.generation import GenerationSpec
from fedpit.lm.runtime import Runtime
from fedpit.runs.rundir import RunDir, write_atomic, write_json

HELDOUT = "heldout"
MEDINSTRUCT = "medinstruct"
MEDINSTRUCT_FILE = "medinstruct_test.jsonl"
METRICS = ("rouge_l", "token_f1", "semantic")
REPETITION_PENALTY = 1.2  # as SynGen decodes responses


def load_test_set(name: str, run_dir: Path) -> tuple[str, list[Example]]:
    """The examples of test set ``name`` and the label used in result file names.

    Args:
        name: ``heldout`` (the run's held-out split, recomputed from its configuration),
            ``medinstruct`` (the paper's medical test set, see :func:`find_medinstruct`),
            or the path of a JSON/JSONL/CSV file (labelled by its stem).
        run_dir: The run directory.

    Raises:
        DataError: If the test set cannot be found or read, or is empty.
        ConfigError: If ``run_dir`` is not a run directory (``heldout`` only).
    """
    if name == HELDOUT:
        cfg = run_config(run_dir)
        examples = list(run_data_for(cfg).split.test)
        if not examples:
            raise DataError(f"{run_dir} has no held-out test set (data.test-size = 0)")
        return HELDOUT, examples
    if name == MEDINSTRUCT:
        return MEDINSTRUCT, load_examples(find_medinstruct())
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(
            f"test set {name!r} is neither {HELDOUT!r}, {MEDINSTRUCT!r} nor an existing file"
        )
    return path.stem, load_examples(path)


def describe_test_set(name: str, run_dir: Path) -> str:
    """One sentence saying what test set ``name`` is (printed before evaluating)."""
    if name == HELDOUT:
        cfg = run_config(run_dir)
        data = run_data_for(cfg)
        return (
            f"the run's held-out split ({len(data.split.test)} examples of "
            f"{data.description}, questions deduplicated against training)"
        )
    if name == MEDINSTRUCT:
        return (
            f"MedInstruct test set from {find_medinstruct()}: the paper's medical test set, "
            "out of distribution for MedQuAD training (patient-style requests, not NIH Q&A)"
        )
    return f"examples from {Path(name).expanduser()}"


def find_medinstruct() -> Path:
    """Locate ``medinstruct_test.jsonl`` by the rules MedQuAD is found by.

    ``$FEDPIT_DATA_DIR`` when set (and only there), else ``../shared/data/`` beside the
    project root (the directory whose pyproject.toml names ``fedpit``, above this file
    or the working directory).
    """
    path = find_data_file(MEDINSTRUCT_FILE)
    if path is not None:
        return path
    raise DataError(
        f"test set 'medinstruct' needs {MEDINSTRUCT_FILE} in ../shared/data/ beside the "
        f"project or in ${DATA_DIR_ENV}"
    )


def question_text(example: Example) -> str:
    """The question a judge sees: the instruction, then the input if any."""
    return f"{example.instruction}\n\n{example.input}" if example.input else example.instruction


def subsample(examples: Sequence[Example], limit: int | None, seed: int) -> list[Example]:
    """``limit`` examples drawn without replacement (seeded), kept in their original order.

    ``None`` or 0, or a limit at least the number of examples, keeps them all.
    """
    if not limit or limit >= len(examples):
        return list(examples)
    if limit < 0:
        raise ValueError(f"limit = {limit}; expected ≥ 0")
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def target_round(run_dir: Path, target_name: str) -> int | None:
    """The federated round a target's model stems from.

    ``base`` is round 0 (the global model before training), ``round:N`` is N,
    ``global`` the run's last round; a client's own model has none.
    """
    if target_name == BASE:
        return 0
    if target_name.startswith("round:"):
        return int(target_name.removeprefix("round:"))
    if target_name == GLOBAL:
        summary = RunDir(Path(run_dir)).summary
        if summary.is_file():
            rounds = json.loads(summary.read_text()).get("rounds")
            if isinstance(rounds, int):
                return rounds
        return run_config(run_dir).fed.rounds
    return None


def score_answers(
    examples: Sequence[Example], answers: Sequence[str], embed: Embed
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Score each answer against its example's reference; rows and mean metrics."""
    if len(examples) != len(answers):
        raise ValueError(f"{len(examples)} examples but {len(answers)} answers")
    if not examples:
        raise DataError("no examples to evaluate")
    references = [ex.output for ex in examples]
    semantic = semantic_similarity(answers, references, embed)
    rows = [
        {
            "id": ex.id,
            "instruction": ex.instruction,
            "input": ex.input,
            "reference": ex.output,
            "answer": answer,
            "rouge_l": rouge_l(answer, ex.output),
            "token_f1": token_f1(answer, ex.output),
            "semantic": sim,
        }
        for ex, answer, sim in zip(examples, answers, semantic, strict=True)
    ]
    metrics = {name: float(np.mean([row[name] for row in rows])) for name in METRICS}
    return rows, metrics


def evaluate(
    rt: Runtime,
    target: Target,
    examples: Sequence[Example],
    max_new_tokens: int,
    batch_size: int,
    embed: Embed,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Answer every example with ``target`` (batched, greedy) and score the answers.

    Generation stops at the model's end-of-sequence (end-of-turn for chat models) or after
    ``max_new_tokens``; each row records whether the answer ``finished`` on its own.

    Returns:
        One row per example (id, instruction, input, reference, answer, finished and the
        three scores) and the mean of each score.
    """
    activate(rt, target)
    generate = make_generate_fn(rt.model, rt.tokenizer, batch_size=batch_size, progress=progress)
    if target.adapter_dir is None:  # the base model's answers do not depend on the run
        generate = base_generate(rt, generate)
    spec = GenerationSpec(max_new_tokens, repetition_penalty=REPETITION_PENALTY)
    generations = generate([rt.fmt.prompt(ex) for ex in examples], spec)
    rows, metrics = score_answers(examples, [g.text.strip() for g in generations], embed)
    for row, generation in zip(rows, generations, strict=True):
        row["finished"] = generation.finished
    return rows, metrics


def result_stem(target_name: str, test_label: str) -> str:
    """The file name (without suffix) of one evaluation's results (no ':' in names)."""
    return f"{target_name.replace(':', '-')}__{test_label}"


def write_eval(
    run_dir: Path,
    target_name: str,
    test_label: str,
    rows: Sequence[dict[str, Any]],
    metrics: dict[str, float],
    round: int | None,
    judge: dict[str, Any] | None = None,
) -> Path:
    """Write ``eval/<target>__<testset>.jsonl`` (rows) and ``.json`` (summary), atomically.

    Returns:
        The path of the summary ``.json``.
    """
    directory = Path(run_dir) / "eval"
    stem = result_stem(target_name, test_label)
    write_atomic(directory / f"{stem}.jsonl", "".join(jsonio.dumps(row) + "\n" for row in rows))
    summary = {
        "target": target_name,
        "round": round,
        "test_set": test_label,
        "n": len(rows),
        "metrics": {name: metrics[name] for name in METRICS},
        "judge": judge,
    }
    path = directory / f"{stem}.json"
    write_json(path, summary)
    return path
