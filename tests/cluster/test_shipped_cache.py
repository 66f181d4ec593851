"""A cluster worker's answer cache (`service/cluster/worker.py`, `ShippedCache`): the answers
stored for the samples it holds are replayed, each new answer goes to the next report with the
sample it was asked for, and a finished sample's answers leave the worker with it."""

from __future__ import annotations

import contextvars

from llm import Answer
from service.cluster.worker import ShippedCache
from service.store import working_on


def answer(content: str) -> Answer:
    return Answer(content, "stop", {"prompt_tokens": 3, "completion_tokens": 2}, "m", "gen")


def test_the_answers_stored_for_a_sample_are_replayed_and_leave_with_it() -> None:
    reported: list[tuple[str, Answer, str | None]] = []
    cache = ShippedCache(lambda key, got, sample: reported.append((key, got, sample)))
    cache.hold("s1", {"k1": answer("one"), "k2": answer("two")})
    cache.hold("s2", {"k3": answer("three")})
    assert cache.get("k1") == answer("one")
    assert cache.get("k3") == answer("three")
    assert cache.get("unknown") is None
    assert reported == []  # replayed answers are stored already: not reported again

    cache.release("s1")
    assert cache.get("k1") is None and cache.get("k2") is None
    assert cache.get("k3") == answer("three")  # another sample's stay
    cache.release("s1")  # twice: nothing held, nothing to drop


def test_a_new_answer_is_reported_with_the_sample_it_was_asked_for_and_dropped_with_it() -> None:
    reported: list[tuple[str, Answer, str | None]] = []
    cache = ShippedCache(lambda key, got, sample: reported.append((key, got, sample)))
    cache.hold("s1", {})
    cache.hold("s2", {})

    def working_on_sample(sample_id: str, key: str, content: str) -> None:
        working_on.set(sample_id)
        cache.put(key, answer(content))

    contextvars.copy_context().run(working_on_sample, "s1", "k1", "one")  # each sample its own task
    contextvars.copy_context().run(working_on_sample, "s2", "k2", "two")
    cache.put("k0", answer("persona"))  # asked for no sample
    assert reported == [
        ("k1", answer("one"), "s1"),
        ("k2", answer("two"), "s2"),
        ("k0", answer("persona"), None),
    ]
    assert cache.get("k1") == answer("one")  # a regenerated trajectory asks again: replayed

    cache.release("s1")
    assert cache.get("k1") is None
    assert cache.get("k2") == answer("two")
    assert cache.get("k0") == answer("persona")  # held by no sample: not dropped with one
