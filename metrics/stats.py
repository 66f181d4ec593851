"""In-memory counters of one run's samples, shared by the pipeline, the progress line and the
summary. One object per run, passed explicitly (no globals); what the requests cost is
counted from the LLM client's events (`llm.RequestTally`, `llm.Budget`)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RunStats:
    target: int
    started: float = field(default_factory=time.monotonic)
    accepted: int = 0
    accepted_this_run: int = 0
    dropped: int = 0
    failed: int = 0
    duplicates: Counter[str] = field(default_factory=Counter)  # dedup kind -> duplicates
    malformed: int = 0
    check_failures: Counter[str] = field(default_factory=Counter)
    peak_samples_in_flight: int = 0  # kept by service.flight.FlightRecorder
    peak_requests_in_flight: int = 0
    memory_per_sample_kib: float | None = None  # RSS growth per sample in flight, at the peak

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def projected_cost_usd(self, spent_usd: float) -> float | None:
        """Spend at the target if the rest costs what the run has cost per accepted sample."""
        if not self.accepted:
            return None
        remaining = max(0, self.target - self.accepted)
        return spent_usd + remaining * spent_usd / self.accepted
