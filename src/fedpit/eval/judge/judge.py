"""The paper's pairwise judge: candidate vs reference on four criteria, in both orders.

A judge model scores answer A and answer B to a question on helpfulness, relevance,
correctness and coherence (1–5 each) and replies with a JSON object. Each comparison is
judged twice, the candidate first as A and then as B, because judges favour a position.

The verdict of a comparison: in each order the candidate's total minus the reference's
total gives a preference (candidate, reference or neither). When the two orders contradict
each other (one prefers the candidate, the other the reference) the verdict is a *tie*:
the judge's preference followed the position, not the answer. Otherwise the sign of the
averaged difference decides (win / tie / lose). WT = (win + tie) / judged comparisons.

Before WT is trusted, two sanity checks run and are printed: position consistency (the
fraction of comparisons where both orders prefer the same answer) and how often the judge
prefers the real reference over a deliberately wrong answer (another question's reference,
or the reference with its words reversed). Below 90% on the latter the judge is not
trusted: the status says so and WT is ``None``, never a number.

The judge model is injected as a :data:`JudgeBackend` (chat messages → reply text); see
:mod:`fedpit.eval.judge.backends` for the real ones.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

JudgeBackend = Callable[[list[dict[str, str]]], str]
"""Chat messages (``{"role", "content"}`` dicts) → the judge's reply text."""

CRITERIA = ("helpfulness", "relevance", "correctness", "coherence")
MIN_SCORE, MAX_SCORE = 1, 5
SANITY_THRESHOLD = 0.90
STATUS_OK = "ok"
STATUS_FAILED = "unavailable: judge failed sanity check"
WIN, TIE, LOSE, UNPARSEABLE = "win", "tie", "lose", "unparseable"

SYSTEM_PROMPT = "You are a careful, impartial expert judge of answers to questions."

_SIDE = "{" + ", ".join(f'"{c}": <1-5>' for c in CRITERIA) + "}"
JSON_FORMAT = f'{{"A": {_SIDE}, "B": {_SIDE}}}'

USER_PROMPT = """Compare two answers to the question below. Score each answer from 1 (worst)
to 5 (best) on four criteria:
- helpfulness: does it give the asker what they need?
- relevance: does it address this question and stay on it?
- correctness: is it factually accurate?
- coherence: is it clear, well organised and readable?
Judge the content only: neither the order of the answers nor their length matters.

[Question]
{question}

[Answer A]
{answer_a}

[Answer B]
{answer_b}

Reply with only this JSON object, with integer scores, and nothing else:
{json_format}"""

RETRY_PROMPT = (
    "Your reply could not be read. Reply with only the JSON object "
    '{"A": {...}, "B": {...}} holding the four integer scores (1-5) for each answer.'
)


@dataclass(frozen=True)
class PairScores:
    """One judge reply: the criterion scores of answer A and answer B."""

    a: dict[str, float]
    b: dict[str, float]

    @property
    def total_a(self) -> float:
        """Sum of A's criterion scores."""
        return sum(self.a.values())

    @property
    def total_b(self) -> float:
        """Sum of B's criterion scores."""
        return sum(self.b.values())


@dataclass(frozen=True)
class Comparison:
    """Candidate vs reference for one question, judged in both orders.

    Attributes:
        verdict: ``win``, ``tie``, ``lose`` (for the candidate) or ``unparseable``.
        diffs: Candidate total minus reference total, candidate as A then as B (empty
            when unparseable).
    """

    verdict: str
    diffs: tuple[float, ...] = ()

    @property
    def consistent(self) -> bool:
        """Whether both orders prefer the same answer (or both see a tie)."""
        return _sign(self.diffs[0]) == _sign(self.diffs[1])


@dataclass(frozen=True)
class JudgeResult:
    """Win / tie / lose of candidates against references, with the sanity checks."""

    comparisons: list[Comparison]
    sanity: list[Comparison]
    backend: str = "custom"
    model: str | None = None
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        """Count the verdicts once."""
        counts = {v: 0 for v in (WIN, TIE, LOSE, UNPARSEABLE)}
        for c in self.comparisons:
            counts[c.verdict] += 1
        object.__setattr__(self, "counts", counts)

    @property
    def judged(self) -> int:
        """Comparisons with a verdict (unparseable ones excluded)."""
        return self.counts[WIN] + self.counts[TIE] + self.counts[LOSE]

    def rate(self, verdict: str) -> float | None:
        """Fraction of judged comparisons with ``verdict`` (None when nothing was judged)."""
        return self.counts[verdict] / self.judged if self.judged else None

    @property
    def position_consistency(self) -> float | None:
        """Fraction of judged comparisons where both orders prefer the same answer."""
        done = [c for c in self.comparisons if c.verdict != UNPARSEABLE]
        return sum(c.consistent for c in done) / len(done) if done else None

    @property
    def prefers_reference_over_wrong(self) -> float | None:
        """Fraction of sanity pairs where the real reference beats the wrong answer."""
        done = [c for c in self.sanity if c.verdict != UNPARSEABLE]
        return sum(c.verdict == WIN for c in done) / len(done) if done else None

    @property
    def status(self) -> str:
        """``ok`` only when the judge passed the wrong-answer sanity check."""
        passed = self.prefers_reference_over_wrong
        return STATUS_OK if passed is not None and passed >= SANITY_THRESHOLD else STATUS_FAILED

    @property
    def wt(self) -> float | None:
        """WT = win + tie rate; None when the judge failed its sanity check."""
        if self.status != STATUS_OK or not self.judged:
            return None
        return (self.counts[WIN] + self.counts[TIE]) / self.judged

    def to_dict(self) -> dict[str, object]:
        """The ``judge`` object of an eval result file (win/tie/lose are counts)."""
        return {
            "backend": self.backend,
            "model": self.model,
            "n": len(self.comparisons),
            "judged": self.judged,
            "win": self.counts[WIN],
            "tie": self.counts[TIE],
            "lose": self.counts[LOSE],
            "win_rate": self.rate(WIN),
            "tie_rate": self.rate(TIE),
            "lose_rate": self.rate(LOSE),
            "wt": self.wt,
            "unparseable": self.counts[UNPARSEABLE],
            "sanity": {
                "position_consistency": self.position_consistency,
                "prefers_reference_over_wrong": self.prefers_reference_over_wrong,
                "n": len(self.sanity),
            },
            "status": self.status,
        }


def judge_messages(question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """The chat messages asking the judge to score answer A and answer B."""
    user = USER_PROMPT.format(
        question=question, answer_a=answer_a, answer_b=answer_b, json_format=JSON_FORMAT
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_scores(text: str) -> PairScores | None:
    """Read the first valid ``{"A": {...}, "B": {...}}`` object in ``text``, or None.

    Prose and code fences around the object are ignored. Keys are case-insensitive
    (``"a"`` and ``"Answer A"`` also work); every criterion must be present with a number
    from 1 to 5; extra keys are ignored.
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            obj = None
        scores = _scores_from(obj)
        if scores is not None:
            return scores
        start = text.find("{", start + 1)
    return None


def _scores_from(obj: object) -> PairScores | None:
    if not isinstance(obj, dict):
        return None
    sides: dict[str, dict[str, float]] = {}
    for key, value in obj.items():
        side = str(key).strip().lower().removeprefix("answer").strip()
        if side in ("a", "b") and isinstance(value, dict):
            criteria = _criteria_from(value)
            if criteria is None:
                return None
            sides[side] = criteria
    if set(sides) != {"a", "b"}:
        return None
    return PairScores(a=sides["a"], b=sides["b"])


def _criteria_from(obj: dict[object, object]) -> dict[str, float] | None:
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    out: dict[str, float] = {}
    for name in CRITERIA:
        value = lowered.get(name)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not MIN_SCORE <= value <= MAX_SCORE:
            return None
        out[name] = float(value)
    return out


def ask(
    backend: JudgeBackend, question: str, a: str, b: str, retries: int = 2
) -> PairScores | None:
    """Judge one ordered pair; an unreadable reply is retried up to ``retries`` times."""
    messages = judge_messages(question, a, b)
    for attempt in range(retries + 1):
        reply = backend(messages)
        scores = parse_scores(reply)
        if scores is not None:
            return scores
        if attempt < retries:
            messages = [
                *messages,
                {"role": "assistant", "content": reply},
                {"role": "user", "content": RETRY_PROMPT},
            ]
    return None


def compare(
    backend: JudgeBackend, question: str, candidate: str, reference: str, retries: int = 2
) -> Comparison:
    """Judge ``candidate`` against ``reference`` in both orders and decide the verdict."""
    first = ask(backend, question, candidate, reference, retries)
    if first is None:
        return Comparison(UNPARSEABLE)
    second = ask(backend, question, reference, candidate, retries)
    if second is None:
        return Comparison(UNPARSEABLE)
    diffs = (first.total_a - first.total_b, second.total_b - second.total_a)
    signs = {_sign(d) for d in diffs}
    if signs >= {1, -1}:  # the orders contradict each other: the position decided
        return Comparison(TIE, diffs)
    total = _sign(sum(diffs))
    return Comparison(WIN if total > 0 else LOSE if total < 0 else TIE, diffs)


def wrong_answers(references: Sequence[str]) -> list[str]:
    """A deliberately wrong answer per reference, for the sanity check.

    Even positions take the next question's reference (fluent but off-topic); odd
    positions, and any reference equal to its neighbour, get the reference's words in
    reverse order (on-topic words, no meaning).
    """
    out = []
    n = len(references)
    for i, ref in enumerate(references):
        other = references[(i + 1) % n]
        if i % 2 == 0 and other.strip() != ref.strip():
            out.append(other)
            continue
        garbled = " ".join(reversed(ref.split()))
        out.append(garbled if garbled != ref.strip() else "I do not know anything about this.")
    return out


def judge_pairs(
    questions: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str],
    backend: JudgeBackend,
    retries: int = 2,
    sanity_n: int = 20,
    seed: int = 0,
    echo: Callable[[str], None] | None = print,
) -> JudgeResult:
    """Judge each candidate against its reference, plus the sanity checks.

    Args:
        questions: The prompts, one per comparison.
        candidates: The evaluated model's answers.
        references: The reference answers.
        backend: The judge model.
        retries: Extra attempts for an unreadable reply before the comparison counts as
            unparseable (and is excluded from win / tie / lose).
        sanity_n: How many (seeded, random) questions check reference vs wrong answer.
        seed: Seed of that choice.
        echo: Where the sanity-check line is printed (None: silent).

    Returns:
        The verdicts; the backend's ``name`` and ``model`` attributes label it if present.
    """
    if not len(questions) == len(candidates) == len(references):
        raise ValueError(
            f"{len(questions)} questions, {len(candidates)} candidates, "
            f"{len(references)} references: they must be parallel"
        )
    wrong = wrong_answers(references)
    picked = sorted(
        random.Random(seed).sample(range(len(questions)), min(sanity_n, len(questions)))
    )
    sanity = [compare(backend, questions[i], references[i], wrong[i], retries) for i in picked]
    comparisons = [
        compare(backend, q, c, r, retries)
        for q, c, r in zip(questions, candidates, references, strict=True)
    ]
    result = JudgeResult(
        comparisons,
        sanity,
        backend=str(getattr(backend, "name", "custom")),
        model=getattr(backend, "model", None),
    )
    if echo is not None:
        echo(describe(result))
    return result


def describe(result: JudgeResult) -> str:
    """One human line: the sanity checks, then WT or why it is unavailable."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    head = (
        f"judge {result.backend}{'/' + result.model if result.model else ''}: "
        f"sanity: prefers reference over a wrong answer {pct(result.prefers_reference_over_wrong)} "
        f"(needs ≥ {100 * SANITY_THRESHOLD:.0f}%, n={len(result.sanity)}), "
        f"position consistency {pct(result.position_consistency)}"
    )
    c = result.counts
    tally = f"win {c[WIN]} / tie {c[TIE]} / lose {c[LOSE]}, unparseable {c[UNPARSEABLE]}"
    if result.wt is None:
        return f"{head}; {tally}; WT {result.status}"
    return f"{head}; {tally}; WT {100 * result.wt:.1f}%"


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)
