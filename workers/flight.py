"""Work in flight: samples, and requests at the endpoints or waiting for them.

`InFlight` is one reading (the progress line and the metrics take one whenever they draw).
`FlightRecorder` takes one every `interval_s` while the run generates and keeps the peaks
and the memory one sample in flight holds: the growth of the process's
resident memory from the first reading to the reading at the peak of samples in flight,
divided by that peak. That is an upper bound (the dedup index and the store's cache grow in
the same time), and a good figure only where many samples were in flight, as on a slow
provider. The recorder logs the three figures when it stops.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger()
INTERVAL_S = 1.0
MIN_SAMPLES_FOR_MEMORY = 1000  # fewer at the peak: the embedders' first batches would dominate


@dataclass(frozen=True)
class InFlight:
    samples: int  # admitted and not finished
    requests: int  # sent to an endpoint and not answered
    waiting: int  # requests waiting for a concurrency slot, the RPM/TPM buckets or a cooldown


def resident_kib() -> float:
    """The process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class FlightRecorder:
    """Samples `read()` every `interval_s`: the peaks, and the memory per sample in flight."""

    def __init__(self, read: Callable[[], InFlight], interval_s: float = INTERVAL_S) -> None:
        self._read = read
        self._interval = interval_s
        self.peak_samples = 0
        self.peak_requests = 0
        self.memory_per_sample_kib: float | None = None  # RSS growth per sample in flight, at the peak
        self._task: asyncio.Task[None] | None = None
        self._base_kib: float | None = None

    def start(self) -> None:
        self._base_kib = resident_kib()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.record()
        log.info(
            "in_flight_peak",
            samples=self.peak_samples,
            requests=self.peak_requests,
            memory_per_sample_kib=self.memory_per_sample_kib,
        )

    def record(self) -> None:
        now = self._read()
        self.peak_requests = max(self.peak_requests, now.requests)
        if now.samples > self.peak_samples:
            self.peak_samples = now.samples
            if now.samples >= MIN_SAMPLES_FOR_MEMORY and self._base_kib is not None:
                growth = max(0.0, resident_kib() - self._base_kib)
                self.memory_per_sample_kib = round(growth / now.samples, 1)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.record()
