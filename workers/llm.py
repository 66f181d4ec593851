"""The LLM layer: one client per OpenAI-compatible endpoint, with a response cache.

`LLMClient` turns (messages, generation parameters) into a `Completion`: `prepare` the
body, `replay` a stored answer, or `send` it; the stages reach it through
`workers/fallback.py`, which chooses between a stage's endpoints. It knows nothing about
AgentRefine. Every completed answer is stored under the SHA-256 of the request body exactly
as sent (model, messages, parameters; serialised once, hashed and sent as the same bytes),
so asking again — after a crash, or in a resumed run — replays the stored answer instead of
paying for it. The `seed` is part of that body: the stages derive it from the sample and
attempt, so a deliberate re-ask gets a fresh answer while a replay hits the cache.

Transport faults (5xx, timeouts, resets, unreadable bodies) are retried here with
backoff, `max_retries` times. A 429 is backpressure, not a failure: it cools down only
this endpoint for the `retry-after` the provider sent, cuts its concurrency, and is retried
for up to RATE_LIMIT_PATIENCE_S. 401/403/404 mean the configuration is wrong:
`FatalEndpointError` stops the run with one line. A 400/413/422 fails only its request (its
sample); the endpoint's `CircuitBreaker` stops the run when such refusals, or transport
faults, keep coming. Bad *content* (invalid JSON, `finish_reason: length`) is not retried
here: it goes back to the stage's policy. After `stop_sending()` (a graceful stop) stored
answers are still replayed but nothing new is sent: `SendingStopped`.

Every HTTP attempt is reported to the run's metrics (`RunMetrics.request`), and each is
cleared with the run's budget (`Budget.check`) once it holds a limiter slot, right before
it is sent; answers replayed from the store are free and never refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson
import structlog

from metrics.budget import Budget
from metrics.prometheus import RequestEvent, RunMetrics
from metrics.stats import RunStats
from metrics.usage import Usage, cost_usd, parse_usage
from service.config import Endpoint
from service.redact import redact
from service.store import Store, StoredResponse
from workers.breaker import CircuitBreaker
from workers.http import Reply, TransportError, one_line
from workers.limiter import EndpointLimiter
from workers.transports import open_transport

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RATE_LIMIT_PATIENCE_S = 600.0  # give a request up after this long of uninterrupted 429s
FATAL_STATUSES = frozenset((401, 403, 404))  # the configuration is wrong: retrying cannot help
REQUEST_SPECIFIC = frozenset((400, 413, 422))  # statuses caused by one request, not by the configuration
REFUSALS = FATAL_STATUSES | REQUEST_SPECIFIC  # answers that are never retried

log = structlog.get_logger()


class FatalEndpointError(Exception):
    """The endpoint refuses the configuration (bad key, unknown model, bad request)."""


class RequestFailed(Exception):
    """A request still failed after all retries, or the endpoint refused this one request."""


class SendingStopped(Exception):
    """The run is stopping: no new request is sent (the sample resumes in the next run)."""


@dataclass(frozen=True)
class Completion:
    content: str
    finish_reason: str | None
    usage: Usage
    cost_usd: float
    model: str
    endpoint: str
    cached: bool


def request_key(body: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON request body."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """A cheap prompt-size estimate (about 4 characters a token) for TPM reservations."""
    return sum(len(m.get("content") or "") for m in messages) // 4 + 4 * len(messages) + 3


class LLMClient:
    """Chat completions against one endpoint, cached in the run's store."""

    def __init__(
        self,
        endpoint: Endpoint,
        base_url: str,
        store: Store,
        stats: RunStats,
        metrics: RunMetrics | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._store = store
        self._stats = stats
        self._metrics = metrics or RunMetrics(stats)
        self._budget = budget or Budget(None, stats)
        self.limiter = EndpointLimiter(endpoint.limits)
        self._breaker = CircuitBreaker(f"endpoint {endpoint.name} ({endpoint.model})", endpoint.breaker)
        self._sending = True
        self._http = open_transport(
            endpoint.transport,
            base_url,
            endpoint.api_key(),
            endpoint.timeout_s,
            endpoint.limits.max_concurrency,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def stop_sending(self) -> None:
        """Graceful stop: requests already sent finish and are stored; no new one is sent."""
        self._sending = False

    def prepare(self, messages: list[dict[str, str]], generation: Generation) -> PreparedRequest:
        """The request body as this endpoint will receive it, and its store key."""
        ep = self.endpoint
        body: dict[str, Any] = {
            "model": ep.model,
            "messages": messages,
            "temperature": generation.temperature,
            ep.max_tokens_param: generation.max_tokens,
        }
        if generation.json_mode and ep.json_mode:
            body["response_format"] = {"type": "json_object"}
        if ep.send_seed:
            body["seed"] = generation.seed
        body.update(ep.extra_body)
        payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        # the key hashes the body as sent, plus the seed when it is not sent
        key = (
            hashlib.sha256(payload).hexdigest()
            if ep.send_seed
            else request_key({**body, "seed": generation.seed})
        )
        return PreparedRequest(key, payload, estimate_tokens(messages) + generation.max_tokens)

    def replay(self, request: PreparedRequest, stage: str) -> Completion | None:
        """The stored answer to this request, if it was ever answered."""
        stored = self._store.get_response(request.key)
        if stored is None:
            return None
        self._stats.cache_hits += 1
        self._metrics.cache_hit(self.endpoint.name, self.endpoint.model, stage)
        return _completion(stored, parse_usage(stored.usage), cached=True)

    async def send(self, request: PreparedRequest, stage: str, sample_id: str | None = None) -> Completion:
        """Ask the endpoint (with retries), store the answer, count what it cost. `stage` is a
        metrics label; `sample_id` is kept with the stored answer (for the report)."""
        if not self._sending:
            raise SendingStopped(f"endpoint {self.endpoint.name}: stopping, request not sent")
        stored, usage = await self._send(request, stage, sample_id)
        self._store.put_response(request.key, stored)
        self._stats.usage += usage
        self._stats.cost_usd += stored.cost_usd
        return _completion(stored, usage, cached=False)

    async def _send(
        self, request: PreparedRequest, stage: str, sample_id: str | None
    ) -> tuple[StoredResponse, Usage]:
        ep = self.endpoint
        last_error = ""
        attempt = 0  # failed tries other than 429; a 429 is backpressure, bounded by time instead
        limited_since: float | None = None
        while attempt <= ep.max_retries:
            delay = _backoff(attempt)
            async with self.limiter.slot(request.estimate) as ticket:
                self._budget.check()  # here, not before the limiter wait: only sent requests may finish
                sent = time.monotonic()
                try:
                    reply = await self._http.post_chat(request.payload)
                except TransportError as exc:
                    outcome, last_error = exc.kind, str(exc)
                else:
                    if reply.status == 200:
                        try:
                            stored = parse_answer(reply.body, ep)
                        except ValueError as exc:  # not a chat completion (cut short, not JSON)
                            self.limiter.observe(reply.headers)
                            outcome, last_error = "bad_response", one_line(str(exc))
                        else:
                            self._stats.requests["ok"] += 1
                            self._breaker.success()
                            tokens = parse_usage(stored.usage)
                            cost = cost_usd(tokens, ep.price)
                            latency = self._report(stage, "ok", sent, tokens, cost)
                            ticket.succeeded(tokens.total, reply.headers, latency)
                            stored = replace(
                                stored, cost_usd=cost, stage=stage, sample_id=sample_id, latency_s=latency
                            )
                            return stored, tokens
                    else:
                        self.limiter.observe(reply.headers)
                        if reply.status in REFUSALS:
                            self._stats.requests[str(reply.status)] += 1
                            self._report(stage, str(reply.status), sent)
                            message = reply.error_message()
                            refusal = f"endpoint {ep.name} ({ep.model}) answered {reply.status}: {message}"
                            if reply.status in FATAL_STATUSES:
                                raise FatalEndpointError(refusal)
                            self._breaker.bad_request(f"{reply.status}: {message}")
                            raise RequestFailed(refusal)
                        outcome = "5xx" if reply.status >= 500 else str(reply.status)
                        last_error = f"HTTP {reply.status}: {reply.error_message()}"
                        if outcome == "429":
                            delay = _retry_after(reply) or delay
                            ticket.rate_limited(delay)
            self._stats.requests[outcome] += 1
            self._report(stage, outcome, sent)
            log.info("llm_attempt_failed", endpoint=ep.name, stage=stage, outcome=outcome, error=last_error)
            if outcome == "429":
                limited_since = limited_since or time.monotonic()
                if time.monotonic() - limited_since > RATE_LIMIT_PATIENCE_S:
                    raise RequestFailed(f"endpoint {ep.name}: rate limited for {RATE_LIMIT_PATIENCE_S:.0f} s")
            else:
                attempt += 1
                self._breaker.failure(f"{outcome}: {last_error}")
            await asyncio.sleep(delay)
        raise RequestFailed(f"endpoint {ep.name}: gave up after {ep.max_retries + 1} tries: {last_error}")

    def _report(
        self, stage: str, outcome: str, sent: float, usage: Usage | None = None, cost: float = 0.0
    ) -> float:
        """Tell the metrics how one HTTP attempt ended; return its latency."""
        latency = time.monotonic() - sent
        ep = self.endpoint
        self._metrics.request(
            RequestEvent(ep.name, ep.model, stage, outcome, latency, usage or Usage(), cost)
        )
        return latency


@dataclass(frozen=True)
class Generation:
    """The generation parameters of one request (the seed also tells re-asks from replays)."""

    temperature: float
    max_tokens: int
    seed: int
    json_mode: bool = True


@dataclass(frozen=True)
class PreparedRequest:
    """One request ready to send: its store key, the exact bytes, the TPM reservation."""

    key: str
    payload: bytes
    estimate: int


def parse_answer(body: bytes, endpoint: Endpoint) -> StoredResponse:
    """The first choice of a chat completion body; ValueError when it is not one. Whitespace
    before the JSON (DeepSeek's keep-alive blank lines while a request waits) is allowed. An
    API key the content echoes is redacted before anything stores or uses it."""
    data = orjson.loads(body)
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("response has no choices")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    usage = data.get("usage")
    if not isinstance(content, str | None) or not isinstance(usage, dict | None):
        raise ValueError("response has a malformed message or usage")
    model = data.get("model")
    return StoredResponse(
        content=redact(content or ""),
        finish_reason=choice.get("finish_reason"),
        usage=usage or {},
        model=model if isinstance(model, str) and model else endpoint.model,
        endpoint=endpoint.name,
    )


def _completion(stored: StoredResponse, usage: Usage, cached: bool) -> Completion:
    return Completion(
        content=stored.content,
        finish_reason=stored.finish_reason,
        usage=usage,
        cost_usd=stored.cost_usd,
        model=stored.model,
        endpoint=stored.endpoint,
        cached=cached,
    )


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


def _retry_after(reply: Reply) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = reply.headers.get(name)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                continue
    return None
