"""What the embedded endpoint has carried, as a provider would count it (for `/_sim/stats`
and `make bench`): requests in flight (now, the most, and their time integral, from which
a mean over any window is the difference of two readings divided by the time between
them), tokens charged at admission and tokens used by the answers, and the time the answers
took (waiting in the batch's queue, to the first token, in all).

A request is in flight from its admission (past the rate limits and the concurrency cap)
until its response ends or its client is gone. Times are real seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Load:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = self._stamp = clock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._request_seconds = 0.0  # integral of in_flight over time
        self.tokens_charged = 0  # prompt + max_tokens of every admitted request
        self.tokens_used = 0  # prompt + completion of every complete answer
        self.answers = 0
        self.queued_s = 0.0
        self.ttft_s = 0.0
        self.latency_s = 0.0

    def _advance(self) -> None:
        now = self._clock()
        self._request_seconds += self.in_flight * (now - self._stamp)
        self._stamp = now

    def admitted(self, charged_tokens: int) -> None:
        self._advance()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.tokens_charged += charged_tokens

    def ended(self) -> None:
        self._advance()
        self.in_flight -= 1

    def generated(self, used_tokens: int) -> None:
        """An answer generated in full: its prompt and completion tokens."""
        self.tokens_used += used_tokens

    def answered(self, queued_s: float, ttft_s: float, latency_s: float) -> None:
        """A complete answer's times from admission."""
        self.answers += 1
        self.queued_s += queued_s
        self.ttft_s += ttft_s
        self.latency_s += latency_s

    def snapshot(self) -> dict[str, Any]:
        self._advance()
        uptime = self._stamp - self._started
        return {
            "in_flight": {
                "now": self.in_flight,
                "max": self.max_in_flight,
                "mean": self._request_seconds / uptime if uptime > 0 else 0.0,
                "request_seconds": self._request_seconds,
                "uptime_s": uptime,
            },
            "tokens": {"charged": self.tokens_charged, "used": self.tokens_used},
            "answers": {
                "count": self.answers,
                "queued_s": self.queued_s,
                "ttft_s": self.ttft_s,
                "latency_s": self.latency_s,
            },
        }
