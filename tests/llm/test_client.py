"""The LLM client on an in-process fake transport: faults are classified and retried,
refusals fail fast with one line, the breaker trips, answers are cached under the hash of
the question and replayed without being sent, a chain falls back, the budget and a graceful
stop hold requests back, embeddings go through the same client, and every attempt reaches
the sinks as one event."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from llm import (
    Breaker,
    Budget,
    BudgetExhausted,
    Endpoint,
    EndpointChain,
    EndpointDown,
    FatalEndpointError,
    LLMClient,
    MemoryCache,
    Price,
    Reply,
    RequestEvent,
    RequestFailed,
    RequestTally,
    SendingStopped,
    TransportError,
)
from llm.client import request_key
from tests.llm.fakes import FakeTransport, chat, embeddings, error, streamed

MESSAGES = [{"role": "user", "content": "A beekeeper with forty hives."}]
PRICE = Price(input=2.5, output=10.0)


class Recorder:
    """A sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[RequestEvent] = []

    def __call__(self, event: RequestEvent) -> None:
        self.events.append(event)

    def outcomes(self) -> list[str]:
        return [event.outcome for event in self.events]


def client_for(
    transport: FakeTransport,
    cache: MemoryCache | None = None,
    sinks: Sequence[Any] = (),
    budget: Budget | None = None,
    name: str = "fake",
    **endpoint: Any,
) -> LLMClient:
    spec = {"model": "m", "name": name, "base_url": "http://fake/v1", "max_retries": 2, "price": PRICE}
    return LLMClient(
        Endpoint(**{**spec, **endpoint}), transport=transport, cache=cache, sinks=sinks, budget=budget
    )


def ask(chain: EndpointChain | LLMClient, seed: int = 7, json_mode: bool = True) -> Any:
    """One answer (or the exception the client raised), without real backoff sleeps."""
    if isinstance(chain, LLMClient):
        chain = EndpointChain([chain])

    async def go() -> Any:
        try:
            return await chain.complete(
                MESSAGES, temperature=0.7, max_tokens=2000, seed=seed, stage="script", json_mode=json_mode
            )
        except Exception as exc:
            return exc

    return asyncio.run(go())


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llm.client.BACKOFF_BASE_S", 0.0)


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (error(503, "overloaded"), "5xx"),
        (TransportError("reset", "ConnectionResetError: reset by peer"), "reset"),
        (TransportError("timeout", "nothing received for 60 s"), "timeout"),
        (Reply(200, {}, b'{"choices": [{"message": {"content": "cut'), "bad_response"),
        (Reply(200, {}, b'{"choices": []}'), "bad_response"),
        (Reply(200, {}, b"data: {}\n\n", streamed=True), "bad_response"),
    ],
    ids=["5xx", "reset", "timeout", "truncated", "no choices", "stream cut short"],
)
def test_each_fault_is_retried_then_given_up_in_one_line(reply: Any, outcome: str) -> None:
    tally, log = RequestTally(), Recorder()
    result = ask(client_for(FakeTransport([reply]), sinks=[tally, log]))
    assert isinstance(result, RequestFailed) and "gave up after 3 tries" in str(result)
    assert "\n" not in str(result)
    assert tally.outcomes == {outcome: 3}
    assert all(event.error and event.cost_usd == 0 for event in log.events)


def test_a_fault_then_an_answer_is_one_answer() -> None:
    transport = FakeTransport([error(500), TransportError("reset", "reset"), streamed(["Hel", "lo."])])
    tally = RequestTally()
    result = ask(client_for(transport, sinks=[tally]), json_mode=False)
    assert result.content == "Hello." and result.finish_reason == "stop" and not result.cached
    assert tally.outcomes == {"5xx": 1, "reset": 1, "ok": 1} and len(transport.requests) == 3


def test_a_429_is_backpressure_not_a_failure() -> None:
    # more 429s than retries: a rate limit is waited out (bounded by time, not tries)
    limited = error(429, "slow down", {"retry-after-ms": "1", "x-ratelimit-limit-requests": "600"})
    transport = FakeTransport([limited] * 5 + [chat()])
    tally = RequestTally()
    client = client_for(transport, sinks=[tally], max_retries=1)
    result = ask(client)
    assert result.content == '{"ok": true}'
    assert tally.outcomes == {"429": 5, "ok": 1}
    assert client.limiter.state().rpm == 600  # learned from the headers


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(401, FatalEndpointError), (403, FatalEndpointError), (404, FatalEndpointError), (400, RequestFailed)],
)
def test_refusals_are_not_retried(status: int, error_type: type) -> None:
    transport = FakeTransport([error(status, "Incorrect API key provided: sk-abcdefghijklmnopqrstuv\n")])
    tally = RequestTally()
    result = ask(client_for(transport, sinks=[tally], max_retries=5))
    assert type(result) is error_type
    assert str(result).startswith(
        f"endpoint fake (m) answered {status}: Incorrect API key provided: [redacted]"
    )
    assert tally.outcomes == {str(status): 1} and len(transport.requests) == 1


def test_repeated_400s_trip_the_breaker() -> None:
    client = client_for(FakeTransport([error(400, "bad")]), breaker=Breaker(bad_requests=3))
    results = [ask(client, seed) for seed in range(4)]
    assert [type(r) for r in results] == [RequestFailed, RequestFailed, EndpointDown, EndpointDown]
    assert "3 requests in a row refused as invalid" in str(results[2])


def test_an_endpoint_failing_every_try_trips_the_breaker() -> None:
    client = client_for(FakeTransport([error(502)]), breaker=Breaker(failures=4, outage_s=0.0), max_retries=9)
    result = ask(client)
    assert isinstance(result, EndpointDown)
    assert "4 tries failed in a row" in str(result) and "\n" not in str(result)


def test_blank_content_is_retried_in_json_mode_and_left_to_the_caller_otherwise() -> None:
    replies = [streamed([" \n"]), streamed(['{"ok": 1}'])]
    tally = RequestTally()
    assert ask(client_for(FakeTransport(replies), sinks=[tally])).content == '{"ok": 1}'
    assert tally.outcomes == {"bad_response": 1, "ok": 1}
    assert ask(client_for(FakeTransport(replies)), json_mode=False).content == " \n"


def test_a_length_cut_at_the_cap_goes_back_to_the_caller() -> None:
    tally = RequestTally()
    result = ask(client_for(FakeTransport([chat("{", finish="length")]), sinks=[tally]))
    assert result.finish_reason == "length" and tally.outcomes == {"ok": 1}


def test_answers_are_cached_under_the_question_and_replayed_not_resent() -> None:
    cache, transport, log = MemoryCache(), FakeTransport([chat()]), Recorder()
    client = client_for(transport, cache=cache, sinks=[log])
    first, again, other = ask(client, 7), ask(client, 7), ask(client, 8)
    assert [first.cached, again.cached, other.cached] == [False, True, False]
    assert log.outcomes() == ["ok", "cached", "ok"] and len(transport.requests) == 2
    # the key: the body as sent, without what only says how long or how the answer comes
    sent = transport.bodies()[0]
    question = {k: v for k, v in sent.items() if k not in ("max_tokens", "stream", "stream_options")}
    assert sent["max_tokens"] == 2000 and sent["stream"] is True
    assert cache.get(request_key(question)) is not None


def test_the_events_carry_what_an_answer_cost() -> None:
    log = Recorder()
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 400}}
    result = ask(client_for(FakeTransport([chat(usage=usage)]), sinks=[log], name="ep"))
    [event] = log.events
    assert (event.endpoint, event.model, event.stage, event.outcome) == ("ep", "m", "script", "ok")
    assert (event.usage.prompt, event.usage.cached_prompt, event.usage.completion) == (1000, 400, 100)
    assert event.cost_usd == pytest.approx((1000 * 2.5 + 100 * 10.0) / 1e6) == result.cost_usd
    assert event.max_tokens == 2000 and event.latency_s >= 0


def test_a_chain_falls_back_and_a_resume_replays_the_fallbacks_answer() -> None:
    cache = MemoryCache()
    broken, healthy = FakeTransport([error(500)]), FakeTransport([chat()])

    def chain() -> EndpointChain:
        return EndpointChain(
            [
                client_for(broken, cache=cache, name="primary", max_retries=1),
                client_for(healthy, cache=cache, name="fallback"),
            ]
        )

    results = [ask(chain(), seed) for seed in (1, 2)]
    assert [r.endpoint for r in results] == ["fallback", "fallback"]
    asked_primary = len(broken.requests)
    again = [ask(chain(), seed) for seed in (1, 2)]
    assert [r.cached for r in again] == [True, True] and len(broken.requests) == asked_primary == 4


def test_the_budget_holds_back_what_is_not_cached() -> None:
    cache, budget = MemoryCache(), Budget(limit_usd=0.001)
    transport = FakeTransport([chat(usage={"prompt_tokens": 1000, "completion_tokens": 0})])
    client = client_for(transport, cache=cache, sinks=[budget], budget=budget)
    assert not ask(client, 1).cached  # $0.0025: over the limit once paid
    assert budget.exhausted and budget.spent_usd == pytest.approx(0.0025)
    refused = ask(client, 2)
    assert isinstance(refused, BudgetExhausted) and "budget reached: $0.0025 spent" in str(refused)
    assert ask(client, 1).cached and len(transport.requests) == 1  # replays are free


def test_after_a_graceful_stop_only_cached_answers_come_back() -> None:
    cache, transport = MemoryCache(), FakeTransport([chat()])
    client = client_for(transport, cache=cache)
    ask(client, 1)
    client.stop_sending()
    assert ask(client, 1).cached and isinstance(ask(client, 2), SendingStopped)
    assert isinstance(asyncio.run(_embed(client, ["x"])), SendingStopped)


async def _embed(client: LLMClient, texts: list[str]) -> Any:
    try:
        return await client.embed(texts, "dedup")
    except Exception as exc:
        return exc


def test_embeddings_go_through_the_same_client() -> None:
    transport = FakeTransport([error(503), embeddings([[1.0, 0.0], [0.0, 1.0]], prompt_tokens=8)])
    log, budget = Recorder(), Budget(limit_usd=10.0)
    client = client_for(transport, sinks=[log, budget], budget=budget, model="text-embedding-3-small")
    vectors = asyncio.run(_embed(client, ["a", "b"]))
    assert vectors == [[1.0, 0.0], [0.0, 1.0]]  # in input order, whatever order they came in
    assert transport.requests[-1] == (
        "/embeddings",
        {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "float"},
    )
    assert log.outcomes() == ["5xx", "ok"] and {e.stage for e in log.events} == {"dedup"}
    assert log.events[-1].cost_usd == pytest.approx(8 * 2.5 / 1e6) == budget.spent_usd
    wrong = client_for(FakeTransport([embeddings([[1.0]])]), max_retries=0)
    assert "expected 2" in str(asyncio.run(_embed(wrong, ["a", "b"])))


def test_the_client_stands_alone() -> None:
    """Used on its own, the client loads nothing of the service, the pipeline or the metrics."""
    code = """
import asyncio, sys
from llm import EndpointChain, LLMClient, Endpoint, MemoryCache
from tests.llm.fakes import FakeTransport, chat
client = LLMClient(Endpoint(model="m", base_url="http://x/v1"), transport=FakeTransport([chat()]),
                   cache=MemoryCache())
answer = asyncio.run(EndpointChain([client]).complete(
    [{"role": "user", "content": "hi"}], temperature=0, max_tokens=10, seed=1, stage="any"))
assert answer.content == '{"ok": true}'
ours = ("service", "workers", "pipeline", "metrics", "dedup", "prometheus_client", "simulator")
print(sorted(name for name in sys.modules if name.split(".")[0] in ours))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
