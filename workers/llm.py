"""The LLM layer: one client per OpenAI-compatible endpoint, with a response cache.

`LLMClient` turns (messages, generation parameters) into a `Completion`: `prepare` the
body, look for a `stored` answer, and `complete` it (asking the endpoint when nothing is
stored); the stages reach it through `workers/fallback.py`, which chooses between a stage's
endpoints. It knows nothing about AgentRefine.

**The store key** is the SHA-256 of the question: the request body without the keys that
only say how long the answer may be (`max_tokens`) or how it is delivered (`stream`,
`stream_options`), so a resumed run finds its stored answers whatever max_tokens it would
send now (`workers/sizing.py` learns it from the answers, and it differs between runs).
The `seed` is part of it: the stages derive it from the sample and attempt, so a deliberate
re-ask gets a fresh answer while a replay hits the cache. (Stores written before this key
was chosen hashed the body with the stage's max_tokens; they are still read.)

**Charge-aware max_tokens.** Where the endpoint limits tokens per minute (configured, or
learned from its headers), a request is sent with max_tokens sized to the stage's answers
(`CompletionSizes`), not the stage's cap, since OpenAI charges the limit with prompt +
max_tokens when it admits a request; the TPM reservation is what is sent. An answer cut by
`finish_reason: length` below the cap is stored (it was paid) and asked again at the cap
with a seed derived from the first (`at_cap_seed`), so no sample is lost to the tighter
limit and a resumed run replays both. The cut attempt is counted as outcome
`cut_below_cap`, and the whole answer's usage and cost include it.

**Streaming.** With `stream: true` (the default) the answer comes as server-sent events
(with `stream_options.include_usage`, so the usage is exact), which lets a silence timeout
between chunks tell a hung request from a long answer (`workers/http.py`) and times the
first token; it is assembled when the stream ends (`workers/answers.py`), so what is stored
and returned is the same message a non-streaming request gets.

Transport faults (5xx, timeouts, resets, unreadable or cut bodies, and blank content in
JSON mode, which DeepSeek sometimes sends) are retried here with backoff, `max_retries`
times. A 429 is backpressure, not a failure: it cools down only this endpoint for the
`retry-after` the provider sent, cuts its concurrency, and is retried for up to
RATE_LIMIT_PATIENCE_S. 401/403/404 mean the configuration is wrong: `FatalEndpointError`
stops the run with one line. A 400/413/422 fails only its request (its sample); the
endpoint's `CircuitBreaker` stops the run when such refusals, or transport faults, keep
coming. Bad *content* (invalid JSON, `finish_reason: length` at the cap) is not retried
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
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import orjson
import structlog

from metrics.budget import Budget
from metrics.prometheus import RequestEvent, RunMetrics
from metrics.stats import RunStats
from metrics.usage import Usage, cost_usd, parse_usage
from service.config import Endpoint
from service.store import Store, StoredResponse
from workers.answers import parse_answer, parse_stream
from workers.breaker import CircuitBreaker
from workers.http import EndpointHTTP, Reply, TransportError, one_line
from workers.limiter import EndpointLimiter
from workers.sizing import CompletionSizes

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RATE_LIMIT_PATIENCE_S = 600.0  # give a request up after this long of uninterrupted 429s
FATAL_STATUSES = frozenset((401, 403, 404))  # the configuration is wrong: retrying cannot help
REQUEST_SPECIFIC = frozenset((400, 413, 422))  # statuses caused by one request, not by the configuration
REFUSALS = FATAL_STATUSES | REQUEST_SPECIFIC  # answers that are never retried
STREAM = {"stream": True, "stream_options": {"include_usage": True}}

log = structlog.get_logger()


class FatalEndpointError(Exception):
    """The endpoint refuses the configuration (bad key, unknown model, bad request)."""


class RequestFailed(Exception):
    """A request still failed after all retries, or the endpoint refused this one request."""


class SendingStopped(Exception):
    """The run is stopping: no new request is sent (the sample resumes in the next run)."""


@dataclass(frozen=True)
class Completion:
    """An answer as the stages see it: the message, and what it cost in all (an attempt cut
    below the cap and its re-ask at the cap included)."""

    content: str
    finish_reason: str | None
    usage: Usage
    cost_usd: float
    model: str
    endpoint: str
    cached: bool
    answers: int = 1  # paid answers it took: 2 when one was cut below the cap and asked again


@dataclass(frozen=True)
class Generation:
    """The generation parameters of one request (the seed also tells re-asks from replays);
    `max_tokens` is the stage's cap."""

    temperature: float
    max_tokens: int
    seed: int
    json_mode: bool = True


@dataclass(frozen=True)
class PreparedRequest:
    """One request ready to send: its store key, the exact bytes, the TPM reservation, the
    max_tokens sent against the stage's cap, and what it was made from (for the re-ask)."""

    key: str
    payload: bytes
    estimate: int
    max_tokens: int
    cap: int
    json_mode: bool
    messages: list[dict[str, str]]
    generation: Generation


def request_key(body: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON request body."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """A cheap prompt-size estimate (about 4 characters a token) for TPM reservations."""
    return sum(len(m.get("content") or "") for m in messages) // 4 + 4 * len(messages) + 3


def at_cap_seed(seed: int) -> int:
    """The seed of the re-ask at the cap of an answer cut below it: a request of its own."""
    digest = hashlib.sha256(f"{seed}:at-cap".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


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
        self.limiter = EndpointLimiter(endpoint.limits, endpoint.name)
        self.sizes: defaultdict[str, CompletionSizes] = defaultdict(CompletionSizes)  # by stage
        self._breaker = CircuitBreaker(f"endpoint {endpoint.name} ({endpoint.model})", endpoint.breaker)
        self._sending = True
        self._http = EndpointHTTP(
            base_url, endpoint.api_key(), endpoint.timeout_s, endpoint.limits.max_concurrency
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def stop_sending(self) -> None:
        """Graceful stop: requests already sent finish and are stored; no new one is sent."""
        self._sending = False

    def prepare(
        self, messages: list[dict[str, str]], generation: Generation, stage: str, at_cap: bool = False
    ) -> PreparedRequest:
        """The request as this endpoint will receive it, and its store key. max_tokens is
        sized to the stage's answers where the endpoint charges it against a TPM limit;
        `at_cap`: the stage's cap whatever was learned."""
        ep = self.endpoint
        json_mode = generation.json_mode and ep.json_mode
        body = self._question(messages, generation, json_mode)
        key = request_key(body if ep.send_seed else {**body, "seed": generation.seed})
        cap = generation.max_tokens
        sized = ep.size_max_tokens and not at_cap and self.limiter.limits_tokens
        max_tokens = self.sizes[stage].max_tokens(cap) if sized else cap
        body[ep.max_tokens_param] = max_tokens
        if ep.stream:
            body.update(STREAM)
        payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        estimate = estimate_tokens(messages) + max_tokens
        return PreparedRequest(key, payload, estimate, max_tokens, cap, json_mode, messages, generation)

    def stored(self, request: PreparedRequest, stage: str) -> StoredResponse | None:
        """The stored answer to this request, if it was ever answered (a replay: counted)."""
        stored = self._store.get_response(request.key)
        if stored is None and self._store.legacy_keys:
            stored = self._store.get_response(self._legacy_key(request))
        if stored is not None:
            self._stats.cache_hits += 1
            self._metrics.cache_hit(self.endpoint.name, self.endpoint.model, stage)
        return stored

    async def complete(
        self,
        request: PreparedRequest,
        stage: str,
        sample_id: str | None = None,
        stored: StoredResponse | None = None,
    ) -> Completion:
        """The answer to `request`: `stored` (what `stored()` found), else asked. One cut by
        max_tokens below the cap is asked again at the cap (or that re-ask replayed)."""
        first = stored or await self.send(request, stage, sample_id)
        cached = stored is not None
        self._learn(stage, first, request.cap)
        if not _cut_below_cap(first, request.cap):
            return _completion([first], cached)
        again = self.prepare(
            request.messages,
            replace(request.generation, seed=at_cap_seed(request.generation.seed)),
            stage,
            at_cap=True,
        )
        second = self.stored(again, stage)
        cached = cached and second is not None
        second = second or await self.send(again, stage, sample_id)
        self._learn(stage, second, request.cap)
        return _completion([first, second], cached)

    async def send(
        self, request: PreparedRequest, stage: str, sample_id: str | None = None
    ) -> StoredResponse:
        """Ask the endpoint (with retries), store the answer, count what it cost. `stage` is a
        metrics label; `sample_id` is kept with the stored answer (for the report)."""
        if not self._sending:
            raise SendingStopped(f"endpoint {self.endpoint.name}: stopping, request not sent")
        stored, usage = await self._send(request, stage, sample_id)
        self._store.put_response(request.key, stored)
        self._stats.usage += usage
        self._stats.tokens_charged += usage.prompt + request.max_tokens
        self._stats.cost_usd += stored.cost_usd
        return stored

    async def _send(
        self, request: PreparedRequest, stage: str, sample_id: str | None
    ) -> tuple[StoredResponse, Usage]:
        ep = self.endpoint
        last_error = ""
        attempt = 0  # failed tries other than 429; a 429 is backpressure, bounded by time instead
        limited_since: float | None = None
        while attempt <= ep.max_retries:
            delay = _backoff(attempt)
            async with self.limiter.slot(request.estimate, stage) as ticket:
                self._budget.check()  # here, not before the limiter wait: only sent requests may finish
                sent = time.monotonic()
                try:
                    reply = await self._http.post_chat(request.payload, ep.stream)
                except TransportError as exc:
                    outcome, last_error = exc.kind, str(exc)
                else:
                    if reply.status == 200:
                        try:
                            stored = self._answer(reply, request)
                        except ValueError as exc:  # not a whole chat completion
                            self.limiter.observe(reply.headers)
                            outcome, last_error = "bad_response", one_line(str(exc))
                        else:
                            self._breaker.success()
                            tokens = parse_usage(stored.usage)
                            cost = cost_usd(tokens, ep.price)
                            cut = stored.finish_reason == "length" and request.max_tokens < request.cap
                            outcome = "cut_below_cap" if cut else "ok"
                            self._stats.requests[outcome] += 1
                            latency = self._report(stage, outcome, sent, tokens, cost, request, reply)
                            ticket.succeeded(
                                tokens.prompt + request.max_tokens,  # the provider's charge
                                reply.headers,
                                latency,
                                first_token_s=reply.first_token_s,
                                completion_tokens=tokens.completion,
                            )
                            stored = replace(
                                stored,
                                cost_usd=cost,
                                stage=stage,
                                sample_id=sample_id,
                                latency_s=latency,
                                max_tokens=request.max_tokens,
                                max_tokens_cap=request.cap,
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
                            ticket.rate_limited(delay, reply.headers)
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

    def _answer(self, reply: Reply, request: PreparedRequest) -> StoredResponse:
        """The answer in a 200's body; ValueError when it is not a whole one."""
        parse = parse_stream if reply.streamed else parse_answer
        stored = parse(reply.body, self.endpoint.name, self.endpoint.model)
        if request.json_mode and not stored.content.strip() and stored.finish_reason != "length":
            raise ValueError("blank answer in JSON mode")
        return stored

    def _report(
        self,
        stage: str,
        outcome: str,
        sent: float,
        usage: Usage | None = None,
        cost: float = 0.0,
        request: PreparedRequest | None = None,
        reply: Reply | None = None,
    ) -> float:
        """Tell the metrics how one HTTP attempt ended; return its latency."""
        latency = time.monotonic() - sent
        ep = self.endpoint
        self._metrics.request(
            RequestEvent(
                ep.name,
                ep.model,
                stage,
                outcome,
                latency,
                usage or Usage(),
                cost,
                max_tokens=request.max_tokens if request else 0,
                first_token_s=reply.first_token_s if reply else None,
            )
        )
        return latency

    def _learn(self, stage: str, answer: StoredResponse, cap: int) -> None:
        """Feed an answer's length to the stage's sizes. One cut by max_tokens counts as the
        cap: all that is known is that it needed more, and leaving it out would teach the
        sizes that long answers are rarer than they are (only the short ones would be seen)."""
        usage = parse_usage(answer.usage)
        self.sizes[stage].observe(usage.prompt, cap if answer.finish_reason == "length" else usage.completion)

    def _question(
        self, messages: list[dict[str, str]], generation: Generation, json_mode: bool
    ) -> dict[str, Any]:
        """The request body without max_tokens and the stream keys."""
        ep = self.endpoint
        body: dict[str, Any] = {
            "model": ep.model,
            "messages": messages,
            "temperature": generation.temperature,
        }
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        if ep.send_seed:
            body["seed"] = generation.seed
        body.update(ep.extra_body)
        return body

    def _legacy_key(self, request: PreparedRequest) -> str:
        """The key stores written before this one used: the body with the stage's max_tokens."""
        generation = request.generation
        body = self._question(request.messages, generation, request.json_mode)
        return request_key({**body, self.endpoint.max_tokens_param: request.cap, "seed": generation.seed})


def _cut_below_cap(answer: StoredResponse, cap: int) -> bool:
    """Cut by a sized max_tokens: a re-ask at the cap may finish it."""
    return answer.finish_reason == "length" and answer.max_tokens is not None and answer.max_tokens < cap


def _completion(answers: list[StoredResponse], cached: bool) -> Completion:
    """The last answer, with the usage and cost of all of them."""
    usage = Usage()
    for answer in answers:
        usage += parse_usage(answer.usage)
    last = answers[-1]
    return Completion(
        content=last.content,
        finish_reason=last.finish_reason,
        usage=usage,
        cost_usd=sum(answer.cost_usd for answer in answers),
        model=last.model,
        endpoint=last.endpoint,
        cached=cached,
        answers=len(answers),
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
