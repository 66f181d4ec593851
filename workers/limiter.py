"""Client-side rate limiting for one endpoint: concurrency, requests/min, tokens/min, cooldown.

Requests reserve capacity before they are sent (a token estimate for TPM) and reconcile
it with the usage the endpoint reports. Limits come from config.yaml or, where it sets
none, from the provider's `x-ratelimit-limit-*` headers. A 429 puts only this endpoint into a cooldown for
the time the provider asked for; other endpoints keep going.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from service.config import Limits


@dataclass(frozen=True)
class LimiterState:
    """What the limiter holds right now (for metrics); None where a bucket is not in use."""

    in_flight: int
    concurrency: int
    remaining_requests: float | None
    remaining_tokens: float | None
    cooldown_s: float


class _Bucket:
    """A token bucket refilled continuously at `per_minute`, holding at most one minute's worth."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self._rate = per_minute / 60.0
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self._rate)
        self._stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        self._refill()
        amount = min(amount, self.capacity)
        return 0.0 if self.level >= amount else (amount - self.level) / self._rate

    def remaining(self) -> float:
        self._refill()
        return self.level

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= min(amount, self.capacity)

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class EndpointLimiter:
    """Admission control for one endpoint."""

    def __init__(self, limits: Limits) -> None:
        self._concurrency = max(1, limits.max_concurrency)
        self._slots = asyncio.Semaphore(self._concurrency)
        self._requests = _Bucket(limits.rpm) if limits.rpm else None
        self._tokens = _Bucket(limits.tpm) if limits.tpm else None
        self._learn = {"requests": not limits.rpm, "tokens": not limits.tpm}
        self._gate = asyncio.Lock()
        self._cooldown_until = 0.0
        self.in_flight = 0

    def learn(self, headers: Mapping[str, str]) -> None:
        """Adopt the provider's limits from `x-ratelimit-*` headers where config sets none."""
        for kind in ("requests", "tokens"):
            if not self._learn[kind]:
                continue
            limit = _header_int(headers, f"x-ratelimit-limit-{kind}")
            if limit:
                bucket = _Bucket(limit)
                remaining = _header_int(headers, f"x-ratelimit-remaining-{kind}")
                if remaining is not None:
                    bucket.level = float(min(remaining, limit))
                setattr(self, f"_{kind}", bucket)
                self._learn[kind] = False

    def cooldown(self, seconds: float) -> None:
        """Hold every new request of this endpoint for `seconds` (e.g. a 429's retry-after)."""
        self._cooldown_until = max(self._cooldown_until, time.monotonic() + seconds)

    def state(self) -> LimiterState:
        return LimiterState(
            in_flight=self.in_flight,
            concurrency=self._concurrency,
            remaining_requests=self._requests.remaining() if self._requests else None,
            remaining_tokens=self._tokens.remaining() if self._tokens else None,
            cooldown_s=max(0.0, self._cooldown_until - time.monotonic()),
        )

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[_Reservation]:
        """Wait for capacity, hold a concurrency slot while the request runs."""
        async with self._slots:
            async with self._gate:
                while True:
                    wait = self._cooldown_until - time.monotonic()
                    if self._requests:
                        wait = max(wait, self._requests.wait_for(1))
                    if self._tokens:
                        wait = max(wait, self._tokens.wait_for(estimated_tokens))
                    if wait <= 0:
                        break
                    await asyncio.sleep(wait)
                if self._requests:
                    self._requests.take(1)
                if self._tokens:
                    self._tokens.take(estimated_tokens)
            reservation = _Reservation(self._tokens, estimated_tokens)
            self.in_flight += 1
            try:
                yield reservation
            finally:
                self.in_flight -= 1


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


class _Reservation:
    """The tokens reserved for one request; `settle` corrects the estimate with real usage."""

    def __init__(self, bucket: _Bucket | None, estimate: int) -> None:
        self._bucket = bucket
        self._estimate = estimate

    def settle(self, actual_tokens: int) -> None:
        if self._bucket is not None:
            self._bucket.give_back(self._estimate - actual_tokens)
