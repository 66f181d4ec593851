"""The asyncio job queue: jobs stream through named stages, each a pool of workers.

- A stage is an async handler `job -> next stage name | None` with its own concurrency.
  `None` means the job is finished; `on_finished(job)` decides what that means.
- Backpressure: at most `max_in_flight` jobs exist at once. The feeder takes the next job
  from the source only when a slot is free *and* `may_admit()` agrees, so memory does not
  grow with the size of the run, and the tail of a run does not start work it won't need.
- `close()` (a graceful stop) stops admission only: the jobs in flight run on until each
  finishes or gives up (`run()` returns when none is left).
- `stop()` (target reached, fatal error, a second signal or the end of the grace period)
  stops admission and cancels the workers; unfinished jobs stay as they are in the store
  and are resumed by the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

Job = TypeVar("Job")
log = structlog.get_logger()


@dataclass(frozen=True)
class StageSpec(Generic[Job]):
    name: str
    handler: Callable[[Job], Awaitable[str | None]]
    concurrency: int


class JobQueue(Generic[Job]):
    def __init__(
        self,
        stages: list[StageSpec[Job]],
        on_finished: Callable[[Job], None],
        on_error: Callable[[Job, BaseException], None],
        max_in_flight: int,
    ) -> None:
        self._stages = {s.name: s for s in stages}
        self._queues: dict[str, asyncio.Queue[Job]] = {s.name: asyncio.Queue() for s in stages}
        self._on_finished = on_finished
        self._on_error = on_error
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._closed = asyncio.Event()
        self._fatal: BaseException | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def close(self) -> None:
        """Admit nothing more; let the jobs in flight finish."""
        self._closed.set()
        self._changed.set()

    def depths(self) -> dict[str, int]:
        """Jobs waiting for a worker, per stage."""
        return {name: queue.qsize() for name, queue in self._queues.items()}

    def stop(self, fatal: BaseException | None = None) -> None:
        """Stop admitting and end the run; `fatal` is re-raised by `run()`."""
        if fatal is not None and self._fatal is None:
            self._fatal = fatal
        self._stopped.set()
        self._changed.set()

    async def run(
        self,
        first_stage: str,
        source: AsyncIterator[Job],
        may_admit: Callable[[int], bool],
    ) -> bool:
        """Feed jobs from `source` until it is exhausted and drained, or `stop()`.

        Returns True when the source ran dry (every job finished), False when closed or stopped.
        """
        workers = [
            asyncio.create_task(self._worker(spec), name=f"{spec.name}-{i}")
            for spec in self._stages.values()
            for i in range(spec.concurrency)
        ]
        feeder = asyncio.create_task(self._feed(first_stage, source, may_admit), name="feeder")
        stopped = asyncio.create_task(self._stopped.wait())
        closed = asyncio.create_task(self._closed.wait())
        try:
            await asyncio.wait({feeder, stopped, closed}, return_when=asyncio.FIRST_COMPLETED)
            failed = feeder.done() and not feeder.cancelled() and feeder.exception() is not None
            if failed and not self._closed.is_set():  # once closed, the source is not needed
                raise feeder.exception()  # type: ignore[misc]
            feeder.cancel()  # closed: a persona being fetched is not admitted
            while self._in_flight and not self._stopped.is_set():
                self._changed.clear()
                await self._changed.wait()
        finally:
            for task in [*workers, feeder, stopped, closed]:
                task.cancel()
            await asyncio.gather(*workers, feeder, stopped, closed, return_exceptions=True)
        if self._fatal is not None:
            raise self._fatal
        return not (self._stopped.is_set() or self._closed.is_set())

    async def _feed(
        self, first_stage: str, source: AsyncIterator[Job], may_admit: Callable[[int], bool]
    ) -> None:
        async for job in source:
            while not self._changed_course() and not (
                self._in_flight < self._max_in_flight and may_admit(self._in_flight)
            ):
                self._changed.clear()
                await self._changed.wait()
            if self._changed_course():  # closed too: nothing is admitted after close()
                return
            self._in_flight += 1
            self._put(first_stage, job)

    def _changed_course(self) -> bool:
        return self._stopped.is_set() or self._closed.is_set()

    def _put(self, stage: str, job: Job) -> None:
        self._queues[stage].put_nowait(job)

    async def _worker(self, spec: StageSpec[Job]) -> None:
        queue = self._queues[spec.name]
        while True:
            job = await queue.get()
            try:
                next_stage = await spec.handler(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one job's failure must not take the run down
                self._finish(job, exc)
                continue
            if next_stage is None:
                self._finish(job, None)
            else:
                self._put(next_stage, job)

    def _finish(self, job: Job, error: Exception | None) -> None:
        self._in_flight -= 1
        try:
            if error is None:
                self._on_finished(job)
            else:
                self._on_error(job, error)
        except Exception as exc:
            self.stop(fatal=exc)
        self._changed.set()
