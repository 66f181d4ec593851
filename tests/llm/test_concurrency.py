"""The adaptive concurrency controller: its slots and 429 rules fed outcomes directly, then the
whole limiter against in-process endpoint models in compressed time (`bench/endpoint_models`):
a rate-limited provider with 30-60 s answers, a concurrency-capped one, vLLM-like batches."""

from __future__ import annotations

import asyncio

from bench.endpoint_models import Batch, Capped, RateLimited, run_model
from llm import Limits
from llm.concurrency import (
    CAP_PROBE_EVERY,
    INITIAL_LIMIT,
    RATE_LIMIT_CUT,
    AdaptiveConcurrency,
    Send,
)


async def send(control: AdaptiveConcurrency, stage: str = "script") -> Send:
    queued = await control.acquire()
    return control.sent(stage, queued, paced=False)


def test_a_burst_of_429s_over_a_cap_sets_the_cap_once_instead_of_cutting_per_refusal() -> None:
    async def scenario() -> tuple[int | None, int, int]:
        control = AdaptiveConcurrency(ceiling=1000)
        sends = [await send(control) for _ in range(INITIAL_LIMIT)]
        for refused in sends[20:]:  # the endpoint takes 20 at once: everything above is refused
            control.refused_over_cap(refused)
            control.finished(refused)
        after_burst = control.limit
        for answered in sends[:20]:
            control.succeeded(answered, 10.0, completion_tokens=500)
            control.finished(answered)
        return control.cap, after_burst, control.limit

    cap, after_burst, limit = asyncio.run(scenario())
    assert cap == 20  # the first refusal came at 21 in flight
    assert after_burst == limit == 20  # not 32 x 0.75^12


async def hammer(control: AdaptiveConcurrency, true_cap: int, answers: int, workers: int = 64) -> int:
    """`workers` requests at a time against an endpoint that refuses any request beyond
    `true_cap` at once (no time passes); the number of requests it refused."""
    done = refused = 0

    async def worker() -> None:
        nonlocal done, refused
        while done < answers:
            request = await send(control)
            await asyncio.sleep(0)
            if request.level > true_cap:
                control.refused_over_cap(request)
                refused += 1
            else:
                control.succeeded(request, 1.0, completion_tokens=100)
                done += 1
            control.finished(request)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return refused


def test_a_learned_cap_is_probed_rarely_and_followed_when_it_rises() -> None:
    async def scenario() -> tuple[int, int | None, int, int | None]:
        control = AdaptiveConcurrency(ceiling=1000)
        refused_at_cap = await hammer(control, true_cap=10, answers=10 * CAP_PROBE_EVERY)
        learned = control.cap
        refused_after_rise = await hammer(control, true_cap=40, answers=3 * CAP_PROBE_EVERY)
        return refused_at_cap, learned, refused_after_rise, control.cap

    refused_at_cap, learned, refused_after_rise, cap = asyncio.run(scenario())
    assert learned == 10
    # the first burst (the limit was 32 before the cap was known), then one probe a round
    assert refused_at_cap <= (INITIAL_LIMIT - 10) + 10 * 2
    assert cap == 40  # probes found the room within one probe round, doubling their step
    assert refused_after_rise <= 40


def test_an_unknown_rate_limit_cuts_once_per_window() -> None:
    async def scenario() -> tuple[int, int]:
        control = AdaptiveConcurrency(ceiling=1000)
        sends = [await send(control) for _ in range(INITIAL_LIMIT)]
        for refused in sends:  # all sent before the cut: one cut for the burst
            control.refused_over_rate(refused)
            control.finished(refused)
        after_burst = control.limit
        later = await send(control)  # sent after the cut: may cut again
        control.refused_over_rate(later)
        control.finished(later)
        return after_burst, control.limit

    after_burst, after_next = asyncio.run(scenario())
    assert after_burst == int(INITIAL_LIMIT * RATE_LIMIT_CUT)
    assert after_next == int(INITIAL_LIMIT * RATE_LIMIT_CUT**2)


def test_waiters_are_served_in_order_when_the_limit_allows() -> None:
    async def scenario() -> list[int]:
        control = AdaptiveConcurrency(ceiling=1)
        first = await send(control)
        order: list[int] = []

        async def waiter(n: int) -> None:
            await control.acquire()
            order.append(n)

        tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
        await asyncio.sleep(0)
        assert order == [] and control.in_flight == 1
        control.finished(first)
        await asyncio.sleep(0)
        assert order == [0]
        tasks[1].cancel()  # a cancelled waiter gives up its turn without leaking a slot
        control.release()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert control.in_flight == 1 and control.waiting == 1  # task 2 holds a slot, unsent
        return order

    assert asyncio.run(scenario()) == [0, 2]


def test_cancelling_every_waiter_at_a_stop_leaks_nothing() -> None:
    # a graceful stop cancels all waiting requests at once, and a release in between hands
    # slots over: whichever comes first, each slot is freed exactly once
    async def scenario() -> int:
        control = AdaptiveConcurrency(ceiling=2)
        holders = [await send(control) for _ in range(2)]
        tasks = [asyncio.create_task(control.acquire()) for _ in range(6)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        for holder in holders:
            control.finished(holder)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        return control.in_flight + control.sending

    assert asyncio.run(scenario()) == 0


# -- against endpoint models, in compressed time ---------------------------------------------


def test_a_rate_limited_provider_with_long_answers_is_paced_by_its_buckets_not_the_limit() -> None:
    # 1,200 RPM learned from the headers, answers of 20-60 s at 50 tokens/s: the key allows
    # 20 requests/s, which takes about 650 requests in flight. Nothing in config says so.
    rpm = 1200
    figures = run_model(lambda: RateLimited(rpm, 50_000_000, tokens_per_s=50.0), duration_s=900)
    assert figures.settled_requests_per_s * 60 >= 0.97 * rpm
    assert figures.settled_in_flight >= 500  # rate x latency, far above the old 96
    assert figures.settled_limit >= 1.2 * figures.settled_in_flight  # the limit never binds
    assert figures.ramp_s is not None and figures.ramp_s <= 120  # within a few answers
    assert figures.share_429 <= 0.01


def test_a_tokens_per_minute_limit_charged_on_max_tokens_is_respected() -> None:
    figures = run_model(lambda: RateLimited(5000, 600_000), duration_s=900)
    charged_per_request = (700 + 1600 + 1.3 * (2200 + 3200)) / 2.3  # the stage mix of a sample
    ideal = 600_000 / charged_per_request / 60
    assert 0.9 * ideal <= figures.settled_requests_per_s <= 1.02 * ideal
    assert figures.share_429 <= 0.01


def test_a_concurrency_cap_is_learned_from_its_429s_and_used_to_the_full() -> None:
    cap = 50
    figures = run_model(lambda: Capped(cap), duration_s=3600)
    assert figures.settled_in_flight >= 0.95 * cap
    assert figures.max_in_flight <= cap + 8  # probes above it are few and small
    assert figures.share_429 <= 0.01


def test_the_knee_of_a_batch_is_found_when_requests_beyond_it_queue() -> None:
    # 200 sequences at once, each slower as the batch fills (throughput rises up to 200):
    # answers are not streamed, so the signal is seconds per output token
    batch = Batch(200)
    figures = run_model(lambda: Batch(200), duration_s=3600)
    assert 0.75 * batch.knee <= figures.settled_in_flight <= 1.25 * batch.knee
    assert figures.share_429 == 0


def test_the_knee_of_a_batch_whose_throughput_peaks_early_is_found_from_streamed_answers() -> None:
    # up to 512 sequences, but decoding slows so fast that throughput peaks at about 160:
    # queueing never shows in the time to first token there; the decode time per token does
    batch = Batch(512, per_seq_s=0.0, per_seq2_s=0.02 / 160**2)
    figures = run_model(lambda: Batch(512, per_seq_s=0.0, per_seq2_s=0.02 / 160**2), 3600, stream=True)
    assert 0.75 * batch.knee <= figures.settled_in_flight <= 1.25 * batch.knee
    assert batch.throughput(int(figures.settled_in_flight)) >= 0.95 * batch.throughput(batch.knee)


def test_a_small_batch_is_found_from_above() -> None:
    # a knee just above the first limit: the ramp overshoots once and comes back
    batch = Batch(40)
    figures = run_model(lambda: Batch(40), duration_s=3600, stream=True)
    assert 0.75 * batch.knee <= figures.settled_in_flight <= 1.25 * batch.knee


def test_the_configured_ceiling_still_binds() -> None:
    figures = run_model(lambda: Batch(200), duration_s=1200, limits=Limits(max_concurrency=50))
    assert figures.max_in_flight <= 50
