"""The LLM layer against the real embedded endpoint over HTTP: faults are classified and
survived, refusals fail fast with one line, stored answers are never requested again, and
the store's request key is the hash of the question the endpoint received (its body without
max_tokens and the stream keys). The tests of the HTTP exchange run streamed (the default)
and not."""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from metrics.stats import RunStats
from service.config import Breaker, Endpoint
from service.store import Store
from tests.conftest import FAST_SIM, sim_stats, simulator
from workers.breaker import EndpointDown
from workers.fallback import EndpointChain
from workers.llm import FatalEndpointError, LLMClient, RequestFailed
from workers.script import script_messages

streamed_or_not = pytest.mark.parametrize("stream", (True, False), ids=("stream", "whole"))

MESSAGES = [{"role": "user", "content": "<persona>\nA beekeeper with forty hives.\n</persona>"}]


def ask(
    url: str,
    db: Path,
    seeds: tuple[int, ...] = (7,),
    messages: list[dict[str, str]] = MESSAGES,
    **endpoint: Any,
) -> tuple[RunStats, list[Any]]:
    """Send one request per seed (the same seed twice is the same request), concurrently."""
    stats, results, _ = ask_chain([(url, endpoint)], db, seeds, messages)
    return stats, results


def ask_chain(
    endpoints: list[tuple[str, dict[str, Any]]],
    db: Path,
    seeds: tuple[int, ...],
    messages: list[dict[str, str]] = MESSAGES,
) -> tuple[RunStats, list[Any], list[LLMClient]]:
    """The same through a chain of endpoints (primary first); also returns the clients."""
    stats = RunStats(target=1)
    store = Store(db)
    clients = [
        LLMClient(
            Endpoint(**{"model": "sim-gpt-4o", "name": f"sim{i}", "base_url": url, "timeout_s": 5.0, **spec}),
            url,
            store,
            stats,
        )
        for i, (url, spec) in enumerate(endpoints)
    ]
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

    try:
        return stats, asyncio.run(go()), clients
    finally:
        store.close()


@pytest.mark.parametrize(
    ("fault", "outcome", "extra"),
    [
        ("p_5xx", "5xx", {}),
        ("p_reset", "reset", {}),
        ("p_truncated_body", "bad_response", {}),
        ("p_hang", "timeout", {"hang_s": 3.0}),
        ("p_empty_choices", "bad_response", {}),
    ],
)
@streamed_or_not
def test_each_fault_is_retried_and_classified(
    tmp_path: Path, fault: str, outcome: str, extra: dict, stream: bool
) -> None:
    with simulator({**FAST_SIM, "faults": {fault: 1.0, **extra}}) as url:
        stats, [result] = ask(url, tmp_path / "db", max_retries=2, timeout_s=0.5, stream=stream)
    assert isinstance(result, RequestFailed)
    assert "gave up after 3 tries" in str(result)
    assert stats.requests == {outcome: 3}


@streamed_or_not
def test_429_waits_for_retry_after_then_succeeds(tmp_path: Path, stream: bool) -> None:
    # The endpoint's bucket holds 2 requests (rpm 600 enforced per 0.2 s) and the client's
    # first requests go out together before any x-ratelimit header has been read, so some
    # are refused however fast the machine is; they wait for retry-after and succeed.
    with simulator({**FAST_SIM, "rpm": 600, "burst_s": 0.2}) as url:
        stats, results = ask(url, tmp_path / "db", seeds=tuple(range(40)), stream=stream)
        by_status = sim_stats(url)["by_status"]
    assert not [r for r in results if isinstance(r, Exception)]
    assert stats.requests["ok"] == 40
    assert stats.requests["429"] >= 1 and by_status["429"] == stats.requests["429"]


@streamed_or_not
def test_refusals_fail_fast_with_one_line(tmp_path: Path, stream: bool) -> None:
    with simulator({**FAST_SIM, "api_key": "right"}) as url:
        stats, [unauthorized] = ask(url, tmp_path / "a", max_retries=5, stream=stream)
    with simulator({**FAST_SIM, "denied_models": ["sim-gpt-4o"]}) as url:
        _, [forbidden] = ask(url, tmp_path / "c", stream=stream)
    with simulator(FAST_SIM) as url:
        _, [unknown] = ask(url, tmp_path / "b", model="no-such-model", stream=stream)
    assert isinstance(unauthorized, FatalEndpointError)
    assert str(unauthorized).startswith("endpoint sim0 (sim-gpt-4o) answered 401")
    assert "\n" not in str(unauthorized)
    assert stats.requests == {"401": 1}
    assert isinstance(forbidden, FatalEndpointError) and "answered 403" in str(forbidden)
    assert isinstance(unknown, FatalEndpointError) and "answered 404" in str(unknown)


def test_a_400_fails_its_request_and_repeated_400s_trip_the_breaker(tmp_path: Path) -> None:
    with simulator({**FAST_SIM, "refused_phrases": ["beekeeper"]}) as url:
        stats, results = ask(url, tmp_path / "a", seeds=(1, 2), breaker=Breaker(bad_requests=3))
        assert [type(r) for r in results] == [RequestFailed, RequestFailed]  # not retried, not fatal
        assert "answered 400" in str(results[0]) and "violating our usage policy" in str(results[0])
        assert stats.requests == {"400": 2}
        _, results = ask(url, tmp_path / "b", seeds=(1, 2, 3, 4), breaker=Breaker(bad_requests=3))
    assert sum(isinstance(r, EndpointDown) for r in results) == 2  # the 3rd and 4th in a row
    assert "3 requests in a row refused as invalid" in str(
        next(r for r in results if isinstance(r, EndpointDown))
    )


def test_an_endpoint_failing_every_try_trips_the_breaker(tmp_path: Path) -> None:
    with simulator({**FAST_SIM, "faults": {"p_5xx": 1.0}}) as url:
        stats, [result] = ask(url, tmp_path / "a", breaker=Breaker(failures=4, outage_s=0.0))
    assert isinstance(result, EndpointDown)
    assert "4 tries failed in a row" in str(result) and "\n" not in str(result)
    assert stats.requests == {"5xx": 4}


def test_length_cut_answers_go_back_to_the_stage(tmp_path: Path) -> None:
    with simulator({**FAST_SIM, "faults": {"p_length": 1.0}}) as url:
        stats, [result] = ask(url, tmp_path / "a")
    assert result.finish_reason == "length" and stats.requests == {"ok": 1}  # not retried here


@streamed_or_not
def test_stored_answers_are_replayed_not_resent(tmp_path: Path, stream: bool) -> None:
    with simulator(FAST_SIM) as url:
        stats, first = ask(url, tmp_path / "db", stream=stream)
        _, again = ask(url, tmp_path / "db", seeds=(7, 7), stream=stream)
        results = first + again
        answered = sim_stats(url)["answered"]
    assert [r.cached for r in results] == [False, True, True]
    assert len({r.content for r in results}) == 1
    assert stats.requests == {"ok": 1}
    with sqlite3.connect(tmp_path / "db") as db:
        stored = {key for (key,) in db.execute("SELECT key FROM responses")}
    assert stored == set(answered)  # the key is the hash of the body as sent


def test_fallback_answers_when_the_primary_fails_everything(tmp_path: Path) -> None:
    with simulator({**FAST_SIM, "faults": {"p_5xx": 1.0}}) as broken, simulator(FAST_SIM) as healthy:
        stats, results, _ = ask_chain(
            [(broken, {"max_retries": 1}), (healthy, {})], tmp_path / "db", seeds=(1, 2, 3)
        )
        broken_before = sim_stats(broken)["requests"]
        # resumed: the fallback's stored answers are replayed without asking the primary again
        _, again, _ = ask_chain([(broken, {"max_retries": 1}), (healthy, {})], tmp_path / "db", (1, 2, 3))
        broken_after = sim_stats(broken)["requests"]
        answered = sim_stats(healthy)["answered"]
    assert [r.endpoint for r in results] == ["sim1"] * 3
    assert stats.requests == {"5xx": 6, "ok": 3}
    assert [r.cached for r in again] == [True] * 3 and broken_after == broken_before
    with sqlite3.connect(tmp_path / "db") as db:
        stored = {key for (key,) in db.execute("SELECT key FROM responses")}
    assert stored == set(answered)  # keyed by the body the fallback received


@streamed_or_not
def test_deepseek_keepalive_blank_lines_before_the_body_are_parsed(tmp_path: Path, stream: bool) -> None:
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
        stats, results = ask(url, tmp_path / "db", (1, 2), messages, timeout_s=0.2, stream=stream)
    assert raw.startswith(b"\n\n") and orjson.loads(raw)["choices"]
    assert stats.requests == {"ok": 2}
    assert all(r.finish_reason == "stop" and orjson.loads(r.content) for r in results)
    assert all(r.usage.prompt > 0 and r.usage.completion > 0 for r in results)
    # the second to finish finds the shared system prompt cached: DeepSeek's prompt_cache_hit_tokens
    assert sorted(r.usage.cached_prompt > 0 for r in results) == [False, True]
