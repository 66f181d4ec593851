"""In-memory counters of one run, shared by the LLM layer, the pipeline, the progress line
and the summary. One object per run, passed explicitly (no globals)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from metrics.usage import Usage


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
    requests: Counter[str] = field(default_factory=Counter)  # outcome -> count (ok, 429, 5xx, ...)
    cache_hits: int = 0
    usage: Usage = field(default_factory=Usage)  # tokens paid in this process
    tokens_charged: int = 0  # prompt + max_tokens sent of those answers: what a TPM limit counts
    cost_usd: float = 0.0  # spent by this process
    prior_cost_usd: float = 0.0  # spent on this run by earlier processes (from the store)
    peak_samples_in_flight: int = 0  # kept by service.flight.FlightRecorder
    peak_requests_in_flight: int = 0
    memory_per_sample_kib: float | None = None  # RSS growth per sample in flight, at the peak

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def charged_per_used(self) -> float | None:
        """Tokens a TPM limit was charged per token the answers used (this process)."""
        return self.tokens_charged / self.usage.total if self.usage.total else None

    @property
    def run_cost_usd(self) -> float:
        """Spend of the whole run, all processes."""
        return self.prior_cost_usd + self.cost_usd

    @property
    def projected_cost_usd(self) -> float | None:
        """Spend at the target if the rest costs what the run has cost per accepted sample."""
        if not self.accepted:
            return None
        remaining = max(0, self.target - self.accepted)
        return self.run_cost_usd + remaining * self.run_cost_usd / self.accepted
