"""One run, wired: run directory, store, endpoints, stages, job queue, recorder, summary.

The path of a sample: `Admission` (persona -> SampleJob) -> the sample stages of the
registry (`ScriptStage`: S1–S7, `TrajectoryStage`: T1–T8, continue or regenerate), walked
by the job queue -> `Recorder.finished` (accept into the store, then append to the shard;
or reject) — each step in its own module. This module only wires them and decides when
the run stops.

In batch mode (`run.mode: batch`) the sample stages ask through the provider's Batch API,
round by round (`llm/batch.py`, wired by `service/endpoints.py`): admission then takes every
sample the rest of the target needs at once, so that they share rounds.

Stopping: the target reached ends the run; a first SIGINT/SIGTERM stops admitting and
sending, lets the requests in flight finish (their answers are stored) for at most
`run.stop_grace_s`, then stops; a second signal stops at once. A run can also stop short of
the target: the persona source runs out, or its recent personas nearly all fail to become
samples (`run.acceptance_floor`, `service.floor`); it then drains like a signal. How it
ended is `Run.ending` (the CLI's exit status). Unfinished samples stay in the store and
resume with the same command. Before any work the persona file, the API keys (config), the
run directory's writability and, on resume, that the settings shaping the data are those it
was started with (`service.resume`) are checked. Every file of the run directory is created
with `run.file_mode` (owner only by default: they hold prompts and answers).

Observability is wired here too: the sinks of the LLM clients' events (the run's
`RunMetrics`, served on `/metrics` while the run lives and written to `metrics.prom` at the
end; the request tally of the progress line and the summary; the `Budget` that stops the
run at `run.max_cost_usd`; the log), and the end-of-run report (`report.md`, `report/*.png`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from dedup.embedder import Embedder
from llm import (
    Budget,
    BudgetExhausted,
    EndpointDown,
    FatalEndpointError,
    RequestFailed,
    RequestTally,
    SendingStopped,
    cost_usd,
    log_failures,
    parse_usage,
    redact,
)
from metrics.prometheus import RunMetrics
from metrics.server import MetricsServer
from pipeline import registry
from pipeline.expansion import PersonaExpander
from pipeline.job import SampleJob
from pipeline.judgement import FLAG_KINDS, VERDICTS
from pipeline.registry import StageContext
from pipeline.sources import SourceItem, check_persona_file, file_source, seed_personas
from service import logs, resume, rundir
from service.admission import Admission
from service.batch_plan import batch_plan
from service.card import write_card
from service.cluster.pool import WorkerPool
from service.config import Config, ConfigError
from service.dedup import RunDedup, build_embedders
from service.endpoints import EndpointPool
from service.export import OutputWriter
from service.floor import AcceptanceFloor
from service.heap import HeapTrimmer
from service.progress import Progress
from service.recorder import ExportForm, Recorder, SampleCounts
from service.report import write_report
from service.stages import sample_stage_specs, stage_settings
from service.store import Store, StoreCache
from service.summary import build_summary, shortfall
from workers.flight import FlightRecorder, InFlight
from workers.pacing import EndpointLoad, endpoints_want_more, needed_for_target
from workers.queue import JobQueue, StageSpec

log = structlog.get_logger()
INTERRUPTED = "interrupted (run the same command to resume)"
ON_WORKER = "on_worker"  # a cluster run's one stage: the sample on a Ray worker


@dataclass(frozen=True)
class Ending:
    """How a run ended: `kind` is target, budget, interrupted or short (stopped before the
    target: the source ran out or dried up); `reason` is the summary's result line."""

    kind: str
    reason: str


class Run:
    def __init__(self, config: Config, allow_change: Sequence[str] = ()) -> None:
        self.config = config
        self.allow_change = list(allow_change)
        self.ending = Ending("short", "stopped")
        self.out = Path(config.run.out)
        self.counts = SampleCounts(target=config.run.n)
        self.requests = RequestTally()  # this process's requests, from the clients' events
        self._budget = Budget(config.run.max_cost_usd)  # the spend of the whole run
        self.metrics = RunMetrics(self.counts, self._budget, registry.rules_by_stage())
        self.flight = FlightRecorder(self._in_flight)
        self._store: Store | None = None
        self._writer: OutputWriter | None = None
        self._recorder: Recorder | None = None
        self._queue: JobQueue[SampleJob] | None = None
        self._endpoints: EndpointPool | None = None
        self.stop_signal: int | None = None  # the first SIGINT/SIGTERM received
        self._grace_timer: asyncio.TimerHandle | None = None
        self._embedders: dict[str, Embedder] = {}
        self._dedup: RunDedup | None = None
        self._sample_limiters: Sequence[EndpointLoad] = []  # the sample stages' endpoints
        self._cluster: WorkerPool | None = None  # a cluster run's workers
        self._floor = AcceptanceFloor(config.run.acceptance_floor)
        self._dried_up: str | None = None  # the acceptance floor's line, once it tripped

    async def execute(self) -> dict[str, Any]:
        """Run to the target (or until the source runs dry, or a signal) and return the summary."""
        if self.config.personas.path:
            check_persona_file(self.config.personas.path)
        with rundir.file_mode(self.config.run.file_mode):
            rundir.prepare(self.out, self.config.run.file_mode)
            with rundir.exclusive(self.out / ".lock"):
                try:
                    return await self._execute_locked()
                except sqlite3.Error as exc:
                    raise rundir.storage_error(self.out / "state.sqlite", exc) from None

    async def _execute_locked(self) -> dict[str, Any]:
        store = self._store = Store(self.out / "state.sqlite")
        try:
            redact.configure(self.config.api_keys())
            changes = resume.check(store, self.config, self.out, self.allow_change)
            run_id = store.get_meta("run_id") or uuid.uuid4().hex[:12]
            store.set_meta("run_id", run_id)
            logs.configure(self.out / "run.log", run_id)
            for change in changes:
                _notice(change)
                log.info("settings_changed", change=change)
            store.set_meta("target", str(self.config.run.n))
            store.price_unpriced(self._price)
            writer = self._writer = OutputWriter(self.out, self.config.run.shard_size)
            writer.sync(store)
            if store.promote_surplus(self.config.run.n):
                writer.sync(store)
            self.counts.load(store)
            self._budget.spent_usd = store.spend()
            form = ExportForm(self.config.run.sharegpt, self.config.run.refinement_data)
            self._recorder = Recorder(store, writer, self.metrics, self.counts, form, self._settled)
            server = await self._serve_metrics()
            try:
                self.ending = await self._until_done()
            finally:
                if server is not None:
                    await server.stop()
            writer.flush()
            summary = build_summary(
                store, self.counts, self.requests, self.flight, self.config, self.ending.reason
            )
            if self._cluster is not None:
                summary["cluster"] = self._cluster.summary() | {"driver_cpu_s": round(time.process_time(), 2)}
            rundir.write_atomic(self.out / "summary.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2))
            try:
                self.metrics.write(self.out / "metrics.prom")
            except OSError as exc:
                raise rundir.storage_error(self.out / "metrics.prom", exc) from None
            store.set_meta("license", self.config.run.license)
            write_card(store, self.out, self.config.run.license)
            if self.config.run.report:
                write_report(store, self.out)
            log.info("run_finished", **{k: v for k, v in summary.items() if not isinstance(v, dict)})
            return summary
        finally:
            try:
                if self._writer is not None:
                    self._writer.close()
            finally:
                store.close()

    async def _until_done(self) -> Ending:
        if self.counts.accepted >= self.config.run.n:
            return Ending("target", "target reached")
        if self._budget.exhausted:
            return Ending("budget", self._budget.message())
        return await self._generate()

    async def _serve_metrics(self) -> MetricsServer | None:
        settings = self.config.metrics
        if not settings.enabled:
            return None
        server = MetricsServer(self.metrics.registry, settings.host, settings.port)
        try:
            url = await server.start()
        except OSError as exc:
            raise ConfigError(
                f"metrics: cannot listen on {settings.host}:{settings.port}: {exc.strerror} "
                "(metrics.port=0 picks a free port; metrics.enabled=false turns /metrics off)"
            ) from None
        log.info("metrics_listening", url=url)
        if sys.stderr.isatty():  # beside the progress line; run.log always has it
            print(f"metrics: {url}", file=sys.stderr, flush=True)
        if not _loopback(settings.host):
            log.warning(
                "metrics_exposed",
                message=f"/metrics listens on {settings.host}: any machine that can reach this one can "
                "read the run's metrics (metrics.host: 127.0.0.1 keeps them on this machine)",
            )
        return server

    def _price(self, endpoint: str, usage: dict[str, Any]) -> float:
        """The cost of a usage block at an endpoint's configured price (0 for an unknown endpoint)."""
        known = self.config.endpoints.get(endpoint)
        return cost_usd(parse_usage(usage), known.price) if known else 0.0

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """A first SIGINT/SIGTERM: stop admitting and sending, let the requests in flight finish
        for at most `run.stop_grace_s`, then stop. A second one: stop at once."""
        if self.stop_signal is not None:
            _notice(f"{signal.Signals(signum).name} again: stopping now")
            self._stop_now()
            return
        self.stop_signal = signum
        grace = self.config.run.stop_grace_s
        in_flight = self._queue.in_flight if self._queue is not None else 0
        _notice(
            f"{signal.Signals(signum).name}: stopping; no new requests, waiting up to {grace:g} s for "
            f"the requests of {in_flight} samples in flight (signal again to stop at once)"
        )
        self._grace_timer = asyncio.get_running_loop().call_later(grace, self._stop_now)
        self._drain()

    def _drain(self) -> None:
        """Admit and send nothing new (answers already stored are still replayed)."""
        if self._endpoints is not None:
            self._endpoints.stop_sending()
        if self._cluster is not None:
            self._cluster.stop_sending()
        if self._queue is not None:
            self._queue.close()

    def _stop_now(self) -> None:
        if self._queue is not None:
            self._queue.stop()

    async def _generate(self) -> Ending:
        assert self._store is not None and self._recorder is not None
        config = self.config
        cache = StoreCache(self._store)
        sinks = (self.metrics.request, self.requests, self._budget, log_failures)
        batch = config.run.mode == "batch"
        if batch and config.cluster.workers:
            raise ConfigError(
                "cluster.workers: batch mode (run.mode: batch) runs in one process (the provider "
                "does the work); leave cluster.workers at 0 for it"
            )
        endpoints = self._endpoints = EndpointPool(
            config,
            self.out,
            cache,
            sinks,
            self._budget,
            self.metrics,
            self._store if batch else None,
            legacy_keys=cache.legacy_keys,
        )
        try:
            await endpoints.start()
            embedding = endpoints.embedding_client()
            if config.cluster.workers:
                self._cluster = await self._start_cluster(endpoints)
            self._embedders = (
                self._cluster.embedders()  # embedded on the workers, screened here
                if self._cluster is not None and embedding is None
                else build_embedders(config, embedding)
            )
            dedup = self._dedup = RunDedup(config, self._store, self._embedders)
            context = StageContext(
                settings=stage_settings(config),
                llm=endpoints.chain,
                refinement=config.run.refinement_data,
                duplicate_script=dedup.script_duplicate,
                judged=self._recorder.judged,
            )
            if registry.enabled("judge", context.settings):
                self.metrics.add_judge(FLAG_KINDS, VERDICTS)
            stages, first_stage = self._sample_stages(context, endpoints, dedup)
            queue = self._queue = JobQueue(
                stages,
                on_finished=self._finished,
                on_error=self._errored,
                max_in_flight=config.run.max_in_flight,
            )
            admission = Admission(
                self._store,
                self._recorder,
                config.run.seed,
                config.personas.strict,
                dedup.personas,
                config.dedup.batch_size,
            )
            in_stages = self._cluster.in_stages if self._cluster is not None else queue.in_stages
            self.metrics.watch_queue(in_stages, lambda: queue.in_flight)
            progress = Progress(
                self.counts, self.requests, self._budget, self._in_flight, config.run.progress_interval_s
            )
            if batch:
                _notice(batch_plan(self.config, self.counts, self._store))
            progress.start()
            self.flight.start()
            heap = HeapTrimmer()
            heap.start()
            if self.stop_signal is not None:  # a signal during start-up
                self._drain()
            try:
                jobs = self._admitted(admission.jobs(self._source()))
                exhausted = await queue.run(first_stage, jobs, self._may_admit)
                if self.counts.accepted >= config.run.n and self._endpoints is not None:
                    await self._endpoints.cancel_running_batches()
            finally:
                await heap.stop()
                await self.flight.stop()
                await progress.stop()
        finally:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            await self._disconnect()
        if self.counts.accepted >= config.run.n:
            return Ending("target", "target reached")
        if self._budget.exhausted:
            return Ending("budget", self._budget.message())
        if self.stop_signal is not None:
            return Ending("interrupted", INTERRUPTED)
        if self._dried_up is not None:
            cause = f"the persona source dried up: {self._dried_up}"
            return Ending("short", shortfall(self._store, self.config, cause, dried_up=True))
        cause = "the persona source ran out" if exhausted else "the run stopped"
        return Ending("short", shortfall(self._store, self.config, cause, dried_up=False))

    def _sample_stages(
        self, context: StageContext, endpoints: EndpointPool, dedup: RunDedup
    ) -> tuple[list[StageSpec[SampleJob]], str]:
        """The job queue's stages and the first of them: the sample stages, in this process;
        or, on a cluster, one stage that walks each sample on a Ray worker. Admission reads the
        endpoints' load from their limiters here, or from the workers' reports."""
        names = [stage.name for stage in registry.sample_stages(context.settings)]
        if self._cluster is None:
            self._sample_limiters = endpoints.limiters_of(names)
            return sample_stage_specs(self.config, context), registry.FIRST_STAGE
        self._cluster.screen_with(dedup)
        self._sample_limiters = self._cluster.loads(list(self.config.stages_by_endpoint(names)))
        return [StageSpec(ON_WORKER, self._cluster.walk)], ON_WORKER

    async def _start_cluster(self, endpoints: EndpointPool) -> WorkerPool:
        """The sample stages' workers on a Ray cluster (`cluster.workers`, `service/cluster`),
        started, and watched by the run's metrics (each endpoint's limiters summed over them)."""
        assert self._store is not None and self._recorder is not None
        driver_sinks = (self.metrics.request, self.requests, self._budget)  # the workers log their own
        expansion = [] if self.config.personas.path else ["personas"]  # what the driver asks itself
        pool = WorkerPool(
            self.config,
            self._store,
            self._recorder,
            driver_sinks,
            self._budget,
            _notice,
            endpoints.leased_limiters(expansion),
        )
        await pool.start(endpoints.base_urls)
        install_signal_handlers(self)  # Ray's start put its own in place of ours
        sample_stages = [stage.name for stage in registry.sample_stages(stage_settings(self.config))]
        for name, stage_names in self.config.stages_by_endpoint(sample_stages).items():
            self.metrics.add_endpoint(
                name,
                self.config.endpoints[name].model,
                stage_names,
                functools.partial(pool.limiter_state, name),
            )
        self.metrics.watch_workers(pool.figures)
        return pool

    async def _admitted(self, jobs: AsyncIterator[SampleJob]) -> AsyncIterator[SampleJob]:
        """Count admitted samples; end the source (in-flight samples finish) when the budget is
        reached while it asks for personas."""
        assert self._recorder is not None
        try:
            async with contextlib.aclosing(jobs) as admitted:
                async for job in admitted:
                    self._recorder.admitted(job)
                    self._floor.taken(job.id)
                    yield job
        except BudgetExhausted as exc:
            log.warning("persona_source_stopped", reason=str(exc))

    def _source(self) -> Any:
        personas = self.config.personas
        if personas.path:
            path = personas.path

            def from_file(start_after: int) -> AsyncIterator[SourceItem]:
                return file_source(path, start_after)

            return from_file
        assert self._endpoints is not None
        stage = self.config.stages.personas
        expander = PersonaExpander(
            self._endpoints.chain("personas"), stage, personas.expand_count, seed_personas()
        )
        return expander.personas

    async def _disconnect(self) -> None:
        """Close the dedup check, then the embedders, then the endpoints; each is closed even
        when one before it fails (a full disk while the script check stores its last keys
        must not leave the endpoints' sessions open), and that failure is raised after."""
        async with contextlib.AsyncExitStack() as closing:  # its callbacks run last-pushed first
            if self._endpoints is not None:
                closing.push_async_callback(self._endpoints.aclose)
            for embedder in {id(embedder): embedder for embedder in self._embedders.values()}.values():
                closing.push_async_callback(embedder.aclose)  # an endpoint embedder serves both kinds
            if self._dedup is not None:
                closing.push_async_callback(self._dedup.aclose)
            if self._cluster is not None:  # first: its workers ask the endpoints and the dedup
                closing.push_async_callback(self._cluster.aclose)

    def _may_admit(self, in_flight: int) -> bool:
        """Admit while the endpoints could take more work and the rest of the target needs it
        (`workers.pacing`), and nothing once the budget is reached."""
        if self._budget.exhausted:  # the samples in flight finish or pause; then the run ends
            assert self._queue is not None
            self._queue.close()
            return False
        counts = self.counts
        if self.config.run.mode == "batch":
            # every sample the target needs, in the same rounds; until one is accepted (round 2
            # at best) the samples that finished are only the early drops: no accept rate yet
            finished = counts.finished if counts.accepted else 0
            return in_flight < needed_for_target(counts.target, counts.accepted, finished)
        needed = needed_for_target(counts.target, counts.accepted, counts.finished)
        # on a cluster, our own work is the workers' (samples on their way are not waiting for CPU)
        working = self._cluster.samples_on_workers() if self._cluster is not None else in_flight
        return in_flight < needed and endpoints_want_more(self._sample_limiters, working)

    def _in_flight(self) -> InFlight:
        loads: Sequence[EndpointLoad] = self._sample_limiters
        if self._cluster is None and self._endpoints is not None:
            loads = [client.limiter for client in self._endpoints.clients.values()]
        return InFlight(
            self._queue.in_flight if self._queue is not None else 0,
            sum(load.in_flight for load in loads),
            sum(load.waiting for load in loads),
        )

    def _finished(self, job: SampleJob) -> None:
        assert self._recorder is not None and self._queue is not None
        self._recorder.finished(job)
        if self.counts.accepted >= self.config.run.n:
            self._queue.stop()

    def _errored(self, job: SampleJob, exc: BaseException) -> None:
        """The endpoint gave up on this sample: record it as failed. A graceful stop leaves it
        unfinished. Anything else (a refused configuration, an endpoint down, a bug) stops the
        run; the sample stays resumable in the store. A sample stopped by the budget also stays
        resumable, and the run ends when none is in flight."""
        assert self._recorder is not None
        if isinstance(exc, SendingStopped):
            return
        if isinstance(exc, BudgetExhausted):
            log.info("sample_paused_by_budget", sample_id=job.id)
            assert self._queue is not None
            self._queue.close()  # the run ends when the last sample in flight is done
            return
        if isinstance(exc, FatalEndpointError | EndpointDown | sqlite3.Error | OSError):
            log.info("run_stopped", sample_id=job.id, error=str(exc))  # the CLI prints the line
            raise exc
        if not isinstance(exc, RequestFailed):
            log.error("run_stopped", sample_id=job.id, error=repr(exc), exc_info=exc)
            raise exc
        self._recorder.failed(job, redact.redact(str(exc)))

    def _settled(self, sample_id: str | None, accepted: bool, outcome: str) -> None:
        """What became of a persona taken from the source, for the acceptance floor: stop
        taking personas (like a signal: what is in flight finishes and is stored) once the
        recent ones nearly all failed to become accepted samples."""
        if sample_id is None:
            self._floor.skipped(outcome)
        else:
            self._floor.settled(sample_id, accepted, outcome)
        if self._dried_up is None and self._floor.tripped():
            self._dried_up = self._floor.message()
            log.warning("acceptance_floor_reached", reason=self._dried_up)
            self._drain()


def install_signal_handlers(run: Run) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, run.interrupt, sig)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _notice(text: str) -> None:
    """A line for the person at the terminal (stderr; the progress line is redrawn after it)."""
    print(("\n" if sys.stderr.isatty() else "") + text, file=sys.stderr, flush=True)
