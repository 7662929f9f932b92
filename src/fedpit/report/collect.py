"""Load finished (or partial) run directories into typed records; the report reads only these.

A run directory holds ``config.toml``, ``summary.json``, ``metrics.jsonl``,
``eval/<target>__<testset>.json`` and ``attack/<target>.json`` (schemas in the evaluation
contract). Everything but ``config.toml`` may be missing: a record then has fewer numbers.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fedpit.config.schema import BETA_METHODS, RunConfig
from fedpit.errors import DataError, FedPITError
from fedpit.eval.attack.targets import run_config
from fedpit.runs.rundir import RunDir, read_jsonl

GLOBAL, BASE = "global", "base"
METHOD_ORDER = (
    "centralized",
    "local",
    "local-selfgen",
    "fedavg",
    "fedavg-damped",
    "fedprox",
    "fedadam",
    "fedmit",
    "fedpit-v1",
    "fedpit",
)
"""Row order of the paper's Table 2: no privacy, no federation, baselines, then FedPIT."""


CONTROL = "fedavg-damped"
"""The control of every β method: FedPIT's upload with W_s replaced by W_g (no synthetic data)."""


def group_name(method: str, arm: str = "", beta: float | None = None) -> str:
    """A report row's name: ``method``, ``method[arm]``, with `` β=x`` where β matters."""
    name = f"{method}[{arm}]" if arm else method
    return name if beta is None else f"{name} β={beta:g}"


@dataclass(frozen=True)
class RoundMetrics:
    """One line of ``metrics.jsonl``: the global model's test loss and summed client counters."""

    round: int
    test_loss: float | None
    counters: dict[str, float]


@dataclass(frozen=True)
class JudgeResult:
    """The pairwise judge's verdict on one evaluation."""

    wt: float | None
    status: str  # "ok" or "unavailable: ..."

    @property
    def ok(self) -> bool:
        """Whether WT may be reported as a number."""
        return self.status == "ok" and self.wt is not None


@dataclass(frozen=True)
class EvalResult:
    """``eval/<target>__<testset>.json``."""

    target: str
    round: int | None
    test_set: str
    n: int
    rouge_l: float | None
    token_f1: float | None
    semantic: float | None
    judge: JudgeResult | None


@dataclass(frozen=True)
class AttackResult:
    """``attack/<target>.json`` (the numbers the report uses)."""

    target: str
    round: int | None
    n_members: int
    n_non_members: int
    mia_auc: float | None
    mia_auc_calibrated: float | None
    extraction_members: float | None  # ROUGE-L of greedy continuations vs true responses
    extraction_non_members: float | None
    loss_members: float | None
    loss_non_members: float | None
    canary_logprob: float | None
    canary_exposure: float | None
    synthetic_span_share: float | None = None  # synthetic texts sharing ≥ 8 tokens verbatim
    synthetic_canary_touches: float | None = None  # synthetic texts naming a canary

    @property
    def loss_gap(self) -> float | None:
        """Non-member minus member loss (nats/token): how much better members are fit."""
        if self.loss_members is None or self.loss_non_members is None:
            return None
        return self.loss_non_members - self.loss_members


@dataclass(frozen=True)
class RunRecord:
    """Everything the report knows about one run."""

    path: Path
    config: RunConfig
    summary: dict[str, Any] | None
    rounds: list[RoundMetrics]
    evals: list[EvalResult]
    attacks: list[AttackResult]

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.name

    @property
    def method(self) -> str:
        """The run's method."""
        return self.config.method

    @property
    def beta(self) -> float | None:
        """β for the methods that use it, else None."""
        return self.config.fed.beta if self.method in BETA_METHODS else None

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.config.seed

    @property
    def arm(self) -> str:
        """The study arm the run belongs to ("" outside a study)."""
        return self.config.arm

    @property
    def group(self) -> str:
        """The row a run belongs to: its method and arm, with β where β matters."""
        return group_name(self.method, self.arm, self.beta)

    @property
    def control_group(self) -> str | None:
        """The group of this run's no-synthetic-data control (:data:`CONTROL` at its β).

        ``None`` for a method without β, and for the control itself.
        """
        if self.beta is None or self.method == CONTROL:
            return None
        return group_name(CONTROL, beta=self.beta)

    @property
    def finished(self) -> bool:
        """Whether the run wrote its summary."""
        return self.summary is not None

    @property
    def final_round(self) -> int:
        """The last round (the summary's; centralised training has one)."""
        if self.summary and "rounds" in self.summary:
            return int(self.summary["rounds"])
        return self.config.fed.rounds

    @property
    def final_test_loss(self) -> float | None:
        """Test loss of the final global model (the last round in ``metrics.jsonl``)."""
        losses = [r for r in self.rounds if r.test_loss is not None]
        return losses[-1].test_loss if losses and self.finished else None

    def final_eval(self, test_set: str) -> EvalResult | None:
        """The final global model's evaluation on ``test_set``."""
        return _final([e for e in self.evals if e.test_set == test_set], self.final_round)

    def final_attack(self) -> AttackResult | None:
        """The attack on the final global model."""
        return _final(self.attacks, self.final_round)

    def base_attack(self) -> AttackResult | None:
        """The attack on the base model (the floor)."""
        return next((a for a in self.attacks if a.target == BASE), None)

    def round_attacks(self) -> list[AttackResult]:
        """Attacks on the global model of a given round, by round."""
        found = [a for a in self.attacks if a.round is not None and a.target != BASE]
        return sorted(found, key=lambda a: a.round or 0)


Result = TypeVar("Result", EvalResult, AttackResult)


def _final(results: list[Result], final_round: int) -> Result | None:
    """The final model's result.

    The ``global`` target, else ``round:<final>``, else the mean over ``client:ID``
    targets (a standalone baseline without a global model), else None.
    """
    for result in results:
        if result.target == GLOBAL:
            return result
    for result in results:
        if result.target == f"round:{final_round}":
            return result
    clients = [r for r in results if r.target.startswith("client:")]
    return mean_result(clients) if clients else None


CLIENTS_MEAN = "clients (mean)"


def mean_result(results: list[Result]) -> Result:
    """One result whose numbers are the means over ``results`` (same dataclass).

    Each ``float | None`` field is the mean of the values present (None when none is);
    a nested judge result is kept only when there is a single result; other fields are
    the first result's.
    """
    first = results[0]
    hints = typing.get_type_hints(type(first))  # resolved types, not annotation strings
    changes: dict[str, Any] = {"target": CLIENTS_MEAN}
    for field in dataclasses.fields(first):
        values = [getattr(r, field.name) for r in results]
        if hints[field.name] == float | None:
            present = [v for v in values if v is not None]
            changes[field.name] = statistics.fmean(present) if present else None
        elif field.name == "judge" and len(results) > 1:
            changes[field.name] = None
    return dataclasses.replace(first, **changes)


def sort_key(run: RunRecord) -> tuple[int, str, float, int, str]:
    """Table 2 order: method, then arm, then β, then seed."""
    order = METHOD_ORDER.index(run.method) if run.method in METHOD_ORDER else len(METHOD_ORDER)
    return (order, run.arm, run.beta if run.beta is not None else -1.0, run.seed, run.name)


def collect_runs(paths: list[Path]) -> list[RunRecord]:
    """Records of every run directory named, or found one level below a named sweep dir."""
    runs: list[RunRecord] = []
    for path in map(Path, paths):
        if (path / "config.toml").is_file():
            runs.append(load_run(path))
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if (p / "config.toml").is_file())
            if not found:
                raise FedPITError(f"{path}: neither a run directory nor a sweep of run directories")
            runs.extend(load_run(p) for p in found)
        else:
            raise FedPITError(f"{path} does not exist")
    return sorted(runs, key=sort_key)


def load_run(path: Path) -> RunRecord:
    """Load one run directory."""
    rd = RunDir(Path(path))
    summary = _json(rd.summary) if rd.summary.is_file() else None
    rounds = []
    if rd.metrics.is_file():
        for row in _jsonl(rd.metrics):
            counters = {k: float(v) for k, v in (row.get("clients") or {}).items()}
            rounds.append(RoundMetrics(int(row["round"]), _num(row.get("test_loss")), counters))
    evals = [_eval(p, _json(p)) for p in sorted((rd.root / "eval").glob("*.json"))]
    attacks = [_attack(_json(p)) for p in sorted((rd.root / "attack").glob("*.json"))]
    return RunRecord(rd.root, run_config(rd.root), summary, rounds, evals, attacks)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return read_jsonl(path)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON line: {err.msg}") from None


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _eval(path: Path, doc: dict[str, Any]) -> EvalResult:
    metrics = doc.get("metrics") or {}
    judge = doc.get("judge")
    return EvalResult(
        target=doc.get("target", path.stem.split("__")[0]),
        round=doc.get("round"),
        test_set=doc.get("test_set", path.stem.split("__")[-1]),
        n=int(doc.get("n", 0)),
        rouge_l=_num(metrics.get("rouge_l")),
        token_f1=_num(metrics.get("token_f1")),
        semantic=_num(metrics.get("semantic")),
        judge=None
        if judge is None
        else JudgeResult(_num(judge.get("wt")), judge.get("status", "")),
    )


def _attack(doc: dict[str, Any]) -> AttackResult:
    extraction = doc.get("extraction") or {}
    mia = doc.get("mia") or {}
    canaries = doc.get("canaries") or {}
    overlap = doc.get("synthetic_overlap") or {}
    return AttackResult(
        target=doc["target"],
        round=doc.get("round"),
        n_members=int(doc.get("n_members") or 0),
        n_non_members=int(doc.get("n_non_members") or 0),
        mia_auc=_num(mia.get("auc")),
        mia_auc_calibrated=_num(mia.get("auc_calibrated")),
        extraction_members=_num((extraction.get("members") or {}).get("rouge_l")),
        extraction_non_members=_num((extraction.get("non_members") or {}).get("rouge_l")),
        loss_members=_num(mia.get("loss_members")),
        loss_non_members=_num(mia.get("loss_non_members")),
        canary_logprob=_num(canaries.get("mean_logprob")),
        canary_exposure=_num(canaries.get("mean_exposure")),
        synthetic_span_share=_num(overlap.get("span_share")),
        synthetic_canary_touches=_num(overlap.get("canary_touches")),
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def by_group(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs grouped by row (method, with β where it matters), in Table 2 order."""
    groups: dict[str, list[RunRecord]] = {}
    for run in sorted(runs, key=sort_key):
        groups.setdefault(run.group, []).append(run)
    return groups
