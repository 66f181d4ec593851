"""One cluster worker, run by Ray as an actor (`service/cluster`): it walks the samples the
driver gives it through the sample stages, with its own LLM clients (1/K of each endpoint's
limits), and reports back, every `FLUSH_S`, what happened (`protocol.Report`).

What a worker holds is only what it is working on: the samples it was given and the answers
stored for them (`ShippedCache`, replayed instead of asked). Everything it produces goes to
the driver, which stores it; a worker that dies loses at most its last report.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import structlog

from dedup.embedder import Embedder
from dedup.near import Verdict
from llm import Answer, Budget, RequestEvent, RequestFailed, log_failures, redact
from llm.limiter import raise_open_file_limit
from pipeline import registry
from pipeline.job import SampleJob
from pipeline.judgement import Judgement
from pipeline.registry import StageContext
from service import logs
from service.cluster.leases import Lease
from service.cluster.protocol import Report, WorkerState, portable
from service.config import Config
from service.dedup import build_embedders, script_candidate
from service.endpoints import EndpointPool
from service.stages import sample_stage_specs, stage_settings
from service.store import working_on
from workers.queue import JobQueue

log = structlog.get_logger()
FLUSH_S = 0.05  # a report at most this often while there is news
IDLE_REPORT_S = 0.5  # and this often without (the driver's view of the worker's load)


class ShippedCache:
    """The worker's `AnswerCache`: the answers stored for the samples it holds (sent with each
    sample), and every new answer, which also goes into the next report."""

    def __init__(self, report: Callable[[str, Answer, str | None], None]) -> None:
        self._report = report
        self._answers: dict[str, Answer] = {}
        self._keys_of: defaultdict[str, list[str]] = defaultdict(list)  # by sample

    def hold(self, sample_id: str, answers: dict[str, Answer]) -> None:
        self._answers.update(answers)
        self._keys_of[sample_id].extend(answers)

    def release(self, sample_id: str) -> None:
        for key in self._keys_of.pop(sample_id, ()):
            self._answers.pop(key, None)

    def get(self, key: str) -> Answer | None:
        return self._answers.get(key)

    def put(self, key: str, answer: Answer) -> None:
        sample_id = working_on.get()
        self._answers[key] = answer
        if sample_id is not None:
            self._keys_of[sample_id].append(key)
        self._report(key, answer, sample_id)


class SampleWorker:
    def __init__(self, config: Config, index: int, workers: int, share: float) -> None:
        """Worker `index` of `workers`, holding `share` of every key it uses until it is given
        a lease (`lease`), and 1/`workers` of each endpoint's concurrency ceiling."""
        self._config = config
        self._index = index
        self._workers = workers
        self._share = share
        self._report = Report()
        self._cache = ShippedCache(
            lambda key, answer, sample: self._report.answers.append((key, answer, sample))
        )
        self._budget = Budget(config.run.max_cost_usd)
        self._incoming: asyncio.Queue[SampleJob] = asyncio.Queue()
        self._screens: dict[int, asyncio.Future[Verdict | None]] = {}
        self._tickets = itertools.count()
        self._endpoints: EndpointPool | None = None
        self._embedders: dict[str, Embedder] = {}
        self._queue: JobQueue[SampleJob] | None = None
        self._walking: asyncio.Task[bool] | None = None

    async def start(
        self, base_urls: dict[str, str], keys: dict[str, str], spent_usd: float, log_path: str, run_id: str
    ) -> int:
        """Take the API keys (from the driver's environment, never logged), the endpoints the
        driver started, and begin; returns this process's id."""
        raise_open_file_limit()  # a request in flight is a connection
        os.environ.update(keys)
        redact.configure(list(keys.values()))
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        logs.configure(Path(log_path), run_id)
        structlog.contextvars.bind_contextvars(worker=self._index)
        config = self._config
        self._budget.spent_usd = spent_usd
        self._endpoints = EndpointPool(
            config,
            Path(config.run.out),
            self._cache,
            (self._event, self._budget, log_failures),
            self._budget,
            None,
            started=base_urls,
            limit_share=1 / self._workers,  # of each endpoint's concurrency ceiling (memory)
        )
        await self._endpoints.start()
        self._embedders = build_embedders(config, self._endpoints.embedding_client())
        await self.lease(dict.fromkeys(self._endpoints.leased_limiters(), Lease(self._share, self._share)))
        context = StageContext(
            settings=stage_settings(config),
            llm=self._endpoints.chain,
            refinement=config.run.refinement_data,
            duplicate_script=self._script_duplicate,
            judged=self._judged,
        )
        self._queue = JobQueue(
            sample_stage_specs(config, context),
            on_finished=self._finished,
            on_error=self._errored,
            max_in_flight=config.run.max_in_flight,
        )
        self._walking = asyncio.create_task(
            self._queue.run(registry.FIRST_STAGE, self._jobs(), lambda _: True)
        )
        log.info("worker_started", worker=self._index, share=self._share, pid=os.getpid())
        return os.getpid()

    async def take(self, jobs: list[tuple[SampleJob, dict[str, Answer]]]) -> None:
        """Samples to walk, each with the answers stored for it (replayed, not asked again)."""
        for job, answers in jobs:
            self._cache.hold(job.id, answers)
            self._incoming.put_nowait(job)

    async def reports(self) -> AsyncIterator[Report]:
        """What happened since the last report, every `FLUSH_S` while there is news, else every
        `IDLE_REPORT_S` (measured: reporting sooner after a script to screen or a finished
        sample cost the driver more CPU than the samples gained)."""
        last = 0.0
        while True:
            await asyncio.sleep(FLUSH_S)
            if self._walking is not None and self._walking.done():  # a fatal error: the driver hears it
                self._walking.result()
            now = time.monotonic()
            if not self._report and now - last < IDLE_REPORT_S:
                continue
            report, self._report = self._report, Report()
            report.state = self._state()
            last = now
            yield report

    async def verdicts(self, verdicts: list[tuple[int, Verdict | BaseException | None]]) -> None:
        """The driver's verdicts on the scripts this worker sent."""
        for ticket, verdict in verdicts:
            future = self._screens.pop(ticket, None)
            if future is None or future.done():
                continue
            if isinstance(verdict, BaseException):
                future.set_exception(verdict)
            else:
                future.set_result(verdict)

    async def sync(self, spent_usd: float) -> None:
        """The whole run's spend, as the driver knows it (the budget is the run's)."""
        self._budget.spent_usd = max(self._budget.spent_usd, spent_usd)

    async def embed(self, kind: str, texts: list[str]) -> np.ndarray:
        """Texts embedded with `kind`'s model, for the driver (its persona dedup)."""
        return await self._embedders[kind].embed(texts)

    async def lease(self, leases: dict[str, Lease]) -> None:
        """This worker's new part of each key it uses (`leases.LeaseBoard`)."""
        assert self._endpoints is not None
        limiters = self._endpoints.leased_limiters()
        for key, lease in leases.items():
            if key in limiters:
                limiters[key].set_shares(*lease)

    async def stop_sending(self) -> None:
        """A graceful stop: requests already sent finish and are reported; nothing new is sent."""
        if self._endpoints is not None:
            self._endpoints.stop_sending()

    async def aclose(self) -> Report:
        """Stop: the samples still walking end here (their requests are cancelled); returns what
        happened since the last report (the answers that came meanwhile, for the store)."""
        if self._walking is not None:
            self._walking.cancel()
            with contextlib.suppress(BaseException):
                await self._walking
        async with contextlib.AsyncExitStack() as closing:
            if self._endpoints is not None:
                closing.push_async_callback(self._endpoints.aclose)
            for embedder in {
                id(e): e for e in self._embedders.values()
            }.values():  # an endpoint's serves both
                closing.push_async_callback(embedder.aclose)
        report, self._report = self._report, Report()
        return report

    def _event(self, event: RequestEvent) -> None:
        self._report.events.append(event)

    async def _jobs(self) -> AsyncIterator[SampleJob]:
        while True:
            yield await self._incoming.get()

    async def _script_duplicate(self, job: SampleJob) -> Verdict | None:
        """Embed the script here; the driver screens it against the run's one index."""
        candidate = script_candidate(job)
        vector = (await self._embedders["script"].embed([candidate.text]))[0]
        ticket = next(self._tickets)
        future: asyncio.Future[Verdict | None] = asyncio.get_running_loop().create_future()
        self._screens[ticket] = future
        self._report.screens.append((ticket, replace(candidate, vector=vector)))
        return await future

    def _judged(self, job: SampleJob, judgement: Judgement) -> None:
        self._report.judged.append((job.id, judgement))

    def _finished(self, job: SampleJob) -> None:
        self._report_finished(job, None)

    def _errored(self, job: SampleJob, exc: BaseException) -> None:
        if not isinstance(exc, RequestFailed):
            log.info("sample_stopped", sample_id=job.id, error=repr(exc))
        self._report_finished(job, portable(exc))

    def _report_finished(self, job: SampleJob, error: BaseException | None) -> None:
        self._cache.release(job.id)
        job.actions = ()  # compiled from the script, for the stages only: not worth shipping
        self._report.finished.append((job, error))

    def _state(self) -> WorkerState:
        assert self._endpoints is not None and self._queue is not None
        return WorkerState(
            samples=self._queue.in_flight,
            stages=self._queue.in_stages(),
            limiters={key: limiter.state() for key, limiter in self._endpoints.leased_limiters().items()},
            cpu_s=time.process_time(),
        )
