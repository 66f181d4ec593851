"""One run, wired: run directory, store, endpoints, stages, job queue, output, summary.

The path of a sample: `Admission` (persona -> SampleJob) -> `ScriptStage` (S1–S7) ->
`TrajectoryStage` (T1–T8, continue or regenerate) -> `Run._finished` (accept into the
store, then append to the shard; or reject) — each step in its own module.
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import structlog

from metrics.stats import RunStats
from service import logs
from service.admission import Admission
from service.config import Config, Endpoint, Stage
from service.embedded import EmbeddedEndpoint
from service.export import OutputWriter, accepted_record, rejected_record
from service.personas import SourceItem, file_source, seed_personas
from service.progress import Progress
from service.queue import JobQueue, StageSpec
from service.store import Store
from service.summary import build_summary
from workers.fallback import EndpointChain
from workers.llm import LLMClient, RequestFailed
from workers.personas import PersonaExpander
from workers.sample import SampleJob
from workers.script import ScriptStage
from workers.trajectory import TrajectoryStage

log = structlog.get_logger()


class RunDirectoryBusy(Exception):
    """Another process is writing this run directory."""


class Run:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.out = Path(config.run.out)
        self.stats = RunStats(target=config.run.n)
        self._store: Store | None = None
        self._writer: OutputWriter | None = None
        self._queue: JobQueue[SampleJob] | None = None
        self._embedded: list[EmbeddedEndpoint] = []
        self._clients: dict[str, LLMClient] = {}
        self._interrupted = False

    async def execute(self) -> dict[str, Any]:
        """Run to the target (or until the source runs dry, or a signal) and return the summary."""
        self.out.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.out / ".lock"):
            store = self._store = Store(self.out / "state.sqlite")
            try:
                run_id = store.get_meta("run_id") or uuid.uuid4().hex[:12]
                store.set_meta("run_id", run_id)
                logs.configure(self.out / "run.log", run_id)
                writer = self._writer = OutputWriter(self.out, self.config.run.shard_size)
                writer.sync(store)
                if store.promote_surplus(self.config.run.n):
                    writer.sync(store)
                self._load_counts(store)
                reason = (
                    await self._generate() if self.stats.accepted < self.config.run.n else "target reached"
                )
                summary = build_summary(store, self.stats, self.config, reason)
                (self.out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
                log.info("run_finished", **{k: v for k, v in summary.items() if not isinstance(v, dict)})
                return summary
            finally:
                if self._writer is not None:
                    self._writer.close()
                store.close()

    def interrupt(self) -> None:
        """SIGINT/SIGTERM: stop taking work; unfinished samples resume next time."""
        self._interrupted = True
        if self._queue is not None:
            self._queue.stop()

    async def _generate(self) -> str:
        assert self._store is not None
        config = self.config
        try:
            await self._connect()
            script_client = self._chain(config.stages.script)
            trajectory_client = self._chain(config.stages.trajectory)
            queue = self._queue = JobQueue(
                [
                    StageSpec(
                        "script",
                        ScriptStage(script_client, config.stages.script),
                        config.stages.script.concurrency,
                    ),
                    StageSpec(
                        "trajectory",
                        TrajectoryStage(
                            trajectory_client, config.stages.trajectory, config.stages.script.attempts
                        ),
                        config.stages.trajectory.concurrency,
                    ),
                ],
                on_finished=self._finished,
                on_error=self._errored,
                max_in_flight=config.run.max_in_flight,
            )
            admission = Admission(
                self._store, self.stats, config.run.seed, config.personas.strict, self._rejected
            )
            progress = Progress(self.stats, lambda: queue.in_flight, config.run.progress_interval_s)
            progress.start()
            try:
                exhausted = await queue.run("script", admission.jobs(self._source()), self._may_admit)
            finally:
                await progress.stop()
        finally:
            await self._disconnect()
        if self.stats.accepted >= config.run.n:
            return "target reached"
        if self._interrupted:
            return "interrupted (run the same command to resume)"
        return "persona source exhausted before the target" if exhausted else "stopped"

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
        needed: dict[str, Endpoint] = {}
        stages = [self.config.stages.script, self.config.stages.trajectory]
        if not self.config.personas.path:
            stages.append(self.config.stages.personas)
        for stage in stages:
            for endpoint in self.config.endpoints_for(stage):
                needed[endpoint.name] = endpoint
        for name, endpoint in needed.items():
            base_url = endpoint.base_url
            if endpoint.embedded is not None:
                embedded = EmbeddedEndpoint(name, endpoint.embedded, self.out / f"endpoint-{name}.log")
                self._embedded.append(embedded)
                base_url = await embedded.start()
            assert base_url is not None
            self._clients[name] = LLMClient(endpoint, base_url, self._store, self.stats)
            log.info("endpoint_ready", endpoint=name, model=endpoint.model, base_url=base_url)

    async def _disconnect(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        for embedded in self._embedded:
            await embedded.stop()

    def _may_admit(self, in_flight: int) -> bool:
        """Admit only as many samples as the remaining target needs at the observed accept rate."""
        stats = self.stats
        finished = stats.accepted + stats.dropped + stats.failed
        rate = max(0.3, (stats.accepted + 1) / (finished + 1))
        return in_flight < math.ceil((stats.target - stats.accepted) / rate * 1.1) + 1

    def _finished(self, job: SampleJob) -> None:
        assert self._store is not None and self._writer is not None and self._queue is not None
        self.stats.check_failures.update(check.split(">")[0] for check in job.failed_checks)
        if job.trajectory is None:
            self._reject(job, "dropped", job.last_failure.rule if job.last_failure else "dropped")
            self.stats.dropped += 1
            return
        record = accepted_record(job, self.config.run.sharegpt)
        if self._store.accept(job.id, record, job.failed_checks, self.config.run.n) is None:
            return
        self._writer.samples.append(orjson.dumps(record))
        log.info("sample_accepted", sample_id=job.id, requests=job.requests, cost_usd=round(job.cost_usd, 6))
        self.stats.accepted += 1
        self.stats.accepted_this_run += 1
        if self.stats.accepted >= self.config.run.n:
            self._queue.stop()

    def _errored(self, job: SampleJob, exc: BaseException) -> None:
        """The endpoint gave up on this sample: record it as failed. Anything else (a refused
        configuration, a bug) stops the run; the sample stays resumable in the store."""
        if not isinstance(exc, RequestFailed):
            log.error("run_stopped", sample_id=job.id, error=repr(exc), exc_info=exc)
            raise exc
        job.error = str(exc)
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

    def _rejected(self, record: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.rejects.append(orjson.dumps(record))

    def _load_counts(self, store: Store) -> None:
        states = store.state_counts()
        kinds = store.reject_kinds()
        self.stats.accepted = states.get("accepted", 0)
        self.stats.dropped = states.get("dropped", 0)
        self.stats.failed = states.get("failed", 0)
        self.stats.duplicates = kinds.get("duplicate", 0)
        self.stats.malformed = kinds.get("malformed", 0)
        self.stats.check_failures.update(check.split(">")[0] for check in store.finished_checks())


class _exclusive:
    """An exclusive, non-blocking lock on the run directory (one writer per run)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RunDirectoryBusy(
                f"{self._path.parent}: another process is already running this run directory"
            ) from None

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def install_signal_handlers(run: Run) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, run.interrupt)
