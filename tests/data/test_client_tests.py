from fedpit.data.example import Example
from fedpit.data.split import make_split, normalize_question


def pool():
    return [
        Example(
            f"e{i}", f"What is condition {i % 40} ?", "", f"Answer {i}.", {"source": f"S{i % 2}"}
        )
        for i in range(200)
    ]


def test_client_tests_are_private_held_out_and_leave_training_unchanged():
    without = make_split(
        pool(),
        method="natural",
        num_clients=2,
        examples_per_client=8,
        test_size=10,
        seed=3,
        column="source",
    )
    with_tests = make_split(
        pool(),
        method="natural",
        num_clients=2,
        examples_per_client=8,
        test_size=10,
        seed=3,
        column="source",
        client_test_size=5,
    )
    assert with_tests.clients == without.clients and with_tests.test == without.test
    assert without.client_tests == [[], []]
    for train, held in zip(with_tests.clients, with_tests.client_tests, strict=True):
        assert len(held) == 5
        assert {e.meta["source"] for e in held} == {train[0].meta["source"]}
        trained = {normalize_question(e.instruction) for e in train}
        assert not trained & {normalize_question(e.instruction) for e in held}
        assert not {e.id for e in train} & {e.id for e in held}
