"""The LLM client over real HTTP against the embedded endpoint (the fault handling itself
is tested on a fake transport, test_client.py): rate limits are waited out, cached answers
are keyed by the hash of the question the endpoint received (its body without max_tokens
and the stream keys) and never sent again, DeepSeek's keep-alive lines keep a request
alive, and embeddings come back in order. Each runs streamed (the default) and not."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import orjson
import pytest

from llm import (
    Endpoint,
    EndpointChain,
    EndpointDown,
    FatalEndpointError,
    LLMClient,
    MemoryCache,
    RequestFailed,
    RequestTally,
)
from pipeline.script import script_messages
from tests.conftest import FAST_SIM, sim_stats, simulator

streamed_or_not = pytest.mark.parametrize("stream", (True, False), ids=("stream", "whole"))

MESSAGES = [{"role": "user", "content": "<persona>\nA beekeeper with forty hives.\n</persona>"}]


def ask(
    url: str,
    cache: MemoryCache,
    seeds: tuple[int, ...] = (7,),
    messages: list[dict[str, str]] = MESSAGES,
    **endpoint: Any,
) -> tuple[RequestTally, list[Any]]:
    """Send one request per seed (the same seed twice is the same request), concurrently."""
    tally = RequestTally()
    spec = {"model": "sim-gpt-4o", "name": "sim", "base_url": url, "timeout_s": 5.0, **endpoint}
    clients = [LLMClient(Endpoint(**spec), cache=cache, sinks=[tally])]
    chain = EndpointChain(clients)

    async def one(seed: int) -> Any:
        try:
            return await chain.complete(messages, temperature=0.7, max_tokens=2000, seed=seed, stage="script")
        except (RequestFailed, FatalEndpointError, EndpointDown) as exc:
            return exc

    async def go() -> list[Any]:
        try:
            return list(await asyncio.gather(*(one(seed) for seed in seeds)))
        finally:
            for client in clients:
                await client.aclose()

    return tally, asyncio.run(go())


@streamed_or_not
def test_429_waits_for_retry_after_then_succeeds(stream: bool) -> None:
    # The endpoint's bucket holds 2 requests (rpm 600 enforced per 0.2 s) and the client's
    # first requests go out together before any x-ratelimit header has been read, so some
    # are refused however fast the machine is; they wait for retry-after and succeed.
    with simulator({**FAST_SIM, "rpm": 600, "burst_s": 0.2}) as url:
        tally, results = ask(url, MemoryCache(), seeds=tuple(range(40)), stream=stream)
        by_status = sim_stats(url)["by_status"]
    assert not [r for r in results if isinstance(r, Exception)]
    assert tally.outcomes["ok"] == 40
    assert tally.outcomes["429"] >= 1 and by_status["429"] == tally.outcomes["429"]


@streamed_or_not
def test_cached_answers_are_replayed_not_resent(stream: bool) -> None:
    cache = MemoryCache()
    with simulator(FAST_SIM) as url:
        tally, first = ask(url, cache, stream=stream)
        _, again = ask(url, cache, seeds=(7, 7), stream=stream)
        results = first + again
        answered = sim_stats(url)["answered"]
    assert [r.cached for r in results] == [False, True, True]
    assert len({r.content for r in results}) == 1
    assert tally.outcomes == {"ok": 1}
    assert set(cache._answers) == set(answered)  # the key is the hash of the body the endpoint got


@streamed_or_not
def test_deepseek_keepalive_blank_lines_before_the_body_are_parsed(stream: bool) -> None:
    sim = {**FAST_SIM, "latency_median_s": 0.3, "latency_sigma": 0.0, "keepalive_s": 0.05}
    with simulator({**sim, "usage_style": "deepseek"}) as url:
        raw = urllib.request.urlopen(
            urllib.request.Request(
                f"{url}/chat/completions",
                data=orjson.dumps({"model": "sim-gpt-4o", "messages": MESSAGES, "seed": 1}),
                headers={"Content-Type": "application/json"},
            ),
            timeout=10,
        ).read()
        # a read timeout shorter than the wait: the blank lines keep the request alive
        messages = script_messages("A beekeeper", None)
        tally, results = ask(url, MemoryCache(), (1, 2), messages, timeout_s=0.2, stream=stream)
    assert raw.startswith(b"\n\n") and orjson.loads(raw)["choices"]
    assert tally.outcomes == {"ok": 2}
    assert all(r.finish_reason == "stop" and orjson.loads(r.content) for r in results)
    assert all(r.usage.prompt > 0 and r.usage.completion > 0 for r in results)
    # the second to finish finds the shared system prompt cached: DeepSeek's prompt_cache_hit_tokens
    assert sorted(r.usage.cached_prompt > 0 for r in results) == [False, True]


def test_embeddings_from_the_embedded_endpoint_come_back_in_order() -> None:
    texts = ["A night-shift nurse.", "A beekeeper.", "A night-shift nurse."]
    tally = RequestTally()
    with simulator(FAST_SIM) as url:
        endpoint = Endpoint(model="text-embedding-3-small", name="sim", base_url=url)
        client = LLMClient(endpoint, sinks=[tally])

        async def go() -> list[list[float]]:
            try:
                return await client.embed(texts, "dedup")
            finally:
                await client.aclose()

        vectors = asyncio.run(go())
    assert len(vectors) == 3 and len(vectors[0]) == 1536 and vectors[0] == vectors[2] != vectors[1]
    assert tally.outcomes == {"ok": 1} and tally.usage.prompt > 0
