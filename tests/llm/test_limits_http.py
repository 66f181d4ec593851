"""Limits against the real embedded endpoint over HTTP: learned from headers, rate-limit 429s
paced by the learned buckets, and a concurrency that comes down towards the knee of an
endpoint that queues instead of refusing."""

from __future__ import annotations

import asyncio
from typing import Any

from llm import Endpoint, Generation, Limits, LLMClient, MemoryCache, RequestTally
from llm.concurrency import INITIAL_LIMIT
from tests.conftest import FAST_SIM, sim_stats, simulator

MESSAGES = [{"role": "user", "content": "<persona>\nA lighthouse keeper on a windy cape.\n</persona>"}]


def run_requests(url: str, count: int, limits: Limits) -> tuple[RequestTally, LLMClient, list[float]]:
    """`count` distinct requests at once through one client; the concurrency limit after each."""
    tally = RequestTally()
    endpoint = Endpoint(model="sim-gpt-4o", name="sim", base_url=url, timeout_s=10.0, limits=limits)
    client = LLMClient(endpoint, cache=MemoryCache(), sinks=[tally])
    seen: list[float] = []

    async def one(seed: int) -> Any:
        request = client.prepare(MESSAGES, Generation(temperature=0.7, max_tokens=500, seed=seed), "script")
        completion = await client.send(request, "script")
        seen.append(client.limiter.concurrency.limit)
        return completion

    async def go() -> None:
        try:
            await asyncio.gather(*(one(seed) for seed in range(count)))
        finally:
            await client.aclose()

    asyncio.run(go())
    return tally, client, seen


def test_limits_are_learned_from_the_headers() -> None:
    with simulator({**FAST_SIM, "rpm": 6000, "tpm": 2_000_000}) as url:
        tally, client, _ = run_requests(url, 3, Limits(max_concurrency=4))
    assert tally.outcomes == {"ok": 3}
    state = client.limiter.state()
    assert (state.rpm, state.tpm) == (6000, 2_000_000)


def test_rate_limit_429s_are_paced_by_the_learned_buckets_not_by_cutting_the_concurrency() -> None:
    # The endpoint's bucket holds 5 requests (6000/min enforced per 50 ms): the client's first
    # requests, sent together before any limit is known, are partly refused. Their headers
    # carry the limits: from then on the buckets pace the requests, and the concurrency limit,
    # which a rate limit says nothing about, is not cut.
    with simulator({**FAST_SIM, "rpm": 6000, "burst_s": 0.05}) as url:
        tally, client, seen = run_requests(url, 300, Limits(max_concurrency=64))
        by_status = sim_stats(url)["by_status"]
    assert tally.outcomes["ok"] == 300
    assert tally.outcomes["429"] >= 1 and by_status["429"] == tally.outcomes["429"]
    assert client.limiter.state().rpm == 6000
    assert min(seen) >= INITIAL_LIMIT
    assert client.limiter.concurrency.cap is None  # a rate limit is not a concurrency cap


def test_a_queueing_endpoint_stops_the_ramp_far_below_the_ceiling() -> None:
    # At most 6 requests are served at once and the rest queue (no 429 ever). The controller
    # doubles from its first limit, sees the doubling bought nothing but waiting, and holds
    # instead of running on to the ceiling of 256. The bound is loose so that a slow or loaded
    # machine cannot fail it: finding the knee itself is tests/llm/test_concurrency.py's part,
    # against models whose timing no load on this machine can disturb.
    knee = 6
    with simulator({**FAST_SIM, "latency_median_s": 0.05, "latency_sigma": 0.2, "max_num_seqs": knee}) as url:
        tally, client, seen = run_requests(url, 1000, Limits(max_concurrency=256))
        by_status = sim_stats(url)["by_status"]
    assert tally.outcomes == {"ok": 1000} and "429" not in by_status
    assert client.limiter.concurrency.mode != "ramp"
    assert max(seen[len(seen) // 2 :]) <= 2 * INITIAL_LIMIT
