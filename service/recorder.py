"""One place that records what became of each sample: the store row, the output lines, the
metrics, the log line and the run's counts, in that order (the store first: it is the source
of truth, and everything else is derived from it or rebuilt on resume).

`Recorder.judged(job, judgement)` stores and counts what the judge stage found (when it is
on); `finished(job)` handles a sample the stages are done with (accepted, surplus,
dropped by a rule, its script a duplicate), `failed(job, message)` one the endpoint gave up
on, and `input_rejected(...)` a persona that never became a sample (a malformed line, a
duplicate persona). Each tells the run how it settled (`on_settled`), for its stopping rule.
`SampleCounts` are the counts the progress line, the pacing, the metrics and the summary
read; they cover the whole run (loaded from the store at start) and this process.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from llm.redact import redact_bytes
from metrics.prometheus import RunMetrics
from pipeline.job import SampleJob
from pipeline.judge import judgement_rows
from pipeline.judgement import FLAG_KINDS, Judgement, verdict
from service.export import OutputWriter, accepted_record, rejected_record
from service.store import Store

log = structlog.get_logger()

# (sample id, or None for a persona that never became a sample; accepted; what became of it)
Settled = Callable[[str | None, bool, str], None]


@dataclass
class SampleCounts:
    """What became of the run's samples and personas."""

    target: int
    started: float = field(default_factory=time.monotonic)
    accepted: int = 0  # the whole run
    accepted_this_run: int = 0  # this process
    dropped: int = 0
    failed: int = 0
    duplicates: Counter[str] = field(default_factory=Counter)  # dedup kind -> duplicates
    malformed: int = 0
    check_failures: Counter[str] = field(default_factory=Counter)  # rule -> failed checks

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def finished(self) -> int:
        """Samples that ended, accepted or not (persona duplicates never became samples)."""
        return self.accepted + self.dropped + self.failed + self.duplicates["script"]

    def projected_cost_usd(self, spent_usd: float) -> float | None:
        """Spend at the target if the rest costs what the run has cost per accepted sample."""
        if not self.accepted:
            return None
        remaining = max(0, self.target - self.accepted)
        return spent_usd + remaining * spent_usd / self.accepted

    def load(self, store: Store) -> None:
        """The counts of what earlier processes of this run finished."""
        states = store.state_counts()
        rules = store.reject_counts()
        self.accepted = states.get("accepted", 0)
        self.dropped = states.get("dropped", 0)
        self.failed = states.get("failed", 0)
        for kind in ("persona", "script"):
            self.duplicates[kind] = rules.get(("duplicate", f"{kind}_duplicate"), 0)
        self.malformed = store.reject_kinds().get("malformed", 0)
        self.check_failures.update(check.split(">")[0] for check in store.finished_checks())


@dataclass(frozen=True)
class ExportForm:
    """How accepted samples are written (`run.sharegpt`, `run.refinement_data`)."""

    sharegpt: bool = False
    refinement_data: bool = True


class Recorder:
    def __init__(
        self,
        store: Store,
        writer: OutputWriter,
        metrics: RunMetrics,
        counts: SampleCounts,
        form: ExportForm,
        on_settled: Settled,
    ) -> None:
        self._store = store
        self._writer = writer
        self._metrics = metrics
        self.counts = counts
        self._form = form
        self._on_settled = on_settled

    def admitted(self, job: SampleJob) -> None:
        self._metrics.sample_admitted()

    def judged(self, job: SampleJob, judgement: Judgement) -> None:
        """The judge stage's verdicts on a sample's DM turns, before the sample finishes:
        stored (a resumed sample's replace them), then counted."""
        self._store.put_judgements(job.id, judgement_rows(judgement))
        for turn in judgement.turns:
            for kind in FLAG_KINDS:
                self._metrics.judged(
                    kind, verdict(turn.dm[kind], None if turn.judge is None else turn.judge[kind])
                )

    def finished(self, job: SampleJob) -> None:
        """A sample the stages are done with: accepted (or surplus, once the target is met),
        dropped by its last failed rule, or ended by its script repeating another sample's."""
        for attempt in job.history:
            if attempt["rule"]:
                self.counts.check_failures[attempt["rule"]] += 1
                self._metrics.check_failed(attempt["stage"], attempt["rule"])
        if job.duplicate is not None:
            self._reject(job, "duplicate", "script_duplicate")
            self.counts.duplicates["script"] += 1
            self._on_settled(job.id, False, "script duplicates")
            return
        if job.trajectory is None:
            self._reject(job, "dropped", job.last_failure.rule if job.last_failure else "dropped")
            self.counts.dropped += 1
            self._on_settled(job.id, False, "dropped")
            return
        record = accepted_record(job, self._form.sharegpt, self._form.refinement_data)
        self._on_settled(job.id, True, "accepted")
        if self._store.accept(job.id, record, job.failed_checks, self.counts.target) is None:
            self._metrics.sample_finished("surplus")
            return
        self._metrics.sample_finished("accepted")
        self._writer.append(record)
        log.info("sample_accepted", sample_id=job.id, requests=job.requests, cost_usd=round(job.cost_usd, 6))
        self.counts.accepted += 1
        self.counts.accepted_this_run += 1

    def failed(self, job: SampleJob, message: str) -> None:
        """A sample the endpoint gave up on (its retries spent, or a request refused)."""
        job.error = message
        self._reject(job, "failed", "failed")
        self.counts.failed += 1
        self._on_settled(job.id, False, "failed")

    def input_rejected(
        self, position: int, kind: str, rule: str, record: dict[str, Any], cursor: int
    ) -> None:
        """A persona that never became a sample: `malformed` (a bad input line) or `duplicate`
        (of a persona already admitted); the source cursor moves past it in the same write."""
        self._store.reject_input(position, kind, rule, record, cursor)
        self._rejected(record)
        if kind == "duplicate":
            self.counts.duplicates["persona"] += 1
            self._on_settled(None, False, "persona duplicates")
        else:
            self.counts.malformed += 1

    def _reject(self, job: SampleJob, kind: str, rule: str) -> None:
        record = rejected_record(job, kind)
        self._store.reject_sample(job.id, kind, rule, job.failed_checks, record)
        self._rejected(record)
        log.info(
            f"sample_{kind}", sample_id=job.id, rule=rule, message=record["message"], requests=job.requests
        )

    def _rejected(self, record: dict[str, Any]) -> None:
        self._writer.rejects.append(redact_bytes(orjson.dumps(record)))
        self._metrics.sample_rejected(record)
