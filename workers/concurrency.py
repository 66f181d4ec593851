"""Adaptive concurrency for one endpoint: how many of its requests may be in flight now.

The limit moves between 1 and the configured `max_concurrency` (the ceiling) on two signals:

- **429 (AIMD).** A refusal cuts the limit by a quarter. Only a refusal of a request sent
  under the current limit counts, so a burst of 429s already on the wire cuts it once.
- **Latency (for endpoints that queue instead of refusing: a vLLM server with a full batch,
  DeepSeek under load).** Completed requests are collected in windows; a window holds only
  requests sent after it opened, so it measures the current limit. Its typical latency
  (geometric mean: latencies are lognormal) is compared with the baseline, the lowest
  window seen since the last re-measurement. Above `TOLERANCE` times the baseline the
  endpoint is queueing, and the limit shrinks in proportion to the excess (at most halved),
  which puts it near the knee where latency starts to climb. Otherwise the limit grows:
  doubling per window until the first 429 or a clear rise (`SLOW_START_EXIT`: the ramp's
  windows are small and noisy), then by √limit per window (additive increase).

A baseline learned early can go stale (later requests may be longer by nature), so after
a latency cut the controller re-measures it every `REBASE_EVERY` windows: one window at
half the limit, whose latency becomes the new baseline.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

TOLERANCE = 1.25  # latency this far above the baseline means requests queue at the endpoint
SLOW_START_EXIT = 1.5  # while doubling, only a clear rise ends the ramp (its windows are small)
MIN_WINDOW = 32  # completed requests per window at least (the window is also >= the limit)
SLOW_START_WINDOW = 16  # a smaller window while the limit doubles, so the ramp takes few round trips
INITIAL_LIMIT = 8
RATE_LIMIT_CUT = 0.75
BASELINE_PULL = 0.25  # how far a faster window moves the baseline down
REBASE_EVERY = 16  # windows between two re-measurements of the baseline


class AdaptiveConcurrency:
    """A semaphore whose size follows the endpoint: `acquire` returns a window id to report back."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(min(self.ceiling, INITIAL_LIMIT))
        self.in_flight = 0
        self.baseline_s: float | None = None
        self.recent_s: float | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._slow_start = True
        self._window = 0
        self._log_sum = 0.0
        self._samples = 0
        self._windows_since_rebase = 0
        self._rebasing_from: float | None = None

    async def acquire(self) -> int:
        """Wait for a free slot; the id of the window the request is sent in."""
        if self._waiters or self.in_flight >= int(self.limit):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release()  # the slot was handed over just as we were cancelled
                elif waiter in self._waiters:  # else `_wake` already dropped it
                    self._waiters.remove(waiter)
                raise
        else:
            self.in_flight += 1
        return self._window

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def rate_limited(self, window: int) -> None:
        """A 429 for a request sent in `window`: cut once per window."""
        if window != self._window:
            return
        self._slow_start = False
        self._set(max(1.0, self.limit * RATE_LIMIT_CUT))

    def succeeded(self, window: int, latency_s: float) -> None:
        """A completed request sent in `window`, answered after `latency_s`."""
        if window != self._window:
            return
        self._log_sum += math.log(max(latency_s, 1e-6))
        self._samples += 1
        if self._samples >= max(SLOW_START_WINDOW if self._slow_start else MIN_WINDOW, int(self.limit)):
            self._close_window(math.exp(self._log_sum / self._samples))

    def _close_window(self, recent: float) -> None:
        self.recent_s = recent
        if self._rebasing_from is not None:
            self.baseline_s = recent
            limit, self._rebasing_from = self._rebasing_from, None
            self._set(limit)
            return
        if self.baseline_s is None:
            self.baseline_s = recent
        elif recent < self.baseline_s:
            self.baseline_s += BASELINE_PULL * (recent - self.baseline_s)
        ratio = recent / self.baseline_s
        if ratio > (SLOW_START_EXIT if self._slow_start else TOLERANCE):
            self._slow_start = False
            limit = max(1.0, self.limit * max(0.5, TOLERANCE / ratio))
        elif self._slow_start:
            limit = min(float(self.ceiling), self.limit * 2)
        else:
            limit = min(float(self.ceiling), self.limit + math.sqrt(self.limit))
        self._windows_since_rebase += 1
        if not self._slow_start and self._windows_since_rebase >= REBASE_EVERY:
            self._windows_since_rebase = 0
            self._rebasing_from = limit
            limit = max(1.0, limit / 2)
        self._set(limit)

    def _set(self, limit: float) -> None:
        """Adopt a new limit and open a new window."""
        self.limit = limit
        self._window += 1
        self._log_sum, self._samples = 0.0, 0
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)
