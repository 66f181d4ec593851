"""What a cluster worker sends the driver: one `Report` per flush, holding everything that
happened on the worker since the last one, in an order the driver can apply safely."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from dedup.near import Candidate
from llm import Answer, RequestEvent, redact
from llm.limiter import LimiterState
from pipeline.job import SampleJob
from pipeline.judgement import Judgement


@dataclass(frozen=True)
class WorkerState:
    """The worker as it is now: samples on it, each endpoint's limiter, its process's CPU time."""

    samples: int
    stages: dict[str, int]  # samples in each stage
    limiters: dict[str, LimiterState]  # by endpoint name
    cpu_s: float


@dataclass
class Report:
    """Applied by the driver in this order: the answers are stored, the events reach the run's
    sinks, the judge verdicts are stored, the scripts are screened, then the finished samples
    are recorded (so each sample's answers are stored before it counts)."""

    answers: list[tuple[str, Answer, str | None]] = field(default_factory=list)  # key, answer, sample
    events: list[RequestEvent] = field(default_factory=list)
    judged: list[tuple[str, Judgement]] = field(default_factory=list)  # sample id, verdicts
    screens: list[tuple[int, Candidate]] = field(default_factory=list)  # ticket, script with its vector
    # a sample the stages are done with, and the error that ended it (None: finished normally)
    finished: list[tuple[SampleJob, BaseException | None]] = field(default_factory=list)
    state: WorkerState | None = None

    def __bool__(self) -> bool:
        return bool(self.answers or self.events or self.judged or self.screens or self.finished)


def portable(exc: BaseException) -> BaseException:
    """The error as the other side can receive it: itself, or its type and message. Ray pickles
    what a worker reports; an error that pickles but cannot be rebuilt from its pickle (one whose
    `__init__` takes other arguments than its `args`, as `TransportError`'s) would fail the whole
    report on the driver, which would take it for a lost worker."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(redact.redact(f"{type(exc).__name__}: {exc}"))
    return exc
