"""Client-side rate limiting for one endpoint: concurrency, requests/min, tokens/min, cooldown.

A request first takes a concurrency slot (`AdaptiveConcurrency`: AIMD on 429, latency for
endpoints that queue), then reserves one request and a token estimate from the RPM/TPM
buckets, waiting as long as needed, and reconciles the estimate with the usage the endpoint
reports. The estimate counts the prompt plus `max_tokens`, as OpenAI counts a request
against TPM when it admits it, so our buckets run no ahead of the provider's.

The buckets start empty and refill at the limit, so a run never bursts above the limit
(a resumed run would otherwise meet a provider bucket that its previous process emptied).
Limits come from config.yaml or, where it sets none, from the provider's
`x-ratelimit-limit-*` headers; `x-ratelimit-remaining-*` pulls our level down whenever the
provider has less left than we think (another client on the same key, a low estimate).
A 429 puts only this endpoint into a cooldown for the time the provider asked for; other
endpoints keep going.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from service.config import Limits
from workers.concurrency import AdaptiveConcurrency

# A wait for the buckets lasts at least this long, so that the requests one wake-up admits
# go out together instead of one per wake (at 40 requests/s, two per wake): each wake costs
# the event loop CPU. The rate is unchanged (the buckets refill continuously), and 50 ms is
# far below the period over which any provider enforces a per-minute limit.
MIN_WAIT_S = 0.05


@dataclass(frozen=True)
class LimiterState:
    """What the limiter holds right now (for metrics); None where a bucket is not in use."""

    in_flight: int
    concurrency: int
    remaining_requests: float | None
    remaining_tokens: float | None
    cooldown_s: float
    rpm: int | None = None  # the per-minute limits in force, configured or learned from headers
    tpm: int | None = None


class _Bucket:
    """A token bucket refilled continuously at `per_minute`, holding at most one minute's worth."""

    def __init__(self, per_minute: int, level: float = 0.0) -> None:
        self.capacity = float(per_minute)
        self.level = min(level, self.capacity)
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

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= min(amount, self.capacity)

    def remaining(self) -> float:
        self._refill()
        return self.level

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    def sync(self, remaining: int) -> None:
        """The provider says only `remaining` is left: never assume more than that."""
        self._refill()
        self.level = min(self.level, float(remaining))


class EndpointLimiter:
    """Admission control for one endpoint."""

    def __init__(self, limits: Limits) -> None:
        self.concurrency = AdaptiveConcurrency(limits.max_concurrency)
        self._requests = _Bucket(limits.rpm) if limits.rpm else None
        self._tokens = _Bucket(limits.tpm) if limits.tpm else None
        self._gate = asyncio.Lock()
        self._cooldown_until = 0.0

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the provider's `x-ratelimit-*` headers: adopt limits config does not set, and
        lower our levels to what the provider says remains."""
        for kind in ("requests", "tokens"):
            remaining = _header_int(headers, f"x-ratelimit-remaining-{kind}")
            bucket: _Bucket | None = getattr(self, f"_{kind}")
            if bucket is None:
                limit = _header_int(headers, f"x-ratelimit-limit-{kind}")
                if limit:
                    level = float(limit if remaining is None else remaining)
                    setattr(self, f"_{kind}", _Bucket(limit, level))
            elif remaining is not None:
                bucket.sync(remaining)

    @property
    def limits_tokens(self) -> bool:
        """Whether a tokens-per-minute limit is in force (configured, or learned from headers)."""
        return self._tokens is not None

    def cooldown(self, seconds: float) -> None:
        """Hold every new request of this endpoint for `seconds` (e.g. a 429's retry-after)."""
        self._cooldown_until = max(self._cooldown_until, time.monotonic() + seconds)

    def state(self) -> LimiterState:
        return LimiterState(
            in_flight=self.concurrency.in_flight,
            concurrency=int(self.concurrency.limit),
            remaining_requests=self._requests.remaining() if self._requests else None,
            remaining_tokens=self._tokens.remaining() if self._tokens else None,
            cooldown_s=self.cooldown_left(),
            rpm=int(self._requests.capacity) if self._requests else None,
            tpm=int(self._tokens.capacity) if self._tokens else None,
        )

    def cooldown_left(self) -> float:
        """Seconds this endpoint is still cooling down after a 429 (0 when it is not)."""
        return max(0.0, self._cooldown_until - time.monotonic())

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[Ticket]:
        """Wait for a concurrency slot and bucket capacity; hold the slot while the request runs."""
        window = await self.concurrency.acquire()
        try:
            async with self._gate:
                while True:
                    wait = self._cooldown_until - time.monotonic()
                    if self._requests:
                        wait = max(wait, self._requests.wait_for(1))
                    if self._tokens:
                        wait = max(wait, self._tokens.wait_for(estimated_tokens))
                    if wait <= 0:
                        break
                    await asyncio.sleep(max(wait, MIN_WAIT_S))
                if self._requests:
                    self._requests.take(1)
                if self._tokens:
                    self._tokens.take(estimated_tokens)
            yield Ticket(self, self._tokens, window, estimated_tokens)
        finally:
            self.concurrency.release()


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class Ticket:
    """One admitted request: report how it ended so the limits learn from it."""

    def __init__(self, limiter: EndpointLimiter, tokens: _Bucket | None, window: int, estimate: int) -> None:
        self._limiter = limiter
        self._tokens = tokens  # the bucket the estimate was taken from, if any
        self._window = window
        self._estimate = estimate

    def succeeded(
        self,
        actual_tokens: int,
        headers: Mapping[str, str],
        latency_s: float,
        *,
        first_token_s: float | None,
        completion_tokens: int,
    ) -> None:
        """Answered after `latency_s` (sent to last byte), its first token after `first_token_s`
        (None when not streamed), with `completion_tokens` written: feed it to the concurrency
        limit, correct the token estimate (`actual_tokens`: prompt + completion), then read the
        provider's headers (which already count this request's real usage). The time to the
        first token is the wait (queueing, prefill); the rest is writing, about
        `completion_tokens` / the model's output speed."""
        self._limiter.concurrency.succeeded(self._window, latency_s)
        if self._tokens is not None:
            self._tokens.give_back(self._estimate - actual_tokens)
        self._limiter.observe(headers)

    def rate_limited(self, retry_after_s: float) -> None:
        """Refused with 429: cut the concurrency limit and cool the endpoint down."""
        self._limiter.concurrency.rate_limited(self._window)
        self._limiter.cooldown(retry_after_s)
