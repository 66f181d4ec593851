"""One run, wired: run directory, store, endpoints, stages, job queue, output, summary.

The path of a sample: `Admission` (persona -> SampleJob) -> `ScriptStage` (S1–S7) ->
`TrajectoryStage` (T1–T8, continue or regenerate) -> `Run._finished` (accept into the
store, then append to the shard; or reject) — each step in its own module.

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

Observability is wired here too: the run's `RunMetrics` (served on `/metrics` while the
run lives, written to `metrics.prom` at the end), the `Budget` that stops the run at
`run.max_cost_usd`, and the end-of-run report (`report.md`, `report/*.png`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import structlog

from dedup.embedder import Embedder
from llm import (
    Budget,
    BudgetExhausted,
    EndpointChain,
    EndpointDown,
    FatalEndpointError,
    LLMClient,
    RequestFailed,
    RequestTally,
    SendingStopped,
    cost_usd,
    log_failures,
    parse_usage,
    redact,
)
from llm.limiter import EndpointLimiter
from metrics.prometheus import RunMetrics
from metrics.report import write_report
from metrics.server import MetricsServer
from metrics.stats import RunStats
from service import logs, resume, rundir
from service.admission import Admission
from service.card import write_card
from service.config import LOCAL_EMBEDDER, Config, ConfigError, Endpoint, Stage
from service.dedup import RunDedup, build_embedders
from service.embedded import EmbeddedEndpoint
from service.export import OutputWriter, accepted_record, rejected_record
from service.flight import FlightRecorder, InFlight
from service.floor import AcceptanceFloor
from service.heap import HeapTrimmer
from service.pacing import endpoints_want_more, needed_for_target
from service.personas import SourceItem, check_persona_file, file_source, seed_personas
from service.progress import Progress
from service.queue import JobQueue, StageSpec
from service.store import Store, StoreCache, working_on
from service.summary import build_summary, shortfall
from workers.personas import PersonaExpander
from workers.sample import SampleJob
from workers.script import ScriptStage
from workers.trajectory import TrajectoryStage

log = structlog.get_logger()
INTERRUPTED = "interrupted (run the same command to resume)"


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
        self.stats = RunStats(target=config.run.n)
        self.requests = RequestTally()  # this process's requests, from the clients' events
        self._budget = Budget(config.run.max_cost_usd)  # the spend of the whole run
        self.metrics = RunMetrics(self.stats, self._budget)
        self._store: Store | None = None
        self._writer: OutputWriter | None = None
        self._queue: JobQueue[SampleJob] | None = None
        self._embedded: list[EmbeddedEndpoint] = []
        self._clients: dict[str, LLMClient] = {}
        self.stop_signal: int | None = None  # the first SIGINT/SIGTERM received
        self._grace_timer: asyncio.TimerHandle | None = None
        self._base_urls: dict[str, str] = {}
        self._embedders: dict[str, Embedder] = {}
        self._dedup: RunDedup | None = None
        self._sample_limiters: list[EndpointLimiter] = []  # those of the script and trajectory stages
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
            self._load_counts(store)
            server = await self._serve_metrics()
            try:
                self.ending = await self._until_done()
            finally:
                if server is not None:
                    await server.stop()
            writer.flush()
            summary = build_summary(store, self.stats, self.requests, self.config, self.ending.reason)
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
        if self.stats.accepted >= self.config.run.n:
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
        for client in self._clients.values():
            client.stop_sending()
        if self._queue is not None:
            self._queue.close()

    def _stop_now(self) -> None:
        if self._queue is not None:
            self._queue.stop()

    async def _generate(self) -> Ending:
        assert self._store is not None
        config = self.config
        try:
            await self._connect()
            self._embedders = build_embedders(config, self._embedding_client())
            dedup = self._dedup = RunDedup(config, self._store, self._embedders)
            script_client = self._chain(config.stages.script)
            trajectory_client = self._chain(config.stages.trajectory)
            queue = self._queue = JobQueue(
                [
                    StageSpec(
                        "script",
                        _in_log_context(
                            "script", ScriptStage(script_client, config.stages.script, dedup.script_duplicate)
                        ),
                        config.stages.script.concurrency,  # a cap if set; the limiters are the gates
                    ),
                    StageSpec(
                        "trajectory",
                        _in_log_context(
                            "trajectory",
                            TrajectoryStage(
                                trajectory_client,
                                config.stages.trajectory,
                                config.stages.script.attempts,
                                config.run.refinement_data,
                            ),
                        ),
                        config.stages.trajectory.concurrency,
                    ),
                ],
                on_finished=self._finished,
                on_error=self._errored,
                max_in_flight=config.run.max_in_flight,
            )
            admission = Admission(
                self._store,
                self.stats,
                config.run.seed,
                config.personas.strict,
                self._input_rejected,
                dedup.personas,
                config.dedup.batch_size,
            )
            self._sample_limiters = [c.limiter for c in {*script_client.clients, *trajectory_client.clients}]
            self.metrics.watch_queue(queue.in_stages, lambda: queue.in_flight)
            progress = Progress(
                self.stats, self.requests, self._budget, self._in_flight, config.run.progress_interval_s
            )
            progress.start()
            flight = FlightRecorder(self._in_flight, self.stats)
            flight.start()
            heap = HeapTrimmer()
            heap.start()
            if self.stop_signal is not None:  # a signal during start-up
                self._drain()
            try:
                jobs = self._admitted(admission.jobs(self._source()))
                exhausted = await queue.run("script", jobs, self._may_admit)
            finally:
                await heap.stop()
                await flight.stop()
                await progress.stop()
        finally:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            await self._disconnect()
        if self.stats.accepted >= config.run.n:
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

    async def _admitted(self, jobs: AsyncIterator[SampleJob]) -> AsyncIterator[SampleJob]:
        """Count admitted samples; end the source (in-flight samples finish) when the budget is
        reached while it asks for personas."""
        try:
            async with contextlib.aclosing(jobs) as admitted:
                async for job in admitted:
                    self.metrics.sample_admitted()
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
        stage = self.config.stages.personas
        expander = PersonaExpander(self._chain(stage), stage, personas.expand_count, seed_personas())
        return expander.personas

    def _chain(self, stage: Stage) -> EndpointChain:
        """The stage's endpoint clients: the primary, then its fallbacks."""
        return EndpointChain([self._clients[ep.name] for ep in self.config.endpoints_for(stage)])

    async def _connect(self) -> None:
        assert self._store is not None
        stage_names: dict[str, list[str]] = {}
        for stage_name, stage in self.config.stages_in_use().items():
            for endpoint in self.config.endpoints_for(stage):
                stage_names.setdefault(endpoint.name, []).append(stage_name)
        for name, endpoint in self.config.endpoints_in_use().items():
            base_url = endpoint.base_url
            if endpoint.embedded is not None:
                embedded = EmbeddedEndpoint(name, endpoint.embedded, self.out / f"endpoint-{name}.log")
                self._embedded.append(embedded)
                base_url = await embedded.start()
            assert base_url is not None
            self._base_urls[name] = base_url
            if name in stage_names:  # not the endpoint that only serves dedup embeddings
                client = self._client(endpoint, base_url)
                self._clients[name] = client
                self.metrics.add_endpoint(name, endpoint.model, stage_names[name], client.limiter.state)
            log.info("endpoint_ready", endpoint=name, model=endpoint.model, base_url=base_url)

    def _client(self, endpoint: Endpoint, base_url: str) -> LLMClient:
        """A client of the run: answers in the store, events to the metrics, the tally, the
        budget and the log, each request cleared with the budget."""
        assert self._store is not None
        cache = StoreCache(self._store)
        return LLMClient(
            endpoint,
            base_url,
            cache=cache,
            sinks=(self.metrics.request, self.requests, self._budget, log_failures),
            budget=self._budget,
            legacy_keys=cache.legacy_keys,
        )

    def _embedding_client(self) -> LLMClient | None:
        """The dedup embedder's client (its own, for the embedding model: its limits and
        prices are not the chat model's), or None with the local embedders."""
        settings = self.config.dedup
        if settings.embedder == LOCAL_EMBEDDER:
            return None
        endpoint = replace(
            self.config.endpoints[settings.embedder], model=settings.model, price=settings.price
        )
        return self._client(endpoint, self._base_urls[settings.embedder])

    async def _disconnect(self) -> None:
        if self._dedup is not None:
            await self._dedup.aclose()
        for embedder in {id(embedder): embedder for embedder in self._embedders.values()}.values():
            await embedder.aclose()  # an endpoint embedder serves both kinds: closed once
        for client in self._clients.values():
            await client.aclose()
        for embedded in self._embedded:
            await embedded.stop()

    def _may_admit(self, in_flight: int) -> bool:
        """Admit while the endpoints could take more work and the rest of the target needs it
        (`service.pacing`), and nothing once the budget is reached."""
        if self._budget.exhausted:  # the samples in flight finish or pause; then the run ends
            assert self._queue is not None
            self._queue.close()
            return False
        return in_flight < needed_for_target(self.stats) and endpoints_want_more(
            self._sample_limiters, in_flight
        )

    def _in_flight(self) -> InFlight:
        limiters = [client.limiter for client in self._clients.values()]
        return InFlight(
            self._queue.in_flight if self._queue is not None else 0,
            sum(limiter.in_flight for limiter in limiters),
            sum(limiter.waiting for limiter in limiters),
        )

    def _finished(self, job: SampleJob) -> None:
        assert self._store is not None and self._writer is not None and self._queue is not None
        for attempt in job.history:
            if attempt["rule"]:
                self.stats.check_failures[attempt["rule"]] += 1
                self.metrics.check_failed(attempt["stage"], attempt["rule"])
        if job.duplicate is not None:
            self._reject(job, "duplicate", "script_duplicate")
            self.stats.duplicates["script"] += 1
            return
        if job.trajectory is None:
            self._reject(job, "dropped", job.last_failure.rule if job.last_failure else "dropped")
            self.stats.dropped += 1
            return
        record = accepted_record(job, self.config.run.sharegpt, self.config.run.refinement_data)
        self._settled(job.id, True, "accepted")
        if self._store.accept(job.id, record, job.failed_checks, self.config.run.n) is None:
            self.metrics.sample_finished("surplus")
            return
        self.metrics.sample_finished("accepted")
        self._writer.append(record)
        log.info("sample_accepted", sample_id=job.id, requests=job.requests, cost_usd=round(job.cost_usd, 6))
        self.stats.accepted += 1
        self.stats.accepted_this_run += 1
        if self.stats.accepted >= self.config.run.n:
            self._queue.stop()

    def _errored(self, job: SampleJob, exc: BaseException) -> None:
        """The endpoint gave up on this sample: record it as failed. A graceful stop leaves it
        unfinished. Anything else (a refused configuration, an endpoint down, a bug) stops the
        run; the sample stays resumable in the store. A sample stopped by the budget also stays
        resumable, and the run ends when none is in flight."""
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
        job.error = redact.redact(str(exc))
        self._reject(job, "failed", "failed")
        self.stats.failed += 1

    def _reject(self, job: SampleJob, kind: str, rule: str) -> None:
        assert self._store is not None
        record = rejected_record(job, kind)
        self._store.reject_sample(job.id, kind, rule, job.failed_checks, record)
        log.info(
            f"sample_{kind}", sample_id=job.id, rule=rule, message=record["message"], requests=job.requests
        )
        self._rejected(record)
        self._settled(job.id, False, "script duplicates" if kind == "duplicate" else kind)

    def _input_rejected(self, record: dict[str, Any]) -> None:
        """A persona taken from the source that never became a sample (malformed, duplicate)."""
        self._rejected(record)
        if record["kind"] == "duplicate":
            self._floor.skipped("persona duplicates")
            self._check_floor()

    def _rejected(self, record: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.rejects.append(redact.redact_bytes(orjson.dumps(record)))
        self.metrics.sample_rejected(record)

    def _settled(self, sample_id: str, accepted: bool, outcome: str) -> None:
        self._floor.settled(sample_id, accepted, outcome)
        self._check_floor()

    def _check_floor(self) -> None:
        """Stop taking personas (like a signal: what is in flight finishes and is stored) once
        the recent ones nearly all failed to become accepted samples."""
        if self._dried_up is None and self._floor.tripped():
            self._dried_up = self._floor.message()
            log.warning("acceptance_floor_reached", reason=self._dried_up)
            self._drain()

    def _load_counts(self, store: Store) -> None:
        states = store.state_counts()
        kinds = store.reject_kinds()
        rules = store.reject_counts()
        self.stats.accepted = states.get("accepted", 0)
        self.stats.dropped = states.get("dropped", 0)
        self.stats.failed = states.get("failed", 0)
        for kind in ("persona", "script"):
            self.stats.duplicates[kind] = rules.get(("duplicate", f"{kind}_duplicate"), 0)
        self.stats.malformed = kinds.get("malformed", 0)
        self.stats.check_failures.update(check.split(">")[0] for check in store.finished_checks())
        self._budget.spent_usd = store.spend()


def _in_log_context(
    stage: str, handler: Callable[[SampleJob], Awaitable[str | None]]
) -> Callable[[SampleJob], Awaitable[str | None]]:
    """The stage handler with the sample id and stage bound to every log line it causes, and
    the sample noted with every answer it stores."""

    async def handle(job: SampleJob) -> str | None:
        with structlog.contextvars.bound_contextvars(sample_id=job.id, stage=stage):
            token = working_on.set(job.id)
            try:
                return await handler(job)
            finally:
                working_on.reset(token)

    return handle


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
