"""Requests-per-minute and tokens-per-minute limits, as OpenAI enforces them.

Each limit is a token bucket that refills continuously at the per-minute rate and holds
`burst_s` seconds of it: 60 (a whole minute, the default) lets a fresh key burst a
minute's worth at once; a small value models OpenAI's warning that a limit "may be
enforced over shorter periods" (60,000 RPM as 1,000 per second). The buckets start full,
like a fresh key's, or empty (`start_full: false`). A request over a limit
gets HTTP 429 with OpenAI's error body and `retry-after` / `retry-after-ms` headers; every
response carries the `x-ratelimit-*` headers of the limits that are set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


def format_duration(seconds: float) -> str:
    """OpenAI's reset duration format (Go style): "120ms", "1s", "1.5s", "6m0s", "1h2m3s"."""
    ms = round(max(0.0, seconds) * 1000)
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    secs_text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if hours >= 1:
        return f"{int(hours)}h{int(minutes)}m{secs_text}s"
    if minutes >= 1:
        return f"{int(minutes)}m{secs_text}s"
    return f"{secs_text}s"


class TokenBucket:
    """A bucket refilled at `per_minute` units per minute, holding `burst_s` seconds of refill."""

    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        burst_s: float = 60.0,
        start_full: bool = True,
    ) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self._level = self.capacity if start_full else 0.0
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._last) * self.rate)
        self._last = now

    def level(self) -> float:
        self._refill()
        return self._level

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` units are available (0 when they are now)."""
        self._refill()
        deficit = min(amount, self.capacity) - self._level
        return 0.0 if deficit <= 0 else deficit / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self._level -= min(amount, self.capacity)

    def give_back(self, amount: float) -> None:
        self._refill()
        self._level = min(self.capacity, self._level + max(0.0, amount))

    def reset_after(self) -> float:
        """Seconds until the bucket is full again."""
        self._refill()
        return (self.capacity - self._level) / self.rate if self.rate else 0.0


@dataclass
class Decision:
    """Outcome of an admission check: `limited` names the limit hit ("requests"/"tokens")."""

    limited: str | None
    retry_after_s: float
    charged_tokens: int
    requested_tokens: int


class RateLimiter:
    """RPM and TPM buckets (0 = unlimited) plus the headers they produce."""

    def __init__(
        self,
        rpm: float,
        tpm: float,
        clock: Callable[[], float] = time.monotonic,
        burst_s: float = 60.0,
        start_full: bool = True,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.requests = TokenBucket(rpm, clock, burst_s, start_full) if rpm > 0 else None
        self.tokens = TokenBucket(tpm, clock, burst_s, start_full) if tpm > 0 else None

    def admit(self, estimated_tokens: int) -> Decision:
        """Charge one request and its estimated tokens, or say which limit is exceeded."""
        # like OpenAI, a request larger than the whole per-minute budget is charged as
        # the whole budget (documented deviation: OpenAI rejects it as too large)
        charged = min(estimated_tokens, math.floor(self.tpm)) if self.tokens else estimated_tokens
        if self.requests is not None:
            wait = self.requests.wait_for(1)
            if wait > 0:
                return Decision("requests", wait, 0, estimated_tokens)
        if self.tokens is not None:
            wait = self.tokens.wait_for(charged)
            if wait > 0:
                return Decision("tokens", wait, 0, estimated_tokens)
        if self.requests is not None:
            self.requests.take(1)
        if self.tokens is not None:
            self.tokens.take(charged)
        return Decision(None, 0.0, charged, estimated_tokens)

    def reconcile(self, charged: int, actual: int) -> None:
        """Give back the part of the estimate that the completion did not use."""
        if self.tokens is not None and actual < charged:
            self.tokens.give_back(charged - actual)

    def headers(self) -> dict[str, str]:
        """The `x-ratelimit-*` headers for the limits that are set."""
        h: dict[str, str] = {}
        if self.requests is not None:
            h["x-ratelimit-limit-requests"] = str(round(self.rpm))
            h["x-ratelimit-remaining-requests"] = str(max(0, math.floor(self.requests.level())))
            h["x-ratelimit-reset-requests"] = format_duration(self.requests.reset_after())
        if self.tokens is not None:
            h["x-ratelimit-limit-tokens"] = str(round(self.tpm))
            h["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(self.tokens.level())))
            h["x-ratelimit-reset-tokens"] = format_duration(self.tokens.reset_after())
        return h

    def error_body(self, decision: Decision) -> dict[str, object]:
        """OpenAI's 429 body for a refused request."""
        kind = decision.limited or "requests"
        wait = format_duration(decision.retry_after_s)
        if kind == "requests":
            limit = round(self.rpm)
            used, requested = limit - max(0, math.floor(self.requests.level())), 1
        else:
            limit = round(self.tpm)
            used = limit - max(0, math.floor(self.tokens.level()))
            requested = decision.requested_tokens
        unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
        message = (
            f"Rate limit reached for {kind} in organization org-simulator on {unit}: "
            f"Limit {limit}, Used {used}, Requested {requested}. Please try again in {wait}. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        return {"error": {"message": message, "type": kind, "param": None, "code": "rate_limit_exceeded"}}

    @staticmethod
    def retry_headers(decision: Decision) -> dict[str, str]:
        """`retry-after` (whole seconds, at least 1) and `retry-after-ms`."""
        wait = decision.retry_after_s
        return {
            "retry-after": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        }
