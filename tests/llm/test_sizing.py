"""Charge-aware max_tokens: the sizes a stage's answers call for, the re-asks of an answer cut
below the cap (over real HTTP against the embedded endpoint), and resuming without
paying twice: the store key does not depend on the max_tokens sent, and stores written
before it was chosen are still read."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path

import orjson

from llm import (
    AnswerCache,
    Completion,
    Endpoint,
    EndpointChain,
    Generation,
    Limits,
    LLMClient,
    MemoryCache,
    RequestTally,
)
from llm.client import estimate_tokens, request_key
from llm.sizing import FLOOR, LEARN_FROM, MARGIN, WINDOW, CompletionSizes
from pipeline.script import script_messages
from service.store import Store, StoreCache
from tests.conftest import FAST_SIM, sim_stats, simulator
from tests.llm.fakes import FakeTransport, chat

CAP = 4096
MESSAGES = script_messages("A beekeeper with forty hives.", None)
UNDER_TPM = Limits(tpm=100_000_000, max_concurrency=8)  # a TPM limit: max_tokens is sized


def sizes_of(answers: list[int], prompt: int = 1000) -> CompletionSizes:
    sizes = CompletionSizes()
    for completion in answers:
        sizes.observe(prompt, completion)
    return sizes


def test_the_cap_is_sent_until_enough_answers_are_seen() -> None:
    sizes = sizes_of([500] * (LEARN_FROM - 1))
    assert sizes.max_tokens(CAP) == CAP
    sizes.observe(1000, 500)
    assert sizes.max_tokens(CAP) == math.ceil(500 * MARGIN)


def test_a_long_tail_is_left_to_re_asks_when_that_is_charged_less() -> None:
    # 5% of the answers are six times longer: charging every request for them costs more
    # than re-asking those at the cap
    sizes = sizes_of([500] * 95 + [3000] * 5)
    assert sizes.max_tokens(CAP) == math.ceil(500 * MARGIN)
    # ... but not below the 90th percentile: at most ~10% of the answers are paid twice
    assert sizes_of([500] * 85 + [3000] * 15).max_tokens(CAP) == math.ceil(3000 * MARGIN)
    # and where a re-ask costs more (a longer prompt, a higher cap), the tail is paid for
    assert sizes_of([500] * 95 + [3000] * 5, prompt=60000).max_tokens(CAP) == math.ceil(3000 * MARGIN)


def test_never_above_the_cap_nor_below_the_floor() -> None:
    sizes = sizes_of([12] * LEARN_FROM)
    assert sizes.max_tokens(CAP) == FLOOR and sizes.max_tokens(100) == 100
    assert sizes_of([3000] * LEARN_FROM).max_tokens(2048) == 2048


def test_the_choice_follows_the_recent_answers() -> None:
    sizes = sizes_of([2000] * LEARN_FROM + [400] * WINDOW)
    assert sizes.max_tokens(CAP) == math.ceil(400 * MARGIN)


def test_max_tokens_is_sized_only_under_a_tpm_limit_and_reserved_as_sent() -> None:
    generation = Generation(temperature=0.7, max_tokens=CAP, seed=1)
    sized = {}
    for name, limits in (("tpm", UNDER_TPM), ("none", Limits(max_concurrency=8))):
        endpoint = Endpoint(model="m", name=name, base_url="http://127.0.0.1:9/v1", limits=limits)
        client = LLMClient(endpoint)
        for _ in range(LEARN_FROM):
            client.sizes["script"].observe(1000, 10)
        sized[name] = client.prepare(MESSAGES, generation, "script")
        assert client.prepare(MESSAGES, generation, "script", max_tokens=777).max_tokens == 777
        assert client.prepare(MESSAGES, generation, "trajectory").max_tokens == CAP  # per stage
    assert sized["tpm"].max_tokens == FLOOR and sized["none"].max_tokens == CAP
    assert sized["tpm"].estimate == estimate_tokens(MESSAGES) + FLOOR  # the TPM reservation
    assert sized["tpm"].key == sized["none"].key  # the same question, whatever its max_tokens


def ask(
    url: str,
    cache: AnswerCache,
    learned: int | None,
    seeds: tuple[int, ...] = (1,),
    legacy_keys: bool = False,
    longest: int | None = None,
) -> tuple[RequestTally, list[Completion]]:
    """Script requests through a fresh client; `learned`: answers of that many tokens seen
    before (the last of them `longest` tokens long, when given)."""
    tally = RequestTally()
    endpoint = Endpoint(model="sim-gpt-4o", name="sim", base_url=url, limits=UNDER_TPM)
    client = LLMClient(endpoint, cache=cache, sinks=[tally], legacy_keys=legacy_keys)
    for i in range(LEARN_FROM if learned else 0):
        client.sizes["script"].observe(1000, longest if longest and i == LEARN_FROM - 1 else learned or 0)
    chain = EndpointChain([client])

    async def go() -> list[Completion]:
        try:
            return [
                await chain.complete(MESSAGES, temperature=0.7, max_tokens=CAP, seed=seed, stage="script")
                for seed in seeds
            ]
        finally:
            await client.aclose()

    return tally, asyncio.run(go())


def test_a_re_ask_goes_just_above_the_longest_answer_seen_then_to_the_cap() -> None:
    sizes = sizes_of([500] * 99 + [2000])
    assert sizes.reask_max_tokens(CAP) == math.ceil(2000 * MARGIN)
    assert sizes.reask_max_tokens(1500) == 1500 and sizes_of([10] * 50).reask_max_tokens(CAP) == FLOOR
    assert CompletionSizes().reask_max_tokens(CAP) == CAP  # nothing learned: the cap
    # the first ask is chosen knowing the re-ask costs prompt + 2100, not prompt + the cap:
    # at the 90th percentile (525) the one answer in a hundred longer costs 21 per answer
    assert sizes.max_tokens(CAP) == math.ceil(500 * MARGIN)
    assert sizes_of([500] * 99 + [2000], prompt=60000).max_tokens(CAP) == math.ceil(500 * MARGIN)


def test_an_answer_cut_twice_is_asked_with_more_room_then_at_the_cap() -> None:
    cache = MemoryCache()
    room = math.ceil(286 * MARGIN)  # just above the longest answer seen, above the floor
    with simulator(FAST_SIM) as url:
        tally, [first] = ask(url, cache, learned=10, longest=286)  # a script is longer than both
    assert tally.outcomes == {"cut_below_cap": 2, "ok": 1} and first.answers == 3
    sent = sorted((a.finish_reason, a.max_tokens) for a in cache._answers.values())
    assert sent == [("length", FLOOR), ("length", room), ("stop", CAP)]
    assert first.finish_reason == "stop" and orjson.loads(first.content)


def test_an_answer_cut_below_the_cap_is_asked_again_at_the_cap_and_a_resume_pays_nothing() -> None:
    cache = MemoryCache()
    with simulator(FAST_SIM) as url:
        tally, [first] = ask(url, cache, learned=10)  # sized to the floor: the script is cut
        answered = sim_stats(url)["answered"]
        # resumed: nothing learned yet, so the cap would be sent; both answers are replayed
        _, [again] = ask(url, cache, learned=None)
        after = sim_stats(url)
    assert tally.outcomes == {"cut_below_cap": 1, "ok": 1}
    assert first.finish_reason == "stop" and orjson.loads(first.content) and first.answers == 2
    rows = [(key, a.finish_reason, a.max_tokens, a.max_tokens_cap) for key, a in cache._answers.items()]
    assert sorted((reason, sent, cap) for _, reason, sent, cap in rows) == [
        ("length", FLOOR, CAP),
        ("stop", CAP, CAP),
    ]
    assert {key for key, *_ in rows} == set(answered)  # the key: the question, not its max_tokens
    prompt = first.usage.prompt // 2
    assert tally.charged == (prompt + FLOOR) + (prompt + CAP)  # what the TPM limit counted
    assert after["requests"] == len(answered) == 2 and after["answered"] == answered
    assert again.cached and (again.content, again.usage, again.cost_usd) == (
        first.content,
        first.usage,
        first.cost_usd,
    )


def test_a_store_keyed_before_max_tokens_left_the_key_is_still_replayed(tmp_path: Path) -> None:
    db = tmp_path / "db"
    with simulator(FAST_SIM) as url:
        store = Store(db)
        ask(url, StoreCache(store), learned=None)
        store.close()
        with sqlite3.connect(db) as conn:  # make it an old store: keyed by the body sent at the cap
            body = {
                "model": "sim-gpt-4o",
                "messages": MESSAGES,
                "temperature": 0.7,
                "max_tokens": CAP,
                "response_format": {"type": "json_object"},
                "seed": 1,
            }
            conn.execute("UPDATE responses SET key = ?", (request_key(body),))
            conn.execute("DELETE FROM meta WHERE key = 'key_scheme'")
        before = sim_stats(url)["requests"]
        store = Store(db)
        _, [old] = ask(url, StoreCache(store), learned=None, legacy_keys=store.legacy_keys)
        store.close()
        assert sim_stats(url)["requests"] == before and old.cached
    new = Store(tmp_path / "new")
    assert new.legacy_keys is False
    new.close()


def test_a_request_prepared_before_the_sizes_were_learned_is_sized_when_it_leaves() -> None:
    # the whole workload prepared at once (the throughput bench does that): every request was
    # made at the cap before any answer was seen, and is sized again once it holds a slot
    transport = FakeTransport([chat(content='{"a": 1}')] * 3)
    endpoint = Endpoint(model="m", name="e", base_url="http://127.0.0.1:9/v1", limits=UNDER_TPM, stream=False)
    client = LLMClient(endpoint, transport=transport)
    generation = Generation(temperature=0.7, max_tokens=CAP, seed=1, json_mode=True)
    early = client.prepare(MESSAGES, generation, "script")
    reask = client.prepare(MESSAGES, generation, "script", max_tokens=CAP)
    for _ in range(LEARN_FROM):
        client.sizes["script"].observe(1000, 10)

    async def go() -> list[int]:
        sent = [(await client.send(request, "script")).max_tokens for request in (early, reask)]
        await client.aclose()
        return sent

    assert early.max_tokens == CAP and asyncio.run(go()) == [FLOOR, CAP]
    assert [body["max_tokens"] for body in transport.bodies()] == [FLOOR, CAP]  # a re-ask keeps its own
