"""What the embedded endpoint has carried, as a provider would count it (for `/_sim/stats`
and `make bench`): requests admitted and in flight (now, the most, and their time
integral: a mean over any window is the difference of two readings of `request_seconds`
divided by the time between them), tokens charged at admission and tokens used by the
answers, the time the answers took (waiting in the batch's queue, to the first token, in
all), and how long clients stayed on hung requests before giving up.

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
        self.admitted_total = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._request_seconds = 0.0  # integral of in_flight over time
        self.tokens_charged = 0  # prompt + max_tokens of every admitted request
        self.prompt_tokens = 0  # of every answer generated in full
        self.completion_tokens = 0
        self.generated_answers = 0
        self.complete_answers = 0  # of those, delivered whole
        self.queued_s = 0.0
        self.ttft_s = 0.0
        self.latency_s = 0.0
        self.hangs_given_up = 0
        self.hang_silence_s = 0.0
        self.max_hang_silence_s = 0.0

    def _advance(self) -> None:
        now = self._clock()
        self._request_seconds += self.in_flight * (now - self._stamp)
        self._stamp = now

    def admitted(self, charged_tokens: int) -> None:
        self._advance()
        self.admitted_total += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.tokens_charged += charged_tokens

    def ended(self) -> None:
        self._advance()
        self.in_flight -= 1

    def generated(self, prompt_tokens: int, completion_tokens: int) -> None:
        """An answer generated in full: its tokens."""
        self.generated_answers += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def answered(self, queued_s: float, ttft_s: float, latency_s: float) -> None:
        """A complete answer's times from admission."""
        self.complete_answers += 1
        self.queued_s += queued_s
        self.ttft_s += ttft_s
        self.latency_s += latency_s

    def hang_given_up(self, silence_s: float) -> None:
        """The client left a hung request after `silence_s` without a byte from us."""
        self.hangs_given_up += 1
        self.hang_silence_s += silence_s
        self.max_hang_silence_s = max(self.max_hang_silence_s, silence_s)

    def snapshot(self) -> dict[str, Any]:
        self._advance()
        uptime = self._stamp - self._started
        return {
            "admitted": self.admitted_total,
            "in_flight": {
                "now": self.in_flight,
                "max": self.max_in_flight,
                "mean": self._request_seconds / uptime if uptime > 0 else 0.0,
                "request_seconds": self._request_seconds,
                "uptime_s": uptime,
            },
            "tokens": {
                "charged": self.tokens_charged,
                "used": self.prompt_tokens + self.completion_tokens,
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
            },
            "answers": {
                "generated": self.generated_answers,
                "complete": self.complete_answers,
                "queued_s": self.queued_s,
                "ttft_s": self.ttft_s,
                "latency_s": self.latency_s,
            },
            "hangs": {
                "given_up": self.hangs_given_up,
                "silence_s": self.hang_silence_s,
                "max_silence_s": self.max_hang_silence_s,
            },
        }
