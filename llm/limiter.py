"""Client-side rate limiting for one endpoint: concurrency, requests/min, tokens/min, cooldown.

A request first takes a concurrency slot (`AdaptiveConcurrency`: the limit that keeps an
endpoint busy without queueing at it), then reserves one request and a token estimate from
the RPM/TPM buckets, waiting as long as needed, and reconciles the estimate with the usage
the endpoint reports. The estimate counts the prompt plus `max_tokens`, as OpenAI counts a
request against TPM when it admits it, so our buckets run no ahead of the provider's.

The buckets start empty and refill at the limit, so a run never bursts above the limit
(a resumed run would otherwise meet a provider bucket that its previous process emptied).
Limits come from config.yaml or, where it sets none, from the provider's
`x-ratelimit-limit-*` headers; `x-ratelimit-remaining-*` pulls our level down whenever the
provider has less left than we think (another client on the same key, a low estimate).
Where there are buckets they are what paces the endpoint, so the concurrency limit is kept
at least at what they can keep busy (Little's law: the requests they allow per second x the
mean latency, `AdaptiveConcurrency.floor`).

A 429 is read by what it carries. With rate-limit headers or a retry-after it is a rate
limit: only this endpoint cools down for the time the provider asked for (other endpoints
keep going), and the buckets pace it from then on; an endpoint without buckets has its
concurrency cut instead. Without either (DeepSeek's concurrency cap) the controller learns
the cap from the number of requests in flight, and nothing cools down.

`waiting` (requests held for a slot, the buckets or a cooldown) is what the run's admission
looks at: a new sample starts only while the endpoints have little work queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from llm.concurrency import INITIAL_LIMIT, LITTLE_HEADROOM, AdaptiveConcurrency, Send
from llm.config import Limits

log = structlog.get_logger()

# A wait for the buckets lasts at least this long, so that the requests one wake-up admits
# go out together instead of one per wake (at 40 requests/s, two per wake): each wake costs
# the event loop CPU. The rate is unchanged (the buckets refill continuously), and 50 ms is
# far below the period over which any provider enforces a per-minute limit.
MIN_WAIT_S = 0.05
FILES_RESERVED = 256  # open files kept for the store, the logs, the embedders and the metrics server
LEASE_HOLD_S = 1.0  # what a leased bucket may save up: one lease period (service/cluster/leases.py)
# A 429 carrying one of these is a rate limit; one with none of them a concurrency cap.
RATE_LIMIT_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
)


@dataclass(frozen=True)
class LimiterState:
    """What the limiter holds right now (for metrics); None where a bucket is not in use."""

    in_flight: int  # requests sent and not answered
    concurrency: int  # the limit on them now
    remaining_requests: float | None
    remaining_tokens: float | None
    cooldown_s: float
    rpm: int | None = None  # the per-minute limits in force, configured or learned from headers
    tpm: int | None = None
    waiting: int = 0  # requests waiting for a slot, the buckets or a cooldown
    cap: int | None = None  # the endpoint's concurrency cap, learned from its 429s
    taken_requests: int = 0  # requests let through so far
    taken_tokens: int = 0  # the TPM charge of those (prompt + max_tokens)
    key_rpm: int | None = None  # the whole key's limits, configured or learned (`rpm`/`tpm`: our part)
    key_tpm: int | None = None


class _Bucket:
    """A token bucket refilled continuously at `per_minute`, holding at most one minute's worth.
    It fills from its first request on: one made before a process's work starts (a cluster
    worker loading its models) must not save up a burst meanwhile."""

    def __init__(
        self, per_minute: int, level: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.level = min(level, self.capacity)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._stamp: float | None = None  # set by the first request

    def _refill(self) -> None:
        if self._stamp is None:
            return
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self._rate)
        self._stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        if self._stamp is None:
            self._stamp = self._clock()
        self._refill()
        amount = min(amount, self.capacity)
        return 0.0 if self.level >= amount else (amount - self.level) / self._rate

    def take(self, amount: float) -> None:
        """Take `amount` (a request larger than the bucket waited for it full and leaves a
        debt: a leased bucket may hold less than one large request)."""
        self._refill()
        self.level -= amount

    def remaining(self) -> float:
        self._refill()
        return self.level

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    def resize(self, per_minute: int, hold_s: float) -> None:
        """Refill `per_minute` from now on, holding at most `hold_s` of it (a lease of a key)."""
        self._refill()
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self.capacity = max(1.0, self._rate * hold_s)
        self.level = min(self.level, self.capacity)

    def sync(self, remaining: float) -> None:
        """The provider says only `remaining` is left: never assume more than that."""
        self._refill()
        self.level = min(self.level, remaining)


class EndpointLimiter:
    """Admission control for one endpoint."""

    def __init__(
        self,
        limits: Limits,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        share: float = 1.0,
    ) -> None:
        """`share`: the part of the key this limiter may use, when several processes share one
        key (`service/cluster`): of the concurrency ceiling, and (until `set_shares` changes
        it) of the key's RPM and TPM and of what the provider's headers say is left."""
        self.shares = {"requests": share, "tokens": share}
        self._key: dict[str, int | None] = {"requests": limits.rpm or None, "tokens": limits.tpm or None}
        self.taken_requests = 0
        self.taken_tokens = 0
        self._hold_s: float | None = None  # a leased bucket's (`set_shares`); None: a minute's worth
        leased = max(1, math.floor(limits.max_concurrency * share))  # K parts never above the whole
        ceiling = min(leased, open_files_allowed())
        if ceiling < leased:
            log.warning(
                "concurrency_ceiling_lowered", endpoint=name, ceiling=ceiling, reason="open files limit"
            )
        # K processes sharing a key start where one would: the first wave is sent before any
        # header or 429 has told them anything
        self.concurrency = AdaptiveConcurrency(ceiling, name, clock, max(1, round(INITIAL_LIMIT * share)))
        self._clock = clock
        self._requests = _Bucket(self._leased("requests"), clock=clock) if limits.rpm else None
        self._tokens = _Bucket(self._leased("tokens"), clock=clock) if limits.tpm else None
        self._gate = asyncio.Lock()
        self._cooldown_until = 0.0
        self._latency_s = _Mean()  # of the answers, for the Little's-law floor
        self._tokens_per_request = _Mean()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the provider's `x-ratelimit-*` headers: adopt limits config does not set, and
        lower our levels to what the provider says remains."""
        for kind in ("requests", "tokens"):
            remaining = _header_int(headers, f"x-ratelimit-remaining-{kind}")
            bucket: _Bucket | None = getattr(self, f"_{kind}")
            if bucket is None:
                limit = _header_int(headers, f"x-ratelimit-limit-{kind}")
                if limit:
                    self._key[kind] = limit
                    level = float(limit if remaining is None else remaining) * self.shares[kind]
                    learned = _Bucket(self._leased(kind), level, self._clock)
                    if self._hold_s is not None:
                        learned.resize(learned.per_minute, self._hold_s)
                    setattr(self, f"_{kind}", learned)
            elif remaining is not None:
                bucket.sync(remaining * self.shares[kind])

    def set_shares(
        self, requests: float, tokens: float, rpm: int | None = None, tpm: int | None = None
    ) -> None:
        """A new lease of the key: each bucket refills this part of the key's limit, and holds
        at most `LEASE_HOLD_S` of it (not a minute's worth: the parts of a process that was idle
        must not come on top of the others' steady use). `rpm`/`tpm`: the key's limits as
        another process learned them, taken when this one knows none (its first requests are
        then paced, not sent blind)."""
        self.shares = {"requests": requests, "tokens": tokens}
        self._hold_s = LEASE_HOLD_S
        for kind, known in (("requests", rpm), ("tokens", tpm)):
            if known and self._key[kind] is None:
                self._key[kind] = known
                setattr(self, f"_{kind}", _Bucket(self._leased(kind), clock=self._clock))
            bucket: _Bucket | None = getattr(self, f"_{kind}")
            if bucket is not None:
                bucket.resize(self._leased(kind), self._hold_s)

    def _leased(self, kind: str) -> int:
        """This limiter's part of a per-minute limit of the whole key."""
        key = self._key[kind]
        assert key is not None
        return max(1, int(key * self.shares[kind]))

    @property
    def limits_tokens(self) -> bool:
        """Whether a tokens-per-minute limit is in force (configured, or learned from headers)."""
        return self._tokens is not None

    def cooldown(self, seconds: float) -> None:
        """Hold every new request of this endpoint for `seconds` (e.g. a 429's retry-after)."""
        self._cooldown_until = max(self._cooldown_until, self._clock() + seconds)

    def state(self) -> LimiterState:
        control = self.concurrency
        return LimiterState(
            in_flight=control.sending,
            concurrency=control.limit,
            remaining_requests=self._requests.remaining() if self._requests else None,
            remaining_tokens=self._tokens.remaining() if self._tokens else None,
            cooldown_s=self.cooldown_left(),
            rpm=self._requests.per_minute if self._requests else None,
            tpm=self._tokens.per_minute if self._tokens else None,
            waiting=control.waiting,
            cap=control.cap,
            taken_requests=self.taken_requests,
            taken_tokens=self.taken_tokens,
            key_rpm=self._key["requests"],
            key_tpm=self._key["tokens"],
        )

    def cooldown_left(self) -> float:
        """Seconds this endpoint is still cooling down after a 429 (0 when it is not)."""
        return max(0.0, self._cooldown_until - self._clock())

    @property
    def in_flight(self) -> int:
        """Requests sent and not answered."""
        return self.concurrency.sending

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot, the buckets or a cooldown."""
        return self.concurrency.waiting

    def has_room(self, backlog: int) -> bool:
        """Whether the endpoint could take more work than is queued for it: no more than
        `backlog` requests wait for a slot, the buckets or a cooldown."""
        return self.concurrency.waiting <= backlog

    @asynccontextmanager
    async def slot(self, estimated_tokens: int | Callable[[], int], stage: str = "") -> AsyncIterator[Ticket]:
        """Wait for a concurrency slot and bucket capacity; hold the slot while the request runs.
        `estimated_tokens` may be a function, asked once the slot is held (the request is
        sized then)."""
        control = self.concurrency
        queued = await control.acquire()
        try:
            if callable(estimated_tokens):
                estimated_tokens = estimated_tokens()
            paced = False
            async with self._gate:
                while True:
                    wait = self._cooldown_until - self._clock()
                    if self._requests:
                        wait = max(wait, self._requests.wait_for(1))
                    if self._tokens:
                        wait = max(wait, self._tokens.wait_for(estimated_tokens))
                    if wait <= 0:
                        break
                    paced = True
                    await asyncio.sleep(max(wait, MIN_WAIT_S))
                if self._requests:
                    self._requests.take(1)
                if self._tokens:
                    self._tokens.take(estimated_tokens)
                self.taken_requests += 1
                self.taken_tokens += estimated_tokens
        except BaseException:
            control.release()
            raise
        send = control.sent(stage, queued, paced)
        try:
            yield Ticket(self, self._tokens, send, estimated_tokens)
        finally:
            control.finished(send)

    def _refused(self, send: Send, cooldown_s: float, headers: Mapping[str, str]) -> None:
        if not any(headers.get(name) for name in RATE_LIMIT_HEADERS):
            self.concurrency.refused_over_cap(send)
            return
        if self._requests is None and self._tokens is None:
            self.concurrency.refused_over_rate(send)
        self.cooldown(cooldown_s)

    def _answered(self, latency_s: float, tokens: int) -> None:
        """Keep the floor of the concurrency at what the RPM/TPM buckets can keep busy:
        the requests they allow per second (`tokens`: charged per request) x the mean
        latency (Little's law)."""
        self._latency_s.add(latency_s)
        self._tokens_per_request.add(tokens)
        rates = []
        if self._requests is not None:
            rates.append(self._requests.per_minute / 60)
        if self._tokens is not None and self._tokens_per_request.value > 0:
            rates.append(self._tokens.per_minute / 60 / self._tokens_per_request.value)
        if rates:
            self.concurrency.floor = min(rates) * self._latency_s.value * LITTLE_HEADROOM


class _Mean:
    """An exponentially weighted mean over about the last `1 / WEIGHT` values."""

    WEIGHT = 1 / 256

    def __init__(self) -> None:
        self.value = 0.0
        self._count = 0

    def add(self, x: float) -> None:
        self._count += 1
        self.value += (x - self.value) * max(self.WEIGHT, 1 / self._count)


def raise_open_file_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit (often 1024 of 1M):
    the limiters keep each endpoint's concurrency below what the soft limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_files_allowed() -> int:
    """Requests one endpoint may have in flight, each on its own connection, within this
    process's limit on open files (`ulimit -n`; the CLI raises it to the hard limit first)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, soft - FILES_RESERVED) if soft != resource.RLIM_INFINITY else 1 << 30


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

    def __init__(self, limiter: EndpointLimiter, tokens: _Bucket | None, send: Send, estimate: int) -> None:
        self._limiter = limiter
        self._tokens = tokens  # the bucket the estimate was taken from, if any
        self._send = send
        self._estimate = estimate

    def succeeded(
        self,
        charged_tokens: int,
        headers: Mapping[str, str],
        latency_s: float,
        *,
        first_token_s: float | None,
        completion_tokens: int,
    ) -> None:
        """Answered after `latency_s` (sent to last byte), its first token after `first_token_s`
        (None when not streamed), with `completion_tokens` written: feed it to the concurrency
        limit, correct the token reservation to what the provider charged at admission
        (`charged_tokens`: the real prompt + the max_tokens sent; the unused part of max_tokens
        is not given back, as OpenAI documents no refund of it), then read the provider's
        headers (which already count this request). The time to the first token is the wait
        (queueing, prefill); the rest is writing, about `completion_tokens` / the model's
        output speed."""
        self._limiter.concurrency.succeeded(self._send, latency_s, first_token_s, completion_tokens)
        self._limiter.taken_tokens -= self._estimate - charged_tokens
        if self._tokens is not None:
            self._tokens.give_back(self._estimate - charged_tokens)
        self._limiter.observe(headers)
        self._limiter._answered(latency_s, charged_tokens)

    def rate_limited(self, cooldown_s: float, headers: Mapping[str, str]) -> None:
        """Refused with 429 (`headers` read after `observe`): see the module docstring."""
        self._limiter._refused(self._send, cooldown_s, headers)
