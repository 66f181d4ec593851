"""The asyncio job queue: each admitted job is one task that walks its stages in order.

- A stage is an async handler `job -> next stage name | None`; `None` means the job is
  finished, and `on_finished(job)` decides what that means. There are no worker pools: the
  endpoints' limiters are the gates a job waits at, so the work in flight follows what the
  endpoints take (Little's law: their rate x their latency), not a pool size set in advance.
  A stage may still have a cap (`StageSpec.concurrency`: jobs in that stage at once).
- Admission: the feeder takes the next job from the source when fewer than `max_in_flight`
  jobs are in flight (a ceiling, for memory) *and* `may_admit(in_flight)` agrees. It asks
  again whenever a job finishes and every `ADMISSION_POLL_S` (what `may_admit` looks at, the
  endpoints' queues, changes without any job finishing).
- `close()` (a graceful stop) stops admission only: the jobs in flight run on until each
  finishes or gives up (`run()` returns when none is left).
- `stop()` (target reached, fatal error, a second signal or the end of the grace period)
  stops admission and cancels the jobs; unfinished jobs stay as they are in the store and are
  resumed by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Job = TypeVar("Job")
ADMISSION_POLL_S = 0.05


@dataclass(frozen=True)
class StageSpec(Generic[Job]):
    name: str
    handler: Callable[[Job], Awaitable[str | None]]
    concurrency: int | None = None  # jobs in this stage at once, at most (None: no cap)


class JobQueue(Generic[Job]):
    def __init__(
        self,
        stages: list[StageSpec[Job]],
        on_finished: Callable[[Job], None],
        on_error: Callable[[Job, BaseException], None],
        max_in_flight: int,
    ) -> None:
        self._stages = {s.name: s for s in stages}
        self._caps = {s.name: asyncio.Semaphore(s.concurrency) for s in stages if s.concurrency}
        self._on_finished = on_finished
        self._on_error = on_error
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._in_stage: Counter[str] = Counter({s.name: 0 for s in stages})
        self._jobs: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._closed = asyncio.Event()
        self._fatal: BaseException | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def in_stages(self) -> dict[str, int]:
        """Jobs in each stage now (working, or waiting for an endpoint)."""
        return dict(self._in_stage)

    def close(self) -> None:
        """Admit nothing more; let the jobs in flight finish."""
        self._closed.set()
        self._changed.set()

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
            jobs = [*self._jobs, feeder, stopped, closed]
            for task in jobs:
                task.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        if self._fatal is not None:
            raise self._fatal
        return not (self._stopped.is_set() or self._closed.is_set())

    async def _feed(
        self, first_stage: str, source: AsyncIterator[Job], may_admit: Callable[[int], bool]
    ) -> None:
        """Admit jobs from `source`; the source is closed when feeding ends (stopped, closed,
        cancelled), so work it has started (a persona expansion) ends with the run."""
        async with contextlib.aclosing(source) as jobs:
            async for job in jobs:
                while not self._ending() and not (
                    self._in_flight < self._max_in_flight and may_admit(self._in_flight)
                ):
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(ADMISSION_POLL_S):
                            await self._changed.wait()
                if self._ending():
                    return
                self._in_flight += 1
                task = asyncio.create_task(self._walk(first_stage, job))
                self._jobs.add(task)
                task.add_done_callback(self._jobs.discard)

    def _ending(self) -> bool:
        return self._stopped.is_set() or self._closed.is_set()

    async def _walk(self, stage: str | None, job: Job) -> None:
        """One job through its stages, from `stage` until a handler says it is finished."""
        try:
            while stage is not None:
                current = stage
                self._in_stage[current] += 1
                try:
                    cap = self._caps.get(current)
                    if cap is None:
                        stage = await self._stages[current].handler(job)
                    else:
                        async with cap:
                            stage = await self._stages[current].handler(job)
                finally:
                    self._in_stage[current] -= 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one job's failure must not take the run down
            self._finish(job, exc)
            return
        self._finish(job, None)

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
