"""Limits against the real embedded endpoint over HTTP: learned from headers, cut by 429s and
grown back, and held near the knee of an endpoint that queues instead of refusing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from metrics.stats import RunStats
from service.config import Endpoint, Limits
from service.store import Store
from tests.conftest import FAST_SIM, sim_stats, simulator
from workers.concurrency import INITIAL_LIMIT
from workers.llm import Generation, LLMClient

MESSAGES = [{"role": "user", "content": "<persona>\nA lighthouse keeper on a windy cape.\n</persona>"}]


def run_requests(url: str, db: Path, count: int, limits: Limits) -> tuple[RunStats, LLMClient, list[float]]:
    """`count` distinct requests at once through one client; the concurrency limit after each."""
    stats = RunStats(target=1)
    store = Store(db)
    endpoint = Endpoint(model="sim-gpt-4o", name="sim", base_url=url, timeout_s=10.0, limits=limits)
    client = LLMClient(endpoint, url, store, stats)
    seen: list[float] = []

    async def one(seed: int) -> Any:
        request = client.prepare(MESSAGES, Generation(temperature=0.7, max_tokens=500, seed=seed))
        completion = await client.send(request, "script")
        seen.append(client.limiter.concurrency.limit)
        return completion

    async def go() -> None:
        try:
            await asyncio.gather(*(one(seed) for seed in range(count)))
        finally:
            await client.aclose()

    try:
        asyncio.run(go())
    finally:
        store.close()
    return stats, client, seen


def test_limits_are_learned_from_the_headers(tmp_path: Path) -> None:
    with simulator({**FAST_SIM, "rpm": 6000, "tpm": 2_000_000}) as url:
        stats, client, _ = run_requests(url, tmp_path / "db", 3, Limits(max_concurrency=4))
    assert stats.requests == {"ok": 3}
    state = client.limiter.state()
    assert (state.rpm, state.tpm) == (6000, 2_000_000)


def test_429s_cut_the_concurrency_and_successes_grow_it_back(tmp_path: Path) -> None:
    # The endpoint's bucket holds 5 requests (6000/min enforced per 50 ms): the client's first
    # requests, sent together before any limit is known, are partly refused. Once it has
    # learned the limit it paces itself and the limit grows again with the successes.
    with simulator({**FAST_SIM, "rpm": 6000, "burst_s": 0.05}) as url:
        stats, _, seen = run_requests(url, tmp_path / "db", 300, Limits(max_concurrency=64))
        by_status = sim_stats(url)["by_status"]
    assert stats.requests["ok"] == 300
    assert stats.requests["429"] >= 1 and by_status["429"] == stats.requests["429"]
    lowest = min(seen)
    assert lowest < INITIAL_LIMIT
    assert max(seen[seen.index(lowest) :]) > lowest


def test_concurrency_settles_near_the_knee_of_a_queueing_endpoint(tmp_path: Path) -> None:
    # At most 6 requests are served at once and the rest queue (no 429 ever): at the ceiling
    # of 64 a request would wait for ten others. The controller sees latency climb and stays
    # near the knee; the bound is loose so that a slow or loaded machine cannot fail it.
    knee = 6
    with simulator({**FAST_SIM, "latency_median_s": 0.05, "latency_sigma": 0.2, "max_num_seqs": knee}) as url:
        stats, client, seen = run_requests(url, tmp_path / "db", 1500, Limits(max_concurrency=64))
        by_status = sim_stats(url)["by_status"]
    assert stats.requests == {"ok": 1500} and "429" not in by_status
    settled = seen[len(seen) // 2 :]
    assert max(settled) <= 4 * knee
    assert client.limiter.concurrency.limit < 64 / 2
