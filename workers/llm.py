"""The LLM layer: one client per OpenAI-compatible endpoint, with a response cache.

`LLMClient.complete` turns (messages, generation parameters) into a `Completion`. It knows
nothing about AgentRefine. Every completed answer is stored under the SHA-256 of the
canonical request body (model, messages, parameters), so asking again — after a crash, or
in a resumed run — replays the stored answer instead of paying for it. The `seed` is part
of that body: the stages derive it from the sample and attempt, so a deliberate re-ask
gets a fresh answer while a replay hits the cache.

Transport faults (5xx, timeouts, resets, unreadable bodies) are retried here with
backoff, `max_retries` times. A 429 is backpressure, not a failure: it cools down only
this endpoint for the `retry-after` the provider sent and is retried for up to
RATE_LIMIT_PATIENCE_S. 401/403/404 mean the configuration is
wrong: `FatalEndpointError` stops the run with one line. A 400/413/422 fails only its
request (its sample); the endpoint's `CircuitBreaker` stops the run when such refusals, or
transport faults, keep coming. Bad *content* (invalid JSON, `finish_reason: length`) is
not retried here: it goes back to the stage's policy. After `stop_sending()` (a graceful
stop) stored answers are still replayed but nothing new is sent: `SendingStopped`.

Every HTTP attempt is reported to the run's metrics (`RunMetrics.request`), and each is
cleared with the run's budget (`Budget.check`) once it holds a limiter slot, right before
it is sent; answers replayed from the store are free and never refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import orjson
import structlog

from metrics.budget import Budget
from metrics.prometheus import RequestEvent, RunMetrics
from metrics.stats import RunStats
from metrics.usage import Usage, cost_usd, parse_usage
from service.config import Endpoint
from service.store import Store, StoredResponse
from workers.breaker import CircuitBreaker
from workers.limiter import EndpointLimiter, LimiterState

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RATE_LIMIT_PATIENCE_S = 600.0  # give a request up after this long of uninterrupted 429s
REQUEST_SPECIFIC = (400, 413, 422)  # statuses caused by one request, not by the configuration

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
        self._limiter = EndpointLimiter(endpoint.limits)
        self._breaker = CircuitBreaker(f"endpoint {endpoint.name} ({endpoint.model})", endpoint.breaker)
        self._sending = True
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=endpoint.api_key(),
            max_retries=0,
            timeout=endpoint.timeout_s,
            http_client=openai.DefaultAioHttpClient(),
        )
        self._completion_avg = 1000.0

    async def aclose(self) -> None:
        await self._client.close()

    def stop_sending(self) -> None:
        """Graceful stop: requests already sent finish and are stored; no new one is sent."""
        self._sending = False

    def limiter_state(self) -> LimiterState:
        return self._limiter.state()

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
        seed: int,
        stage: str,
        sample_id: str | None = None,
        json_mode: bool = True,
    ) -> Completion:
        """One answer for `stage` (a metrics label; `sample_id` is kept with the stored answer)."""
        ep = self.endpoint
        params: dict[str, Any] = {"temperature": temperature, ep.max_tokens_param: max_tokens}
        if json_mode and ep.json_mode:
            params["response_format"] = {"type": "json_object"}
        if ep.send_seed:
            params["seed"] = seed
        # the key hashes the body as the endpoint receives it, plus the seed when it is not sent
        key = request_key({"model": ep.model, "messages": messages, **params, **ep.extra_body, "seed": seed})
        stored = self._store.get_response(key)
        if stored is not None:
            self._stats.cache_hits += 1
            self._metrics.cache_hit(ep.name, ep.model, stage)
            return self._completion(stored, cached=True)
        if not self._sending:
            raise SendingStopped(f"endpoint {ep.name}: stopping, request not sent")
        stored = await self._send(
            messages,
            params,
            estimate_tokens(messages) + int(min(max_tokens, self._completion_avg)),
            stage,
            sample_id,
        )
        self._store.put_response(key, stored)
        completion = self._completion(stored, cached=False)
        self._stats.usage += completion.usage
        self._stats.cost_usd += completion.cost_usd
        self._completion_avg = 0.9 * self._completion_avg + 0.1 * completion.usage.completion
        return completion

    def _completion(self, stored: StoredResponse, cached: bool) -> Completion:
        usage = parse_usage(stored.usage)
        return Completion(
            content=stored.content,
            finish_reason=stored.finish_reason,
            usage=usage,
            cost_usd=stored.cost_usd,
            model=stored.model,
            endpoint=stored.endpoint,
            cached=cached,
        )

    async def _send(
        self,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        estimate: int,
        stage: str,
        sample_id: str | None,
    ) -> StoredResponse:
        ep = self.endpoint
        last_error = ""
        attempt = 0  # failed tries other than 429; a 429 is backpressure, bounded by time instead
        limited_since: float | None = None
        while attempt <= ep.max_retries:
            delay = _backoff(attempt)
            async with self._limiter.slot(estimate) as reservation:
                self._budget.check()  # here, not before the limiter wait: only sent requests may finish
                sent = time.monotonic()
                try:
                    raw = await self._client.chat.completions.with_raw_response.create(
                        model=ep.model, messages=messages, extra_body=ep.extra_body or None, **params
                    )
                    response = raw.parse()
                except openai.RateLimitError as exc:
                    outcome, last_error = "429", _one_line(exc)
                    self._limiter.learn(exc.response.headers)
                    delay = _retry_after(exc.response.headers) or delay
                    self._limiter.cooldown(delay)
                except (
                    openai.AuthenticationError,
                    openai.PermissionDeniedError,
                    openai.NotFoundError,
                ) as exc:
                    self._stats.requests[str(exc.status_code)] += 1
                    self._report(stage, str(exc.status_code), sent)
                    raise FatalEndpointError(
                        f"endpoint {ep.name} ({ep.model}) answered {exc.status_code}: {_one_line(exc)}"
                    ) from None
                except openai.APIConnectionError as exc:  # includes APITimeoutError
                    outcome, last_error = _transport_outcome(exc), _one_line(exc)
                except openai.APIStatusError as exc:
                    if exc.status_code in REQUEST_SPECIFIC:
                        self._stats.requests[str(exc.status_code)] += 1
                        self._report(stage, str(exc.status_code), sent)
                        self._breaker.bad_request(f"{exc.status_code}: {_one_line(exc)}")
                        raise RequestFailed(
                            f"endpoint {ep.name} answered {exc.status_code}: {_one_line(exc)}"
                        ) from None
                    outcome, last_error = (
                        ("5xx" if exc.status_code >= 500 else str(exc.status_code)),
                        _one_line(exc),
                    )
                except (openai.APIResponseValidationError, ValueError) as exc:
                    outcome, last_error = "bad_response", _one_line(exc)
                else:
                    if not response.choices:
                        outcome, last_error = "bad_response", "response has no choices"
                    else:
                        self._stats.requests["ok"] += 1
                        self._breaker.success()
                        self._limiter.learn(raw.headers)
                        usage = response.usage.model_dump(exclude_none=True) if response.usage else {}
                        tokens = parse_usage(usage)
                        reservation.settle(tokens.total)
                        cost = cost_usd(tokens, ep.price)
                        latency = self._report(stage, "ok", sent, tokens, cost)
                        choice = response.choices[0]
                        return StoredResponse(
                            content=choice.message.content or "",
                            finish_reason=choice.finish_reason,
                            usage=usage,
                            model=response.model or ep.model,
                            endpoint=ep.name,
                            cost_usd=cost,
                            stage=stage,
                            sample_id=sample_id,
                            latency_s=latency,
                        )
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


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                continue
    return None


def _transport_outcome(exc: BaseException) -> str:
    """ "timeout" or "reset", from the real cause: the SDK's aiohttp transport reports every
    aiohttp connection error (a server disconnect included) as a ConnectTimeout."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, TimeoutError):
            return "timeout"
        if isinstance(cause, aiohttp.ClientConnectionError | ConnectionError):
            return "reset"
        cause = cause.__cause__ or cause.__context__
    return "timeout" if isinstance(exc, openai.APITimeoutError) else "reset"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]
