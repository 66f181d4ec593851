"""The live progress display: one line redrawn on a terminal (accepted / target, rejects by
rule, duplicates, tokens with what a TPM limit was charged per token used, the run's spend
with its projection at the target and the budget, elapsed, rate, samples and requests in
flight); a progress log event when not a terminal."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable
from typing import TextIO

import structlog

from llm import Budget, RequestTally
from service.recorder import SampleCounts
from workers.flight import InFlight

LOG_INTERVAL_S = 15.0
log = structlog.get_logger()


def progress_line(stats: SampleCounts, requests: RequestTally, budget: Budget, flight: InFlight) -> str:
    elapsed = stats.elapsed
    rate = stats.accepted_this_run / elapsed if elapsed > 0 else 0.0
    fails = " ".join(f"{rule}:{n}" for rule, n in sorted(stats.check_failures.items())) or "-"
    projected = stats.projected_cost_usd(budget.spent_usd)
    spend = f"${budget.spent_usd:.2f}" + (
        f" of ${budget.limit_usd:.2f}" if budget.limit_usd is not None else ""
    )
    spend += f" (projected ${projected:.2f} at {stats.target})" if projected is not None else ""
    charged = requests.charged_per_used
    tokens = _short(requests.usage.total) + (f" (charged {charged:.2f}x)" if charged is not None else "")
    return (
        f"accepted {stats.accepted}/{stats.target} | {elapsed:.0f}s {rate:.1f}/s | "
        f"tokens {tokens} | spent {spend} | "
        f"in flight {flight.samples} samples, {flight.requests} requests (+{flight.waiting} waiting) | "
        f"dropped {stats.dropped} failed {stats.failed} "
        f"dup persona {stats.duplicates['persona']} script {stats.duplicates['script']} "
        f"bad lines {stats.malformed} | "
        f"rejected checks {fails}"
    )


class Progress:
    def __init__(
        self,
        stats: SampleCounts,
        requests: RequestTally,
        budget: Budget,
        in_flight: Callable[[], InFlight],
        interval_s: float,
        stream: TextIO = sys.stderr,
    ) -> None:
        self._stats = stats
        self._requests = requests
        self._budget = budget
        self._in_flight = in_flight
        self._stream = stream
        self._tty = stream.isatty()
        self._interval = interval_s if self._tty else LOG_INTERVAL_S
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._tty:
            self._stream.write("\r\033[K" + self._line() + "\n")
            self._stream.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._tty:
                width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be redrawn
                self._stream.write("\r\033[K" + self._line()[:width])
                self._stream.flush()
            else:
                log.info("progress", line=self._line())

    def _line(self) -> str:
        return progress_line(self._stats, self._requests, self._budget, self._in_flight())


def _short(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
