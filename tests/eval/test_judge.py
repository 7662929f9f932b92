"""The pairwise judge: parsing, verdicts, retries, sanity gating, and the real backends."""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fedpit.errors import ConfigError, FedPITError
from fedpit.eval.judge.backends import (
    add_judge_arguments,
    chat_completions_url,
    hf_backend,
    make_backend,
    openai_chat_backend,
)
from fedpit.eval.judge.judge import (
    CRITERIA,
    RETRY_PROMPT,
    STATUS_FAILED,
    STATUS_OK,
    compare,
    judge_messages,
    judge_pairs,
    parse_scores,
    wrong_answers,
)
from tests.helpers import tiny_runtime


def reply(a: list[int], b: list[int]) -> str:
    """A judge reply giving A and B these four criterion scores."""
    return json.dumps(
        {"A": dict(zip(CRITERIA, a, strict=True)), "B": dict(zip(CRITERIA, b, strict=True))}
    )


def unpack(messages: list[dict[str, str]]) -> tuple[str, str, str]:
    """(question, answer A, answer B) from the judge prompt."""
    found = re.search(
        r"\[Question\]\n(.*)\n\n\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*)\n\nReply with",
        messages[1]["content"],
        re.S,
    )
    assert found is not None
    return found.group(1), found.group(2), found.group(3)


# --- parsing ---------------------------------------------------------------------------


def test_parse_valid_reply() -> None:
    scores = parse_scores(reply([5, 4, 3, 2], [1, 1, 2, 1]))
    assert scores is not None
    assert scores.a == {"helpfulness": 5, "relevance": 4, "correctness": 3, "coherence": 2}
    assert (scores.total_a, scores.total_b) == (14, 5)


def test_parse_fenced_and_prose_wrapped() -> None:
    body = reply([2, 2, 2, 2], [3, 3, 3, 3])
    fenced = f"Here is my verdict:\n```json\n{body}\n```\nAnswer B is better."
    template_echo = 'Format {"A": {"helpfulness": <1-5>}} ... then ' + body
    for text in (fenced, template_echo):
        scores = parse_scores(text)
        assert scores is not None
        assert (scores.total_a, scores.total_b) == (8, 12)


def test_parse_tolerates_key_case_and_numeric_strings() -> None:
    text = json.dumps(
        {
            "Answer A": {"Helpfulness": "4", "Relevance": 4, "Correctness": 4.0, "Coherence": 4},
            "b": {"helpfulness": 1, "relevance": 2, "correctness": 3, "coherence": 4},
            "explanation": "A is better",
        }
    )
    scores = parse_scores(text)
    assert scores is not None
    assert (scores.total_a, scores.total_b) == (16, 10)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "A is clearly better.",
        '{"A": {"helpfulness": 5, "relevance": 5, "correctness": 5}, '
        '"B": {"helpfulness": 1, "relevance": 1, "correctness": 1, "coherence": 1}}',
        reply([6, 5, 5, 5], [1, 1, 1, 1]),
        reply([0, 5, 5, 5], [1, 1, 1, 1]),
        '{"A": {"helpfulness": true, "relevance": 5, "correctness": 5, "coherence": 5}, '
        '"B": {"helpfulness": 1, "relevance": 1, "correctness": 1, "coherence": 1}}',
        json.dumps({"A": dict.fromkeys(CRITERIA, 3)}),
        '{"A": {"helpfulness": 5, ',
    ],
    ids=["empty", "prose", "missing-field", "above-5", "below-1", "bool", "no-B", "truncated"],
)
def test_parse_unparseable(text: str) -> None:
    assert parse_scores(text) is None


# --- verdicts --------------------------------------------------------------------------

GOOD = {"q0": "c0 great", "q1": "r1 great", "q3": "r3 great"}


class ScriptedJudge:
    """Scores answers from a table keyed by (question, answer); unknown answers score 1.

    ``q3`` is judged with a position bias when both answers are known (A always wins);
    ``q4`` always gets an unreadable reply.
    """

    def __init__(self, table: dict[tuple[str, str], int]) -> None:
        self.table = table
        self.calls: list[list[dict[str, str]]] = []

    def __call__(self, messages: list[dict[str, str]]) -> str:
        self.calls.append(messages)
        q, a, b = unpack(messages)
        if q == "q4":
            return "I cannot decide."
        sa, sb = self.table.get((q, a), 1), self.table.get((q, b), 1)
        if q == "q3" and (q, a) in self.table and (q, b) in self.table:
            sa, sb = 5, 1
        return f"Scores:\n```json\n{reply([sa] * 4, [sb] * 4)}\n```"


QUESTIONS = ["q0", "q1", "q2", "q3", "q4"]
CANDIDATES = ["c0", "c1", "c2", "c3", "c4"]
REFERENCES = ["r0 answer", "r1 answer", "r2 answer", "r3 answer", "r4 answer"]
TABLE = {
    ("q0", "c0"): 5,  # candidate better: win
    ("q0", "r0 answer"): 3,
    ("q1", "c1"): 2,  # candidate worse: lose
    ("q1", "r1 answer"): 4,
    ("q2", "c2"): 4,  # equal: tie
    ("q2", "r2 answer"): 4,
    ("q3", "c3"): 5,  # position-biased judge: orders disagree -> tie
    ("q3", "r3 answer"): 2,
}


def test_judge_pairs_counts_and_wt() -> None:
    judge = ScriptedJudge(TABLE)
    result = judge_pairs(QUESTIONS, CANDIDATES, REFERENCES, judge, retries=2, echo=None)
    assert [c.verdict for c in result.comparisons] == ["win", "lose", "tie", "tie", "unparseable"]
    assert result.comparisons[0].diffs == (8, 8)
    assert result.comparisons[3].diffs == (16, -16)
    assert result.counts == {"win": 1, "tie": 2, "lose": 1, "unparseable": 1}
    # Every reference beats its wrong answer (unknown answers score 1), q4 is excluded.
    assert [c.verdict for c in result.sanity] == ["win", "win", "win", "win", "unparseable"]
    assert result.prefers_reference_over_wrong == 1.0
    assert result.position_consistency == 3 / 4  # q3 flips with the order
    assert result.status == STATUS_OK
    assert result.wt == 3 / 4
    out = result.to_dict()
    assert out["win"] == 1 and out["tie"] == 2 and out["lose"] == 1 and out["unparseable"] == 1
    assert out["win_rate"] == 1 / 4 and out["tie_rate"] == 2 / 4 and out["lose_rate"] == 1 / 4
    assert out["sanity"]["position_consistency"] == 0.75
    assert out["status"] == "ok" and out["wt"] == 0.75
    assert out["backend"] == "custom" and out["model"] is None
    # 4 parseable questions × 2 orders × (sanity + main) = 16; q4: order 1 tried 3 times
    # (then order 2 is skipped) in sanity and in main = 6.
    assert len(judge.calls) == 16 + 6


def test_unparseable_is_retried_with_a_correction() -> None:
    replies = iter(["no idea", "still thinking", reply([4] * 4, [2] * 4), reply([2] * 4, [4] * 4)])
    seen: list[list[dict[str, str]]] = []

    def judge(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        return next(replies)

    comparison = compare(judge, "q", "cand", "ref", retries=2)
    assert comparison.verdict == "win" and comparison.diffs == (8, 8)
    assert len(seen) == 4
    roles = ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["role"] for m in seen[2]] == roles
    assert seen[1][2]["content"] == "no idea" and seen[1][3]["content"] == RETRY_PROMPT
    assert len(seen[3]) == 2  # the second order starts afresh


def test_retries_exhausted_counts_unparseable() -> None:
    calls = []

    def judge(messages: list[dict[str, str]]) -> str:
        calls.append(messages)
        return "A" if len(calls) < 3 else reply([5] * 4, [1] * 4)

    assert compare(judge, "q", "c", "r", retries=1).verdict == "unparseable"
    assert len(calls) == 2


def test_verdict_uses_average_when_orders_agree() -> None:
    # Order 1: candidate +2; order 2: a tie. No contradiction: the average decides -> win.
    replies = iter([reply([5, 5, 4, 4], [4, 4, 4, 4]), reply([3] * 4, [3] * 4)])
    comparison = compare(lambda m: next(replies), "q", "c", "r")
    assert comparison.verdict == "win" and comparison.diffs == (2, 0)
    assert not comparison.consistent


def test_wrong_answers() -> None:
    refs = ["alpha beta", "gamma delta", "same", "same"]
    assert wrong_answers(refs) == [
        "gamma delta",  # next question's reference
        "delta gamma",  # odd position: words reversed
        "I do not know anything about this.",  # neighbour identical and reversal a no-op
        "I do not know anything about this.",
    ]


# --- sanity gating ---------------------------------------------------------------------


def test_judge_always_preferring_a_is_not_trusted() -> None:
    lines: list[str] = []
    result = judge_pairs(
        QUESTIONS, CANDIDATES, REFERENCES, lambda m: reply([5] * 4, [1] * 4), echo=lines.append
    )
    assert result.position_consistency == 0.0
    assert result.counts == {"win": 0, "tie": 5, "lose": 0, "unparseable": 0}
    assert result.prefers_reference_over_wrong == 0.0
    assert result.status == STATUS_FAILED
    assert result.wt is None and result.to_dict()["wt"] is None
    assert len(lines) == 1 and "unavailable: judge failed sanity check" in lines[0]
    assert "position consistency 0%" in lines[0]


def test_random_judge_fails_the_wrong_answer_check() -> None:
    rng = random.Random(0)

    def judge(messages: list[dict[str, str]]) -> str:
        return reply([rng.randint(1, 5) for _ in CRITERIA], [rng.randint(1, 5) for _ in CRITERIA])

    n = 30
    result = judge_pairs(
        [f"question {i}" for i in range(n)],
        [f"candidate {i}" for i in range(n)],
        [f"reference answer {i}" for i in range(n)],
        judge,
        sanity_n=n,
        echo=None,
    )
    assert len(result.sanity) == n
    assert result.prefers_reference_over_wrong is not None
    assert result.prefers_reference_over_wrong < 0.9
    assert result.status == STATUS_FAILED and result.wt is None
    assert result.counts["win"] + result.counts["tie"] + result.counts["lose"] == n


def test_sanity_subsample_is_seeded() -> None:
    judge = ScriptedJudge(TABLE)
    one = judge_pairs(QUESTIONS, CANDIDATES, REFERENCES, judge, sanity_n=2, seed=3, echo=None)
    two = judge_pairs(QUESTIONS, CANDIDATES, REFERENCES, judge, sanity_n=2, seed=3, echo=None)
    assert len(one.sanity) == 2 and one.sanity == two.sanity


def test_mismatched_lengths_fail() -> None:
    with pytest.raises(ValueError, match="parallel"):
        judge_pairs(["q"], ["a", "b"], ["r"], lambda m: "", echo=None)


# --- the OpenAI-compatible client against a real local HTTP server ---------------------


class ChatServer:
    """A chat-completions server on 127.0.0.1 that records requests."""

    def __init__(self, status: int = 200, content: str = "hello") -> None:
        self.requests: list[dict[str, object]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                if status != 200:
                    payload = b'{"error": "model exploded"}'
                else:
                    message = {"role": "assistant", "content": content}
                    payload = json.dumps({"choices": [{"index": 0, "message": message}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def no_judge_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("FEDPIT_JUDGE_URL", "FEDPIT_JUDGE_MODEL", "FEDPIT_JUDGE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    yield


def test_openai_backend_speaks_chat_completions(no_judge_env: None) -> None:
    with ChatServer(content=reply([5] * 4, [2] * 4)) as server:
        backend = openai_chat_backend(server.url + "/v1", "judge-7b", api_key="sk-test")
        messages = judge_messages("What is asthma?", "A disease.", "A fruit.")
        text = backend(messages)
    assert parse_scores(text) is not None
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert isinstance(body, dict)
    assert body["model"] == "judge-7b" and body["messages"] == messages
    assert body["temperature"] == 0


def test_openai_backend_from_environment_drives_the_judge(
    no_judge_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ChatServer(content=reply([4] * 4, [4] * 4)) as server:
        monkeypatch.setenv("FEDPIT_JUDGE_URL", server.url)
        monkeypatch.setenv("FEDPIT_JUDGE_MODEL", "llama")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback")
        args = argparse.Namespace(
            judge="openai", judge_url=None, judge_model=None, judge_api_key=None
        )
        backend = make_backend(args)
        assert backend is not None
        result = judge_pairs(["q"], ["c"], ["r"], backend, echo=None)
    assert result.counts["tie"] == 1
    assert result.to_dict()["backend"] == "openai" and result.to_dict()["model"] == "llama"
    assert all(r["auth"] == "Bearer sk-fallback" for r in server.requests)
    assert len(server.requests) == 4  # sanity pair and main pair, both orders


def test_openai_backend_http_error(no_judge_env: None) -> None:
    with ChatServer(status=500) as server:
        backend = openai_chat_backend(server.url, "m")
        with pytest.raises(FedPITError, match=r"HTTP 500: .*model exploded"):
            backend([{"role": "user", "content": "hi"}])
    assert server.requests[0]["auth"] is None  # no key, no header


def test_openai_backend_unreachable(no_judge_env: None) -> None:
    with ChatServer() as server:
        url = server.url
    with pytest.raises(FedPITError, match="cannot reach the judge endpoint"):
        openai_chat_backend(url, "m", timeout=5)([{"role": "user", "content": "hi"}])


def test_openai_backend_needs_url_and_model(no_judge_env: None) -> None:
    with pytest.raises(ConfigError, match="FEDPIT_JUDGE_URL"):
        openai_chat_backend(model="m")
    with pytest.raises(ConfigError, match="FEDPIT_JUDGE_MODEL"):
        openai_chat_backend("http://127.0.0.1:1")


def test_chat_completions_url() -> None:
    full = "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1") == full
    assert chat_completions_url("http://h:1/v1/") == full
    assert chat_completions_url(full) == full


def test_judge_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_judge_arguments(parser)
    args = parser.parse_args([])
    assert args.judge == "none" and args.judge_retries == 2
    assert make_backend(args) is None
    with pytest.raises(ConfigError, match="--judge-model"):
        make_backend(parser.parse_args(["--judge", "hf"]))


# --- the local Hugging Face judge ------------------------------------------------------


def test_hf_backend_returns_text(tiny_model_dir: Path) -> None:
    backend = hf_backend(tiny_runtime(tiny_model_dir), max_new_tokens=8)
    text = backend(judge_messages("What is asthma?", "A disease.", "A fruit."))
    assert isinstance(text, str)
    assert backend.name == "hf" and backend.model == str(tiny_model_dir)
