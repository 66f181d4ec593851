"""The job queue: each job walks its stages, in-flight jobs never exceed the bound nor a
stage's cap, the admission predicate is respected (and asked again while nothing finishes),
stop() ends the run, a handler error stays one job's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from workers.queue import JobQueue, StageSpec


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def test_jobs_flow_through_stages_with_bounded_in_flight() -> None:
    seen: list[int] = []
    peak = peak_first = 0

    async def main() -> bool:
        nonlocal peak
        queue: JobQueue[int]

        async def first(job: int) -> str | None:
            nonlocal peak, peak_first
            peak = max(peak, queue.in_flight)
            peak_first = max(peak_first, queue.in_stages()["first"])
            await asyncio.sleep(0.001)
            return "second"

        async def second(job: int) -> str | None:
            await asyncio.sleep(0.002)
            return None

        queue = JobQueue(
            [StageSpec("first", first, 4), StageSpec("second", second)],
            on_finished=seen.append,
            on_error=lambda job, exc: None,
            max_in_flight=10,
        )
        return await queue.run("first", numbers(200), lambda in_flight: True)

    assert asyncio.run(main()) is True  # the source ran dry and every job finished
    assert sorted(seen) == list(range(200))
    assert 4 < peak <= 10  # more than the first stage's cap: the others were in the second
    assert peak_first <= 10  # counted while waiting for the cap too; at most 4 ran it at once


def test_admission_is_asked_again_while_no_job_finishes() -> None:
    # what may_admit looks at (the endpoints' queues) changes without any job finishing
    asked = 0

    async def main() -> list[int]:
        gate = asyncio.Event()
        admitted: list[int] = []
        queue: JobQueue[int]

        async def work(job: int) -> str | None:
            admitted.append(job)
            if len(admitted) == 3:
                queue.stop()
            await gate.wait()  # no job ever finishes
            return None

        def may_admit(in_flight: int) -> bool:
            nonlocal asked
            asked += 1
            return asked % 3 == 0  # room appears now and then

        queue = JobQueue([StageSpec("w", work)], lambda job: None, lambda job, exc: None, max_in_flight=50)
        await queue.run("w", numbers(100), may_admit)
        return admitted

    assert asyncio.run(main()) == [0, 1, 2]
    assert asked >= 9


def test_stop_ends_the_run_and_may_admit_is_respected() -> None:
    finished: list[int] = []
    admitted_max = 0

    async def main() -> bool:
        queue: JobQueue[int]

        async def work(job: int) -> str | None:
            await asyncio.sleep(0.001)
            return None

        def done(job: int) -> None:
            finished.append(job)
            if len(finished) == 25:
                queue.stop()

        def may_admit(in_flight: int) -> bool:
            nonlocal admitted_max
            admitted_max = max(admitted_max, in_flight)
            return in_flight < 3

        queue = JobQueue([StageSpec("w", work)], done, lambda job, exc: None, max_in_flight=50)
        return await queue.run("w", numbers(10_000), may_admit)

    assert asyncio.run(main()) is False  # stopped, not exhausted
    assert 25 <= len(finished) < 30
    assert admitted_max <= 3


def test_a_failing_job_does_not_stop_the_others() -> None:
    errors: list[tuple[int, str]] = []
    finished: list[int] = []

    async def work(job: int) -> str | None:
        if job == 3:
            raise ValueError("bad job")
        return None

    async def main() -> bool:
        queue = JobQueue(
            [StageSpec("w", work)],
            finished.append,
            lambda job, exc: errors.append((job, str(exc))),
            max_in_flight=4,
        )
        return await queue.run("w", numbers(10), lambda n: True)

    assert asyncio.run(main()) is True
    assert errors == [(3, "bad job")] and sorted(finished) == [0, 1, 2, 4, 5, 6, 7, 8, 9]


def test_close_admits_nothing_more_and_lets_jobs_in_flight_finish() -> None:
    finished: list[int] = []
    started: list[int] = []

    async def main() -> bool:
        queue: JobQueue[int]
        release = asyncio.Event()

        async def work(job: int) -> str | None:
            started.append(job)
            if len(started) == 5:
                queue.close()  # e.g. SIGTERM while 5 jobs are in flight
                release.set()
            await release.wait()
            return "second"

        async def second(job: int) -> str | None:
            await asyncio.sleep(0)
            return None

        queue = JobQueue(
            [StageSpec("first", work), StageSpec("second", second)],
            on_finished=finished.append,
            on_error=lambda job, exc: None,
            max_in_flight=5,
        )
        return await queue.run("first", numbers(100), lambda in_flight: True)

    assert asyncio.run(main()) is False  # closed, not exhausted
    assert sorted(started) == [0, 1, 2, 3, 4]  # nothing admitted after close()
    assert sorted(finished) == [0, 1, 2, 3, 4]  # every job in flight went through both stages
