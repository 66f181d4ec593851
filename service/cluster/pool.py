"""The driver's side of a cluster run: K workers (Ray actors), the samples handed to them, and
their reports applied to the run (`service/cluster`).

`walk` is the driver's only stage: it hands a sample, with the answers stored for it, to the
worker with the fewest samples, and returns once the sample comes back finished. A worker's
reports come in one stream each (`_pump`); `_apply` stores a report's answers in one
transaction, hands its events to the run's sinks (metrics, request tally, budget), stores the
judge's verdicts, screens its scripts against the run's index and answers the worker, then
gives back the samples it finished.

A worker lost (its stream ends: SIGKILL, OOM, a lost node) hands its samples back to `walk`,
which gives each to another worker; a replacement is started in its place, at most
`MAX_REPLACEMENTS` times per worker before the run stops (resumable).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from dedup.embedder import Embedder
from dedup.minilm import MODEL_FOR_KIND, local_name
from dedup.near import Candidate, Verdict
from llm import Answer, Budget, LimiterState, Sink
from llm.limiter import EndpointLimiter
from metrics.prometheus import WorkerFigures
from pipeline.job import SampleJob
from service.cluster import connect
from service.cluster.embedder import WorkerEmbedder
from service.cluster.leases import REBALANCE_S, LeaseBoard
from service.cluster.protocol import Report, WorkerState, portable
from service.cluster.worker import SampleWorker
from service.config import Config
from service.dedup import RunDedup
from service.recorder import Recorder
from service.store import Store

log = structlog.get_logger()
MAX_REPLACEMENTS = 3  # per worker: a worker lost more often stops the run
SYNC_S = 0.25  # how often the workers hear the run's spend (when it has a budget)
EMBED_RETRY_S = 0.1  # after a worker was lost mid-embedding
CLOSE_S = 10.0  # a worker's own stop, at most (then it is killed)
DRAIN_S = 1.0  # for the reports on their way from the closed workers, at most
REPLACEMENT_SHARE = 0.01  # of every key, held by a replacement worker until the next division
DRIVER = "driver"  # the driver's own limiters, among the holders of a key's leases


class WorkerLost(Exception):
    """The worker a sample was on is gone; the sample goes to another one."""


class ClusterError(Exception):
    """The cluster cannot go on (a worker lost too often); the run stops, resumable."""


@dataclass
class _Slot:
    """One worker place: its actor now, the samples on it, and what it has done so far."""

    index: int
    actor: Any = None
    pid: int | None = None
    alive: bool = False
    pending: dict[str, tuple[SampleJob, asyncio.Future[tuple[SampleJob, BaseException | None]]]] = field(
        default_factory=dict
    )
    state: WorkerState | None = None
    handing: list[tuple[SampleJob, dict[str, Answer]]] = field(default_factory=list)  # `_hand`
    pump: asyncio.Task[None] | None = None
    restarts: int = 0
    answers: int = 0
    finished: int = 0
    cpu_before_s: float = 0.0  # of the processes it replaced


class SummedLoad:
    """One endpoint's limiters summed over the workers, as admission reads them."""

    def __init__(self, pool: WorkerPool, endpoint: str) -> None:
        self._pool = pool
        self._endpoint = endpoint

    @property
    def in_flight(self) -> int:
        return sum(state.in_flight for state in self._pool.limiter_states(self._endpoint))

    @property
    def waiting(self) -> int:
        return sum(state.waiting for state in self._pool.limiter_states(self._endpoint))

    def has_room(self, backlog: int) -> bool:
        return self.waiting <= backlog * max(1, self._pool.alive)


class WorkerPool:
    def __init__(
        self,
        config: Config,
        store: Store,
        recorder: Recorder,
        sinks: Sequence[Sink],
        budget: Budget,
        notice: Callable[[str], None],
        own_limiters: Mapping[str, EndpointLimiter],
    ) -> None:
        """`own_limiters`: the driver's own limiters of keys the workers use too (its persona
        expansion's, its dedup embedder's): they take part in the leases of those keys."""
        self._config = config
        self._store = store
        self._dedup: RunDedup | None = None  # the run's one script index (`screen_with`)
        self._recorder = recorder
        self._sinks = tuple(sinks)
        self._budget = budget
        self._notice = notice
        self._own_limiters = dict(own_limiters)
        self._board = LeaseBoard()
        self._handed_any = False
        self._slots = [_Slot(index) for index in range(config.cluster.workers)]
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fatal: BaseException | None = None
        self._closing = False
        self._local = False
        self._start_args: tuple[Any, ...] = ()
        self.sent_again = 0  # answers to requests whose answer was stored already

    async def start(self, base_urls: dict[str, str]) -> None:
        """Join (or start) the cluster and start the workers."""
        config = self._config
        started = time.monotonic()
        self._local = connect.connect(config.cluster.address, config.cluster.workers)
        keys = {
            endpoint.api_key_env: os.environ[endpoint.api_key_env]
            for endpoint in config.endpoints.values()
            if endpoint.api_key_env and endpoint.api_key_env in os.environ
        }
        self._start_args = (base_urls, keys)
        # until the first division (after the workers' first reports) each process holds an
        # equal part of every key, the driver too when it asks the workers' endpoints itself
        holders = len(self._slots) + (1 if self._own_limiters else 0)
        for limiter in self._own_limiters.values():
            limiter.set_shares(1 / holders, 1 / holders)
        try:
            spawned = await asyncio.gather(
                *(self._spawn(slot, 1 / holders) for slot in self._slots), return_exceptions=True
            )
            for slot, error in zip(self._slots, spawned, strict=True):
                if isinstance(error, BaseException):
                    raise ClusterError(f"cluster: worker {slot.index} could not start: {_reason(error)}")
        except BaseException:  # the workers that did start stop, and a local cluster with them
            await self.aclose()
            raise
        self._tasks.update(
            {
                asyncio.create_task(self._sync(), name="cluster-spend"),
                asyncio.create_task(self._rebalance(), name="cluster-leases"),
            }
        )
        log.info(
            "cluster_started",
            workers=len(self._slots),
            local=self._local,
            seconds=round(time.monotonic() - started, 2),
        )

    def screen_with(self, dedup: RunDedup) -> None:
        """The run's dedup, which screens the workers' scripts (against its one index)."""
        self._dedup = dedup

    def embedders(self) -> dict[str, Embedder]:
        """Each dedup kind's local model, run on the workers for the driver (`WorkerEmbedder`)."""
        return {kind: WorkerEmbedder(self, kind, local_name(model)) for kind, model in MODEL_FOR_KIND.items()}

    async def embed(self, kind: str, texts: list[str]) -> np.ndarray:
        """`texts` embedded with `kind`'s local model by the least loaded worker."""
        lost = connect.ray_module().exceptions.RayActorError
        while True:
            slot = await self._least_loaded()
            try:
                return await slot.actor.embed.remote(kind, texts)
            except lost:  # the pump hears of it too and replaces the worker: ask another
                await asyncio.sleep(EMBED_RETRY_S)

    def samples_on_workers(self) -> int:
        """Samples in the workers' queues, as they last reported (not those on their way)."""
        return sum(slot.state.samples for slot in self._slots if slot.alive and slot.state is not None)

    def in_stages(self) -> dict[str, int]:
        """Samples in each stage, summed over the workers' last reports."""
        stages: Counter[str] = Counter()
        for slot in self._slots:
            if slot.alive and slot.state is not None:
                stages.update(slot.state.stages)
        return dict(stages)

    async def walk(self, job: SampleJob) -> str | None:
        """The driver's stage: the sample on a worker, until it comes back finished."""
        loop = asyncio.get_running_loop()
        while True:
            if self._fatal is not None:
                raise self._fatal
            slot = await self._least_loaded()
            structlog.contextvars.bind_contextvars(worker=slot.index)  # this sample's task: its log lines
            future: asyncio.Future[tuple[SampleJob, BaseException | None]] = loop.create_future()
            slot.pending[job.id] = (job, future)
            try:
                self._hand(slot, job)
                done, error = await future
            except WorkerLost:
                continue
            finally:
                if slot.pending.get(job.id, (None, future))[1] is future:
                    slot.pending.pop(job.id, None)
            vars(job).update(vars(done))  # the queue and the recorder hold this object
            if error is not None:
                raise error
            return None

    def _hand(self, slot: _Slot, job: SampleJob) -> None:
        """Give the worker this sample with the next ones admitted in the same turn of the event
        loop (one call for them all)."""
        if not slot.handing:
            asyncio.get_running_loop().call_soon(self._hand_over, slot)
        slot.handing.append((job, self._store.responses_of(job.id)))

    def _hand_over(self, slot: _Slot) -> None:
        if not self._handed_any:  # the keys as learned so far (the persona expansion's) go first
            self._handed_any = True
            self._divide_leases()
        jobs, slot.handing = slot.handing, []
        if slot.alive and jobs:
            self._tell(slot.actor.take.remote(jobs))

    @property
    def alive(self) -> int:
        return sum(slot.alive for slot in self._slots)

    def loads(self, endpoints: Sequence[str]) -> list[SummedLoad]:
        return [SummedLoad(self, endpoint) for endpoint in endpoints]

    def limiter_states(self, endpoint: str) -> list[LimiterState]:
        """The workers' limiters of one endpoint, as last reported."""
        return [
            slot.state.limiters[endpoint]
            for slot in self._slots
            if slot.alive and slot.state is not None and endpoint in slot.state.limiters
        ]

    def limiter_state(self, endpoint: str) -> LimiterState:
        """One endpoint's limiters summed over the workers (what the whole key is doing)."""
        states = self.limiter_states(endpoint)
        return LimiterState(
            in_flight=sum(s.in_flight for s in states),
            concurrency=sum(s.concurrency for s in states),
            remaining_requests=_total([s.remaining_requests for s in states]),
            remaining_tokens=_total([s.remaining_tokens for s in states]),
            cooldown_s=max((s.cooldown_s for s in states), default=0.0),
            rpm=_total([s.rpm for s in states]),
            tpm=_total([s.tpm for s in states]),
            waiting=sum(s.waiting for s in states),
            cap=_total([s.cap for s in states]),
        )

    def figures(self) -> list[WorkerFigures]:
        return [
            WorkerFigures(
                worker=str(slot.index),
                up=slot.alive,
                samples_in_flight=len(slot.pending),
                requests_in_flight=sum(s.in_flight for s in slot.state.limiters.values())
                if slot.state
                else 0,
                cpu_seconds=slot.cpu_before_s + (slot.state.cpu_s if slot.state else 0.0),
                answers=slot.answers,
                samples_finished=slot.finished,
                restarts=slot.restarts,
            )
            for slot in self._slots
        ]

    def summary(self) -> dict[str, Any]:
        figures = self.figures()
        return {
            "workers": len(self._slots),
            "cluster": "local" if self._local else "joined",
            "workers_replaced": sum(f.restarts for f in figures),
            "answers_sent_again": self.sent_again,
            "worker_cpu_s": [round(f.cpu_seconds, 2) for f in figures],
            "samples_by_worker": [f.samples_finished for f in figures],
        }

    def stop_sending(self) -> None:
        """Answers already sent finish and are reported; nothing new is sent."""
        for slot in self._slots:
            if slot.alive:
                self._tell(slot.actor.stop_sending.remote())

    async def aclose(self) -> None:
        """Stop the workers (the samples still on them stay unfinished in the store) and leave
        the cluster."""
        self._closing = True
        try:
            live = [slot for slot in self._slots if slot.alive]
            finals = await asyncio.gather(
                *(asyncio.wait_for(slot.actor.aclose.remote(), CLOSE_S) for slot in live),
                return_exceptions=True,
            )
            # a closed worker's stream ends: the reports still on their way are applied first
            pumps = {slot.pump for slot in self._slots if slot.pump is not None}
            if pumps:
                await asyncio.wait(pumps, timeout=DRAIN_S)
            for slot, final in zip(live, finals, strict=True):
                if isinstance(final, Report):  # answers that came after the last report: stored too
                    self._apply(slot, final)
        finally:  # even when the store failed: no worker, no local cluster outlives the run
            tasks = [*self._tasks, *(slot.pump for slot in self._slots if slot.pump is not None)]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            ray = connect.ray_module()
            for slot in self._slots:
                if slot.actor is not None:
                    with contextlib.suppress(Exception):
                        ray.kill(slot.actor)
                slot.alive = False
            await asyncio.to_thread(connect.disconnect)

    # -- the workers ----------------------------------------------------------------------

    async def _spawn(self, slot: _Slot, share: float) -> None:
        """Start the slot's worker holding `share` of every key until the next division."""
        ray = connect.ray_module()
        config = self._config
        options: dict[str, Any] = {"max_restarts": 0, "max_concurrency": 100_000}
        if not self._local:  # one worker per node where the cluster has room
            options.update(num_cpus=1, scheduling_strategy="SPREAD")
        remote = ray.remote(SampleWorker).options(**options)
        slot.actor = remote.remote(config, slot.index, len(self._slots), share)
        base_urls, keys = self._start_args
        log_path = Path(config.run.out).resolve() / "workers" / f"worker-{slot.index}.log"
        run_id = self._store.get_meta("run_id") or ""
        waiting = config.cluster.start_timeout_s
        try:
            slot.pid = await asyncio.wait_for(
                slot.actor.start.remote(base_urls, keys, self._budget.spent_usd, str(log_path), run_id),
                waiting,
            )
        except TimeoutError:  # Ray would wait for a place for ever
            raise TimeoutError(
                f"not started within {waiting:g} s: the cluster has no free CPU for it (each worker "
                "asks for one; `ray status` shows what is free) or its node is slow to start it "
                "(cluster.start_timeout_s waits longer)"
            ) from None
        slot.state = None
        slot.alive = True
        slot.pump = asyncio.create_task(self._pump(slot), name=f"worker-{slot.index}")
        self._changed.set()

    async def _pump(self, slot: _Slot) -> None:
        """Apply the worker's reports as they come, until its stream ends: the worker is lost
        then, whether the stream failed or (which a live worker's never does) just ended."""
        lost: BaseException = WorkerLost("its stream of reports ended")
        try:
            async for ref in slot.actor.reports.options(num_returns="streaming").remote():
                self._apply(slot, await ref)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            lost = exc
        if self._fatal is None and not self._closing:
            await self._lost(slot, lost)

    def _apply(self, slot: _Slot, report: Report) -> None:
        try:
            if report.answers:
                slot.answers += len(report.answers)
                self.sent_again += self._store.put_responses(report.answers)
            for event in report.events:
                for sink in self._sinks:
                    sink(event)
            for sample_id, judgement in report.judged:
                entry = slot.pending.get(sample_id)
                if entry is not None:
                    self._recorder.judged(entry[0], judgement)
        except Exception as exc:  # the store failed (a full disk): the run stops, resumable
            self._fail(exc)
            raise
        if report.screens:
            self._spawn_task(self._screen(slot, report.screens))
        for job, error in report.finished:
            entry = slot.pending.get(job.id)
            if entry is not None and not entry[1].done():
                entry[1].set_result((job, error))
            slot.finished += 1
        if report.state is not None:
            slot.state = report.state
        self._changed.set()

    async def _screen(self, slot: _Slot, screens: list[tuple[int, Candidate]]) -> None:
        """The worker's scripts against the run's index (screened together), and the verdicts
        back to it; none to a replacement started meanwhile, whose tickets number its own."""
        assert self._dedup is not None
        actor = slot.actor
        verdicts = await asyncio.gather(
            *(self._dedup.screen_script(candidate) for _, candidate in screens), return_exceptions=True
        )
        tickets = [ticket for ticket, _ in screens]
        answers = [(ticket, _shipped(verdict)) for ticket, verdict in zip(tickets, verdicts, strict=True)]
        if slot.alive and slot.actor is actor:
            self._tell(actor.verdicts.remote(answers))

    async def _lost(self, slot: _Slot, exc: BaseException) -> None:
        """The worker is gone: its samples go back to `walk` (another worker takes each, with
        its stored answers), and a replacement starts in its place."""
        slot.alive = False
        lost = list(slot.pending.values())
        slot.pending.clear()
        slot.handing.clear()
        slot.cpu_before_s += slot.state.cpu_s if slot.state else 0.0
        slot.state = None
        for _, future in lost:
            if not future.done():
                future.set_exception(WorkerLost(str(exc)))
        reason = _reason(exc)
        log.warning("worker_lost", worker=slot.index, pid=slot.pid, samples=len(lost), error=reason)
        if slot.restarts >= MAX_REPLACEMENTS:
            self._fail(
                ClusterError(
                    f"cluster: worker {slot.index} was lost {slot.restarts + 1} times (last: {reason}); "
                    "the run stopped; run the same command to resume"
                )
            )
            return
        slot.restarts += 1
        self._notice(f"worker {slot.index} lost ({reason}): its {len(lost)} samples go to the other workers")
        with contextlib.suppress(Exception):
            connect.ray_module().kill(slot.actor)
        try:
            await self._spawn(slot, REPLACEMENT_SHARE)  # the others hold the keys until the next division
        except Exception as error:
            self._fail(ClusterError(f"cluster: worker {slot.index} could not be replaced: {error}"))

    def _fail(self, exc: BaseException) -> None:
        """Stop the run: every sample waiting on a worker hears why."""
        if self._fatal is None:
            self._fatal = exc
        for slot in self._slots:
            for _, future in slot.pending.values():
                if not future.done():
                    future.set_exception(exc)
        self._changed.set()

    async def _least_loaded(self) -> _Slot:
        while True:
            if self._fatal is not None:
                raise self._fatal
            live = [slot for slot in self._slots if slot.alive]
            if live:
                return min(live, key=lambda slot: len(slot.pending))
            self._changed.clear()
            await self._changed.wait()

    async def _sync(self) -> None:
        """Tell the workers the run's spend (a budget is the whole run's)."""
        if self._budget.limit_usd is None:
            return
        while True:
            await asyncio.sleep(SYNC_S)
            for slot in self._slots:
                if slot.alive:
                    self._tell(slot.actor.sync.remote(self._budget.spent_usd))

    async def _rebalance(self) -> None:
        while True:
            await asyncio.sleep(REBALANCE_S)
            self._divide_leases()

    def _divide_leases(self) -> None:
        """Divide each key among the driver and the live workers by what each uses
        (`leases.LeaseBoard`); the driver's limiters change at once, the workers' when told."""
        holders = {DRIVER: {key: limiter.state() for key, limiter in self._own_limiters.items()}}
        holders |= {str(s.index): s.state.limiters for s in self._slots if s.alive and s.state is not None}
        leases = self._board.divide(holders)
        for key, lease in leases.pop(DRIVER, {}).items():
            self._own_limiters[key].set_shares(*lease)
        for slot in self._slots:
            if slot.alive and str(slot.index) in leases:
                self._tell(slot.actor.lease.remote(leases[str(slot.index)]))

    def _tell(self, ref: Any) -> None:
        """A call whose answer is not needed: its failure (a dead worker) is the pump's news."""

        async def settle() -> None:
            with contextlib.suppress(Exception):
                await ref

        self._spawn_task(settle())

    def _spawn_task(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _shipped(verdict: Verdict | BaseException | None) -> Verdict | BaseException | None:
    """A verdict as it goes back to the worker: without the vector (the worker has it), and an
    error as the worker can receive it (else the worker would wait for the verdict forever)."""
    if isinstance(verdict, Verdict):
        return replace(verdict, vector=None)
    return portable(verdict) if isinstance(verdict, BaseException) else None


def _reason(exc: BaseException) -> str:
    """Why a worker failed, in one line: its own error (which Ray wraps in one whose first line
    names the actor), else the first line of Ray's."""
    for _ in range(3):  # an actor that died in its creation: its error, in a task error
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException):
            break
        exc = cause
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _total(values: Sequence[float | int | None]) -> Any:
    present = [value for value in values if value is not None]
    return sum(present) if present else None
