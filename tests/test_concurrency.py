"""The adaptive concurrency controller on its own: fed outcomes directly, no clock involved."""

from __future__ import annotations

import asyncio

from workers.concurrency import INITIAL_LIMIT, RATE_LIMIT_CUT, REBASE_EVERY, AdaptiveConcurrency


async def answered(control: AdaptiveConcurrency, requests: int, latency_s: float) -> None:
    """`requests` requests, one after another, each answered after `latency_s`."""
    for _ in range(requests):
        window = await control.acquire()
        control.succeeded(window, latency_s)
        control.release()


def test_a_burst_of_429s_cuts_once_then_successes_restore_the_limit() -> None:
    async def scenario() -> tuple[float, float, float]:
        control = AdaptiveConcurrency(ceiling=64)
        windows = [await control.acquire() for _ in range(INITIAL_LIMIT)]
        for window in windows:  # every request of the burst comes back 429
            control.rate_limited(window)
            control.release()
        after_burst = control.limit
        await answered(control, 300, 1.0)
        recovered = control.limit
        await answered(control, 5000, 1.0)
        return after_burst, recovered, control.limit

    after_burst, recovered, final = asyncio.run(scenario())
    assert after_burst == INITIAL_LIMIT * RATE_LIMIT_CUT
    assert recovered > INITIAL_LIMIT
    assert final == 64  # the configured ceiling, never above


def test_rising_latency_cuts_and_a_new_normal_is_relearned() -> None:
    async def scenario() -> tuple[float, float, float]:
        control = AdaptiveConcurrency(ceiling=64)
        await answered(control, 400, 1.0)
        before = control.limit
        await answered(control, 128, 3.0)  # the endpoint starts to queue
        cut = control.limit
        # the slower latency stays (longer answers, not our load): after a re-measurement
        # it is the new baseline and the limit grows back instead of starving
        await answered(control, 64 * (REBASE_EVERY + 10), 3.0)
        return before, cut, control.limit

    before, cut, final = asyncio.run(scenario())
    assert before == 64
    assert cut <= before / 2
    assert final == 64


def test_waiters_are_served_in_order_when_the_limit_allows() -> None:
    async def scenario() -> list[int]:
        control = AdaptiveConcurrency(ceiling=2)
        control.limit = 1
        first = await control.acquire()
        order: list[int] = []

        async def waiter(n: int) -> None:
            await control.acquire()
            order.append(n)

        tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
        await asyncio.sleep(0)
        assert order == [] and control.in_flight == 1
        control.release()
        await asyncio.sleep(0)
        assert order == [0]
        tasks[1].cancel()  # a cancelled waiter gives up its turn without leaking a slot
        control.release()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert first == 0 and control.in_flight == 1
        return order

    assert asyncio.run(scenario()) == [0, 2]


def test_cancelling_every_waiter_at_a_stop_leaks_nothing() -> None:
    # a graceful stop cancels all waiting requests at once, and a release in between hands
    # slots over: whichever comes first, each slot is freed exactly once
    async def scenario() -> int:
        control = AdaptiveConcurrency(ceiling=4)
        control.limit = 2
        holders = [await control.acquire() for _ in range(2)]
        tasks = [asyncio.create_task(control.acquire()) for _ in range(6)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        control.release()
        control.release()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert len(holders) == 2 and all(isinstance(r, asyncio.CancelledError) for r in results)
        return control.in_flight

    assert asyncio.run(scenario()) == 0
