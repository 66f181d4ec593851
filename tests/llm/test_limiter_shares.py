"""An `EndpointLimiter` holding a share of a key that other processes use too (a cluster run's
leases, `service/cluster/leases.py`), on a looptime loop (compressed time: the limiters' clock
is the loop's, which moves only when every task waits): the holders of a key together stay
within its limit and divide it as their shares say, a leased bucket saves up at most
`LEASE_HOLD_S` of its part, the provider's headers are read at the share, a bucket fills only
from its first request, and the limiter counts what it let through."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import looptime
import pytest

from llm import Limits
from llm.limiter import LEASE_HOLD_S, EndpointLimiter

T = TypeVar("T")
SENDERS = 8  # requests each limiter is asked for at once: always more than it lets through


def in_compressed_time(scenario: Callable[[], Awaitable[T]]) -> T:
    with asyncio.Runner(loop_factory=lambda: looptime.new_event_loop(start=0.0, noop_cycles=0)) as runner:
        return runner.run(scenario())


def now() -> float:
    return asyncio.get_running_loop().time()


def limiter(limits: Limits, share: float = 1.0) -> EndpointLimiter:
    return EndpointLimiter(limits, "gen", clock=now, share=share)


async def send_until(limiter: EndpointLimiter, until: float, tokens: int = 1) -> list[float]:
    """Ask through `limiter` as fast as it lets requests through (each answered at once) until
    `until`; when each was let through."""
    sent: list[float] = []

    async def sender() -> None:
        while now() < until:
            async with limiter.slot(tokens):
                if now() < until:
                    sent.append(now())

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return sorted(sent)


def most_in_a_minute(times: list[float]) -> int:
    """The most requests in any 60 s window."""
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 60:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_two_halves_of_a_key_let_through_at_most_its_rpm_together() -> None:
    rpm = 600

    async def scenario() -> list[float]:
        halves = [limiter(Limits(rpm=rpm), share=0.5) for _ in range(2)]
        for half in halves:
            half.set_shares(0.5, 0.5)
        sent = await asyncio.gather(*(send_until(half, 600.0) for half in halves))
        return sorted(sent[0] + sent[1])

    sent = in_compressed_time(scenario)
    assert rpm * 10 * 0.99 <= len(sent) <= rpm * 10  # ten minutes at the key's limit, from empty buckets
    # in any minute, at most the limit and what the two buckets can hold (the provider's bucket
    # holds a minute's worth)
    assert most_in_a_minute(sent) <= rpm + 2 * rpm * 0.5 / 60 * LEASE_HOLD_S


def test_the_key_is_divided_as_the_shares_say_once_they_change() -> None:
    rpm = 600

    async def scenario() -> tuple[int, int]:
        first, second = limiter(Limits(rpm=rpm), 0.5), limiter(Limits(rpm=rpm), 0.5)
        await asyncio.gather(send_until(first, 60.0), send_until(second, 60.0))
        first.set_shares(0.9, 0.9)
        second.set_shares(0.1, 0.1)
        start = now()
        sent = await asyncio.gather(send_until(first, start + 300), send_until(second, start + 300))
        return len(sent[0]), len(sent[1])

    first, second = in_compressed_time(scenario)
    assert first == pytest.approx(0.9 * rpm * 5, rel=0.02)
    assert second == pytest.approx(0.1 * rpm * 5, rel=0.02)


def test_a_leased_bucket_saves_up_only_one_lease_period_of_its_part() -> None:
    rpm = 600  # a half of it: 5 requests a second

    async def scenario() -> tuple[int, int]:
        leased, unleased = limiter(Limits(rpm=rpm), 0.5), limiter(Limits(rpm=rpm), 0.5)
        leased.set_shares(0.5, 0.5)
        for held in (leased, unleased):
            async with held.slot(1):  # the buckets start filling
                pass
        await asyncio.sleep(120)  # idle
        burst = now()
        sent = await asyncio.gather(send_until(leased, burst + 1e-3), send_until(unleased, burst + 1e-3))
        return len(sent[0]), len(sent[1])

    leased, unleased = in_compressed_time(scenario)
    assert leased <= rpm * 0.5 / 60 * LEASE_HOLD_S + 1
    assert unleased >= SENDERS  # a minute's worth saved up: every sender went at once


def test_learned_limits_and_what_remains_are_taken_at_the_share() -> None:
    async def scenario() -> None:
        quarter = limiter(Limits(), share=0.25)
        assert quarter.state().rpm is None
        quarter.observe(
            {
                "x-ratelimit-limit-requests": "4000",
                "x-ratelimit-remaining-requests": "4000",
                "x-ratelimit-limit-tokens": "400000",
                "x-ratelimit-remaining-tokens": "200000",
            }
        )
        state = quarter.state()
        assert (state.rpm, state.tpm) == (1000, 100_000)
        assert (state.remaining_requests, state.remaining_tokens) == (1000, 50_000)
        quarter.observe({"x-ratelimit-remaining-requests": "40", "x-ratelimit-remaining-tokens": "8000"})
        state = quarter.state()
        assert (state.remaining_requests, state.remaining_tokens) == (10, 2000)

        leased = limiter(Limits(), share=0.5)
        leased.set_shares(0.2, 0.4)  # a lease given before any limit is known
        leased.observe({"x-ratelimit-limit-requests": "6000", "x-ratelimit-limit-tokens": "600000"})
        state = leased.state()
        assert (state.rpm, state.tpm) == (1200, 240_000)
        # a lease period's worth at most, not what the provider says the whole key has left
        assert state.remaining_requests == pytest.approx(1200 / 60 * LEASE_HOLD_S)
        assert state.remaining_tokens == pytest.approx(240_000 / 60 * LEASE_HOLD_S)

    in_compressed_time(scenario)


def test_a_bucket_fills_only_from_its_first_request() -> None:
    rpm = 60

    async def scenario() -> list[float]:
        late = limiter(Limits(rpm=rpm))
        await asyncio.sleep(600)  # made long before its first request (a worker loading models)
        start = now()
        return [t - start for t in await send_until(late, start + 10)]

    sent = in_compressed_time(scenario)
    assert sent[0] >= 60 / rpm * 0.9  # no burst: the first request waited for its part
    assert len(sent) <= 10 * rpm / 60 + 1


def test_what_was_let_through_is_counted_and_the_tokens_corrected_to_the_charge() -> None:
    async def scenario() -> tuple[int, int]:
        counting = limiter(Limits(rpm=6000, tpm=1_000_000))
        async with counting.slot(1000) as ticket:
            ticket.succeeded(700, {}, 1.0, first_token_s=None, completion_tokens=100)
        async with counting.slot(lambda: 2000) as ticket:  # sized once the slot is held
            ticket.succeeded(2500, {}, 1.0, first_token_s=None, completion_tokens=100)
        async with counting.slot(300):  # no answer (a fault): its estimate stands
            pass
        state = counting.state()
        assert (state.taken_requests, state.taken_tokens) == (counting.taken_requests, counting.taken_tokens)
        return counting.taken_requests, counting.taken_tokens

    assert in_compressed_time(scenario) == (3, 700 + 2500 + 300)


def test_a_request_larger_than_a_leased_bucket_waits_for_it_full_and_leaves_a_debt() -> None:
    tpm = 60_000  # a tenth of it: 100 tokens a second, held for one second at most

    async def scenario() -> int:
        small = limiter(Limits(tpm=tpm), share=0.1)
        small.set_shares(0.1, 0.1)
        return len(await send_until(small, 600.0, tokens=1000))  # each ten times what the bucket holds

    taken = 1000 * in_compressed_time(scenario)
    assert 0.95 * tpm * 0.1 * 10 <= taken <= tpm * 0.1 * 10  # ten minutes of its part, no more
