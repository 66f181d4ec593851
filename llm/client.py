"""The LLM client: one per OpenAI-compatible endpoint (and model), with an answer cache.

`LLMClient` turns (messages, generation parameters) into a `Completion`: `prepare` the
body, look for a `cached` answer, and `complete` it (asking the endpoint when nothing is
cached); callers with several endpoints go through `EndpointChain` (`llm/fallback.py`),
which chooses between them. `embed` asks the endpoint's `/embeddings` for vectors, through
the same limiter, retries, breaker, budget and cost accounting. It knows nothing about
AgentRefine, runs or samples: answers go to an `AnswerCache`, and what happened to each
request goes out as one `RequestEvent` to the sinks it was given (`llm/events.py`).

**The store key** is the SHA-256 of the question: the request body without the keys that
only say how long the answer may be (`max_tokens`) or how it is delivered (`stream`,
`stream_options`), so a resumed run finds its stored answers whatever max_tokens it would
send now (`llm/sizing.py` learns it from the answers, and it differs between runs).
The `seed` is part of it: the stages derive it from the sample and attempt, so a deliberate
re-ask gets a fresh answer while a replay hits the cache. (Caches written before this key
was chosen hashed the body with the stage's max_tokens; with `legacy_keys` they are still
read.)

**Charge-aware max_tokens.** Where the endpoint limits tokens per minute (configured, or
learned from its headers), a request is sent with max_tokens sized to the stage's answers
(`CompletionSizes`), not the stage's cap, since OpenAI charges the limit with prompt +
max_tokens when it admits a request; the TPM reservation is what is sent. An answer cut by
`finish_reason: length` below the cap is stored (it was paid) and asked again with more
room (just above the longest recent answer, then the cap: `CompletionSizes`) and a seed
derived from the one before (`reask_seed`), so no sample is lost to the tighter limit and a
resumed run replays every ask. A cut attempt is counted as outcome `cut_below_cap`, and
the whole answer's usage and cost include it.

**Streaming.** With `stream: true` (the default) the answer comes as server-sent events
(with `stream_options.include_usage`, so the usage is exact), which lets a silence timeout
between chunks tell a hung request from a long answer (`llm/transport.py`) and times the
first token; it is assembled when the stream ends (`llm/answers.py`), so what is stored
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

Every HTTP attempt is reported as a `RequestEvent`, and each is cleared with the budget
(`Budget.check`) once it holds a limiter slot, right before it is sent; answers replayed
from the cache are free and never refused (reported with outcome `cached`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson
import structlog

from llm.answers import parse_answer, parse_embeddings, parse_stream
from llm.breaker import CircuitBreaker
from llm.cache import Answer, AnswerCache
from llm.config import Endpoint
from llm.events import CACHED, RequestEvent, Sink, log_failures
from llm.limiter import EndpointLimiter
from llm.sizing import CompletionSizes
from llm.transport import AiohttpTransport, Reply, Transport, TransportError, one_line
from llm.usage import Usage, cost_usd, parse_usage

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RATE_LIMIT_PATIENCE_S = 600.0  # give a request up after this long of uninterrupted 429s
FATAL_STATUSES = frozenset((401, 403, 404))  # the configuration is wrong: retrying cannot help
REQUEST_SPECIFIC = frozenset((400, 413, 422))  # statuses caused by one request, not by the configuration
REFUSALS = FATAL_STATUSES | REQUEST_SPECIFIC  # answers that are never retried
STREAM = {"stream": True, "stream_options": {"include_usage": True}}
CHAT_PATH = "/chat/completions"
EMBEDDINGS_PATH = "/embeddings"
log = structlog.get_logger()


class FatalEndpointError(Exception):
    """The endpoint refuses the configuration (bad key, unknown model, bad request)."""


class RequestFailed(Exception):
    """A request still failed after all retries, or the endpoint refused this one request."""


class SendingStopped(Exception):
    """The client is stopping: no new request is sent (what is cached is still replayed)."""


class BatchUnanswered(RequestFailed):
    """Batch mode: no batch answered this request (its rounds are spent, or it goes online)."""


class Batcher(Protocol):
    """Batch mode's way of answering (`llm/batch.py`): the request goes into the next round's
    batch, and its answer (priced, cached and reported) comes back when that batch ends."""

    online_fallback: bool

    async def ask(
        self, key: str, payload: bytes, stage: str, max_tokens: int, cap: int, estimate: int
    ) -> Answer: ...


class Gate(Protocol):
    """Whether a request may be sent now (a `Budget`): `check` raises when not."""

    def check(self) -> None: ...


@dataclass(frozen=True)
class Completion:
    """An answer as the caller sees it: the message, and what it cost in all (an attempt cut
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
    `max_tokens` is the caller's cap."""

    temperature: float
    max_tokens: int
    seed: int
    json_mode: bool = True


@dataclass(frozen=True)
class PreparedRequest:
    """One request ready to send: its cache key, the exact bytes, the TPM reservation, the
    max_tokens sent against the caller's cap, and what it was made from (for the re-ask).
    `sizable`: max_tokens is the endpoint's choice (not a re-ask's), made again from what the
    stage's answers say when the request leaves (it may have waited behind many others, or
    the TPM limit may have been learned meanwhile)."""

    key: str
    payload: bytes
    estimate: int
    max_tokens: int
    cap: int
    json_mode: bool
    messages: list[dict[str, str]]
    generation: Generation
    sizable: bool = False


@dataclass(frozen=True)
class _Read:
    """What a 200 answer held: the caller's value, its tokens, and how it ended."""

    value: Any
    usage: Usage
    outcome: str = "ok"


def request_key(body: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON request body."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """A cheap prompt-size estimate (about 4 characters a token) for TPM reservations."""
    return sum(len(m.get("content") or "") for m in messages) // 4 + 4 * len(messages) + 3


def reask_seed(seed: int) -> int:
    """The seed of the re-ask of an answer cut below the cap: a request of its own (the
    first re-ask of a question has had this seed since re-asks went to the cap directly)."""
    digest = hashlib.sha256(f"{seed}:at-cap".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class LLMClient:
    """Chat completions and embeddings against one endpoint, answers kept in `cache`."""

    def __init__(
        self,
        endpoint: Endpoint,
        base_url: str | None = None,
        *,
        cache: AnswerCache | None = None,
        sinks: Sequence[Sink] = (log_failures,),
        budget: Gate | None = None,
        transport: Transport | None = None,
        legacy_keys: bool = False,
        batch: Batcher | None = None,
        limit_share: float = 1.0,
    ) -> None:
        """`base_url` overrides the endpoint's (an endpoint started by the caller); `transport`
        replaces HTTP (tests); `legacy_keys` also looks answers up under the keys of caches
        written before max_tokens left the key; `batch` answers what is not cached through the
        provider's Batch API instead of online (batch mode); `limit_share` is the part of the
        endpoint's limits this client may use (`EndpointLimiter`'s `share`)."""
        self.batch = batch
        self.endpoint = endpoint
        self._cache = cache
        self._sinks = tuple(sinks)
        self._budget = budget
        self._legacy_keys = legacy_keys
        self.limiter = EndpointLimiter(endpoint.limits, endpoint.name, share=limit_share)
        self.sizes: defaultdict[str, CompletionSizes] = defaultdict(CompletionSizes)  # by stage
        self._breaker = CircuitBreaker(f"endpoint {endpoint.name} ({endpoint.model})", endpoint.breaker)
        self._sending = True
        url = base_url or endpoint.base_url
        if transport is None:
            if url is None:
                raise ValueError(f"endpoint {endpoint.name}: no base_url")
            transport = AiohttpTransport(
                url, endpoint.api_key(), endpoint.timeout_s, endpoint.limits.max_concurrency
            )
        self._transport = transport

    async def aclose(self) -> None:
        await self._transport.aclose()

    def stop_sending(self) -> None:
        """Graceful stop: requests already sent finish and are cached; no new one is sent."""
        self._sending = False

    def prepare(
        self,
        messages: list[dict[str, str]],
        generation: Generation,
        stage: str,
        max_tokens: int | None = None,
    ) -> PreparedRequest:
        """The request as this endpoint will receive it, and its cache key. max_tokens is
        the one given (a re-ask), else sized to the stage's answers where the endpoint
        charges it against a TPM limit, else the stage's cap."""
        ep = self.endpoint
        json_mode = generation.json_mode and ep.json_mode
        body = self._question(messages, generation, json_mode)
        key = request_key(body if ep.send_seed else {**body, "seed": generation.seed})
        cap = generation.max_tokens
        sizable = max_tokens is None and ep.size_max_tokens and self.batch is None  # no TPM in a batch
        if max_tokens is None:
            max_tokens = self._sized(stage, cap) if sizable else cap
        body[ep.max_tokens_param] = max_tokens
        if ep.stream:
            body.update(STREAM)
        payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        estimate = estimate_tokens(messages) + max_tokens
        return PreparedRequest(
            key, payload, estimate, max_tokens, cap, json_mode, messages, generation, sizable
        )

    def cached(self, request: PreparedRequest, stage: str) -> Answer | None:
        """The cached answer to this request, if it was ever answered (a replay: reported)."""
        if self._cache is None:
            return None
        answer = self._cache.get(request.key)
        if answer is None and self._legacy_keys:
            answer = self._cache.get(self._legacy_key(request))
        if answer is not None:
            self._emit(RequestEvent(self.endpoint.name, self.endpoint.model, stage, CACHED))
        return answer

    async def complete(
        self, request: PreparedRequest, stage: str, cached: Answer | None = None
    ) -> Completion:
        """The answer to `request`: `cached` (what `cached()` found), else asked. One cut by
        max_tokens below the cap is asked again with more room, then at the cap (or those
        re-asks replayed)."""
        answers = [cached or await self.send(request, stage)]
        from_cache = cached is not None
        generation = request.generation
        while _cut_below_cap(answers[-1], request.cap):
            room = self.sizes[stage].reask_max_tokens(request.cap)
            generation = replace(generation, seed=reask_seed(generation.seed))
            again = self.prepare(
                request.messages,
                generation,
                stage,
                max_tokens=room if room > (answers[-1].max_tokens or 0) else request.cap,
            )
            answer = self.cached(again, stage)
            from_cache = from_cache and answer is not None
            answers.append(answer or await self.send(again, stage))
        self._learn(stage, answers[-1], request.cap)
        return _completion(answers, from_cache)

    async def send(self, request: PreparedRequest, stage: str) -> Answer:
        """Ask the endpoint (with retries) and cache the answer. `stage` is the caller's label
        for the events, and what max_tokens is sized by."""
        self._check_sending()
        if self.batch is not None:
            try:
                return await self.batch.ask(
                    request.key, request.payload, stage, request.max_tokens, request.cap, request.estimate
                )
            except BatchUnanswered:
                if not self.batch.online_fallback:
                    raise
                log.info("batch_request_online", endpoint=self.endpoint.name, stage=stage)
        current = request

        def outgoing() -> tuple[bytes, int, int]:
            nonlocal current
            current = self._sized_now(request, stage)
            return current.payload, current.estimate, current.max_tokens

        read, latency, cost = await self._exchange(
            CHAT_PATH, outgoing, stage, lambda reply: self._chat_answer(reply, current)
        )
        answer = replace(
            read.value,
            cost_usd=cost,
            stage=stage,
            latency_s=latency,
            max_tokens=current.max_tokens,
            max_tokens_cap=request.cap,
        )
        if self._cache is not None:
            self._cache.put(request.key, answer)
        return answer

    async def embed(self, texts: Sequence[str], stage: str = "embeddings") -> list[list[float]]:
        """One vector per text from the endpoint's `/embeddings` (the endpoint's model), in order."""
        self._check_sending()
        payload = orjson.dumps(
            {"model": self.endpoint.model, "input": list(texts), "encoding_format": "float"}
        )
        estimate = sum(len(text) for text in texts) // 4 + len(texts)

        def read(reply: Reply) -> _Read:
            vectors, usage = parse_embeddings(reply.body, len(texts))
            return _Read(vectors, parse_usage(usage))

        result, _, _ = await self._exchange(EMBEDDINGS_PATH, lambda: (payload, estimate, 0), stage, read)
        return result.value

    def _sized_now(self, request: PreparedRequest, stage: str) -> PreparedRequest:
        """`request` as it leaves now: a sized max_tokens chosen again from what the stage's
        answers say by now, under a TPM limit (else the cap)."""
        if not request.sizable or self._sized(stage, request.cap) == request.max_tokens:
            return request
        return self.prepare(request.messages, request.generation, stage)

    def _sized(self, stage: str, cap: int) -> int:
        """The max_tokens the stage's answers call for under a TPM limit; else the cap."""
        return self.sizes[stage].max_tokens(cap) if self.limiter.limits_tokens else cap

    def _check_sending(self) -> None:
        if not self._sending:
            raise SendingStopped(f"endpoint {self.endpoint.name}: stopping, request not sent")

    async def _exchange(
        self,
        path: str,
        outgoing: Callable[[], tuple[bytes, int, int]],
        stage: str,
        read: Callable[[Reply], _Read],
    ) -> tuple[_Read, float, float]:
        """Send the request until a 200 answer reads well (`read`; ValueError: a bad answer,
        retried), with backoff; report every attempt. `outgoing` gives its bytes, its TPM
        reservation and its max_tokens once it holds a concurrency slot, before the token
        bucket is asked. Returns what was read, its latency and its cost."""
        ep = self.endpoint
        stream = ep.stream and path == CHAT_PATH
        last_error = ""
        attempt = 0  # failed tries other than 429; a 429 is backpressure, bounded by time instead
        limited_since: float | None = None
        sending: list[tuple[bytes, int, int]] = []  # what this attempt sends

        def estimate() -> int:
            sending[:] = [outgoing()]
            return sending[0][1]

        while attempt <= ep.max_retries:
            delay = _backoff(attempt)
            async with self.limiter.slot(estimate, stage) as ticket:
                payload, _, max_tokens = sending[0]
                self._check_budget()  # here, not before the limiter wait: only sent requests may finish
                sent = time.monotonic()
                try:
                    reply = await self._transport.post(path, payload, stream)
                except TransportError as exc:
                    outcome, last_error = exc.kind, str(exc)
                else:
                    if reply.status == 200:
                        try:
                            result = read(reply)
                        except ValueError as exc:  # not a whole answer
                            self.limiter.observe(reply.headers)
                            outcome, last_error = "bad_response", one_line(str(exc))
                        else:
                            self._breaker.success()
                            latency = time.monotonic() - sent
                            cost = cost_usd(result.usage, ep.price)
                            self._emit(
                                RequestEvent(
                                    ep.name,
                                    ep.model,
                                    stage,
                                    result.outcome,
                                    latency,
                                    result.usage,
                                    cost,
                                    max_tokens,
                                    reply.first_token_s,
                                )
                            )
                            ticket.succeeded(
                                result.usage.prompt + max_tokens,  # the provider's charge
                                reply.headers,
                                latency,
                                first_token_s=reply.first_token_s,
                                completion_tokens=result.usage.completion,
                            )
                            return result, latency, cost
                    else:
                        self.limiter.observe(reply.headers)
                        if reply.status in REFUSALS:
                            message = reply.error_message()
                            self._failed(stage, str(reply.status), sent, message)
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
            self._failed(stage, outcome, sent, last_error)
            if outcome == "429":
                limited_since = limited_since or time.monotonic()
                if time.monotonic() - limited_since > RATE_LIMIT_PATIENCE_S:
                    raise RequestFailed(f"endpoint {ep.name}: rate limited for {RATE_LIMIT_PATIENCE_S:.0f} s")
            else:
                attempt += 1
                self._breaker.failure(f"{outcome}: {last_error}")
            await asyncio.sleep(delay)
        raise RequestFailed(f"endpoint {ep.name}: gave up after {ep.max_retries + 1} tries: {last_error}")

    def _check_budget(self) -> None:
        if self._budget is not None:
            self._budget.check()

    def _chat_answer(self, reply: Reply, request: PreparedRequest) -> _Read:
        """The answer in a 200's body; ValueError when it is not a whole one."""
        parse = parse_stream if reply.streamed else parse_answer
        answer = parse(reply.body, self.endpoint.name, self.endpoint.model)
        if request.json_mode and not answer.content.strip() and answer.finish_reason != "length":
            raise ValueError("blank answer in JSON mode")
        cut = answer.finish_reason == "length" and request.max_tokens < request.cap
        return _Read(answer, parse_usage(answer.usage), "cut_below_cap" if cut else "ok")

    def _failed(self, stage: str, outcome: str, sent: float, error: str) -> None:
        ep = self.endpoint
        self._emit(RequestEvent(ep.name, ep.model, stage, outcome, time.monotonic() - sent, error=error))

    def _emit(self, event: RequestEvent) -> None:
        for sink in self._sinks:
            sink(event)

    def _learn(self, stage: str, answer: Answer, cap: int) -> None:
        """Feed an answer's length to the stage's sizes: once per question, from its last ask.
        An answer cut by a sized max_tokens only says it needed more; its last re-ask says
        how much (learning the cut one as the cap instead made every cut look as if no
        max_tokens below the cap could have saved it, so the sizes drifted down and cut ~5%
        of the answers, each re-asked at prompt + cap). One cut at the cap counts as the cap."""
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
        """The key caches written before this one used: the body with the stage's max_tokens."""
        generation = request.generation
        body = self._question(request.messages, generation, request.json_mode)
        return request_key({**body, self.endpoint.max_tokens_param: request.cap, "seed": generation.seed})


def _cut_below_cap(answer: Answer, cap: int) -> bool:
    """Cut by a sized max_tokens: a re-ask with more room may finish it."""
    return answer.finish_reason == "length" and answer.max_tokens is not None and answer.max_tokens < cap


def _completion(answers: list[Answer], cached: bool) -> Completion:
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
