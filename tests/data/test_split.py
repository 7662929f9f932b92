import pytest

from fedpit.data import Example, make_split, normalize_question, split
from fedpit.errors import ConfigError, DataError


def test_normalize_question():
    assert normalize_question("  What is (are)  Acne ?\n") == "what is (are) acne"
    assert normalize_question("WHAT IS\tACNE.") == normalize_question("what is acne")
    assert normalize_question("Is it (B)?") == "is it (b)"


def medquad_like():
    """Each question is asked by two sources, written slightly differently."""
    examples = []
    for i in range(40):
        for source, text in (
            ("GHR", f"What is (are) Disease {i} ?"),
            ("GARD", f"what is (are)  disease {i}?"),
        ):
            examples.append(
                Example(
                    id=f"{source}-{i}",
                    instruction=text,
                    input="",
                    output=f"{source} answer {i}",
                    meta={"source": source},
                )
            )
    for i in range(10):
        examples.append(
            Example(
                id=f"CDC-{i}",
                instruction=f"CDC only {i}",
                input="",
                output="A",
                meta={"source": "CDC"},
            )
        )
    return examples


def split_ids(result):
    return [[e.id for e in c] for c in result.clients], [e.id for e in result.test]


def test_test_questions_never_appear_in_training():
    examples = medquad_like()
    result = make_split(
        examples,
        method="natural",
        num_clients=3,
        examples_per_client=1000,
        test_size=12,
        seed=3,
        column="source",
    )
    test_questions = {normalize_question(e.instruction) for e in result.test}
    train = [e for client in result.clients for e in client]
    assert not test_questions & {normalize_question(e.instruction) for e in train}
    # The duplicates really were removed, not just the test rows themselves.
    assert len(train) == len(examples) - 12 - sum(
        normalize_question(e.instruction) in test_questions
        for e in examples
        if e not in result.test
    )
    assert len(train) < len(examples) - 12
    assert not {e.id for e in train} & {e.id for e in result.test}


def test_natural_names_and_per_client_sample():
    result = make_split(
        medquad_like(),
        method="natural",
        num_clients=3,
        examples_per_client=5,
        test_size=4,
        seed=0,
        column="source",
    )
    assert sorted(result.client_names[:2]) == ["GARD", "GHR"]
    assert result.client_names[2] == "CDC"
    for name, client in zip(result.client_names, result.clients, strict=True):
        assert len(client) == 5
        assert {e.meta["source"] for e in client} == {name}
    assert len(result.test) == 4


def test_client_keeps_all_when_it_has_fewer():
    result = make_split(
        medquad_like(),
        method="natural",
        num_clients=3,
        examples_per_client=30,
        test_size=0,
        seed=0,
        column="source",
    )
    assert [len(c) for c in result.clients] == [30, 30, 10]


def test_iid_names_and_determinism():
    kwargs = dict(method="iid", num_clients=4, examples_per_client=6, test_size=8)
    first = make_split(medquad_like(), seed=5, **kwargs)
    assert first.client_names == ["client-0", "client-1", "client-2", "client-3"]
    assert split_ids(first) == split_ids(make_split(medquad_like(), seed=5, **kwargs))
    other = make_split(medquad_like(), seed=6, **kwargs)
    assert split_ids(first)[1] != split_ids(other)[1]
    assert split_ids(first)[0] != split_ids(other)[0]


def test_empty_client_is_named(monkeypatch):
    examples = medquad_like()
    monkeypatch.setattr(split, "partition", lambda pool, *a, **k: [pool[:3], []])
    with pytest.raises(DataError, match="client 'client-1' got no training examples"):
        make_split(
            examples, method="iid", num_clients=2, examples_per_client=2, test_size=1, seed=0
        )


def test_size_errors():
    examples = medquad_like()
    with pytest.raises(ConfigError, match=r"data\.test-size = 90 is invalid; allowed: 0 to 89"):
        make_split(
            examples, method="iid", num_clients=2, examples_per_client=2, test_size=90, seed=0
        )
    with pytest.raises(ConfigError, match=r"data\.examples-per-client = 0"):
        make_split(
            examples, method="iid", num_clients=2, examples_per_client=0, test_size=1, seed=0
        )


def shared_answers():
    """Two sources whose questions differ but reuse a few boilerplate answers."""
    examples = []
    for source in ("GHR", "GARD"):
        for i in range(30):
            answer = f"Boilerplate {i % 3}." if i % 2 else f"{source} own answer {i}"
            examples.append(
                Example(f"{source}-{i}", f"{source} question {i}?", "", answer, {"source": source})
            )
    return examples


def two_sources(**kw):
    """A natural split of :func:`shared_answers` over its two sources."""
    args = {"method": "natural", "num_clients": 2, "column": "source", **kw}
    return make_split(shared_answers(), **args)


def test_training_never_repeats_a_test_answer_and_the_removal_is_counted():
    examples = shared_answers()
    result = two_sources(examples_per_client=1000, test_size=10, seed=1)
    norm = split.normalize_answer
    test_answers = {norm(e.output) for e in result.test}
    train = [e for c in result.clients for e in c]
    assert not test_answers & {norm(e.output) for e in train}
    # Case, spacing and a trailing full stop do not make an answer different.
    assert norm("Boilerplate  1.") == norm("boilerplate 1")
    expected = sum(
        norm(e.output) in test_answers for e in examples if e.id not in {t.id for t in result.test}
    )
    assert result.removed == {"same_question": 0, "same_answer": expected}
    assert expected > 0 and len(train) == len(examples) - 10 - expected


def test_non_members_come_from_each_clients_partition_and_repeat_no_training_text():
    result = two_sources(examples_per_client=4, test_size=4, seed=2)
    norm = split.normalize_answer
    train = [e for c in result.clients for e in c]
    answers = {norm(e.output) for e in train}
    questions = {normalize_question(e.instruction) for e in train}
    held_out = {e.id for e in result.test}
    assert len(result.non_members) == 2
    for name, members, outside in zip(
        result.client_names, result.clients, result.non_members, strict=True
    ):
        # As many as the members, from the same source (the members' distribution).
        assert len(outside) == len(members) == 4
        assert {e.meta["source"] for e in outside} == {name}
        for e in outside:
            assert norm(e.output) not in answers
            assert normalize_question(e.instruction) not in questions
            assert e.id not in held_out
    # More non-members than members when asked; the training split does not change.
    more = two_sources(examples_per_client=4, test_size=4, seed=2, non_members_per_client=6)
    assert [len(o) for o in more.non_members] == [6, 6]
    assert split_ids(more) == split_ids(result)
