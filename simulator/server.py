"""The simulator's aiohttp app: an OpenAI-compatible chat completions endpoint.

Routes: ``POST /v1/chat/completions``, ``POST /v1/embeddings`` (`simulator.embeddings`),
``GET /v1/models`` (and ``/v1/models/{id}``),
and ``GET /_sim/stats`` (test/ops): ``{"requests": n, "by_status": {"200": n, ...},
"received": {digest: count}, "answered": {digest: count}}`` where digest is the sha256
hex of the request body without ``stream``, ``stream_options``, ``max_tokens`` and
``max_completion_tokens``, serialised by ``orjson.dumps(body, option=OPT_SORT_KEYS)``
(`content.request_digest`: the question, however long or however delivered its answer).
``by_status`` counts HTTP statuses plus ``"reset"`` (connection aborted),
``"truncated"`` (a 200 with a cut body), ``"empty_choices"`` and ``"length"`` (200s with
those faults), ``"hang"`` (client gone before the delayed answer) and ``"499"`` (client
gone before a normal answer). ``received`` counts every request taken on for generation
(past authorisation, validation and rate limits: what a provider bills), ``answered``
only complete 200 answers.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections import Counter
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from simulator import embeddings as embedding_content
from simulator import faults, tokens
from simulator.content import (
    canonical_digest,
    content_digest,
    generate,
    max_tokens_of,
    request_digest,
    wants_json,
)
from simulator.limits import Decision, RateLimiter
from simulator.settings import SimSettings

STATE: web.AppKey[SimState] = web.AppKey("sim_state")
DEFAULT_COMPLETION_ESTIMATE = 1024
MAX_CHOICES = 8
STREAM_CHUNK_CHARS = 256
_ROLES = frozenset(("system", "user", "assistant", "tool", "developer", "function"))


class SimState:
    """Mutable per-app state: RNG for faults and latency, limits, cache, stats."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.rng = random.Random(f"sim-faults:{settings.seed}")
        self.limiter = RateLimiter(
            settings.rpm, settings.tpm, burst_s=settings.burst_s, start_full=settings.start_full
        )
        self.slots = asyncio.Semaphore(settings.queue_knee) if settings.queue_knee else None
        self.cache = tokens.PrefixCache()
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.fingerprint = "fp_" + canonical_digest(settings.to_dict())[:10]

    async def serve(self) -> None:
        """Wait for a free place in the batch (`queue_knee`), then for the request's latency."""
        if self.slots is None:
            await asyncio.sleep(self.latency())
            return
        async with self.slots:
            await asyncio.sleep(self.latency())

    def latency(self) -> float:
        s = self.settings
        if s.latency_median_s <= 0:
            return 0.0
        return self.rng.lognormvariate(math.log(s.latency_median_s), s.latency_sigma)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _authorised(request: web.Request, st: SimState) -> bool:
    key = st.settings.api_key
    return not key or request.headers.get("Authorization", "") == f"Bearer {key}"


def _unauthorised(request: web.Request) -> web.Response:
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    shown = (given[:3] + "*" * max(0, len(given) - 7) + given[-4:]) if len(given) > 7 else "***"
    return _json(
        401,
        error_body(
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            "invalid_api_key",
        ),
    )


def _validate(body: Any) -> str | None:
    """An error message for a malformed chat completion request, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "'messages' must be a non-empty array."
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"Invalid value for 'messages[{i}].role'."
        c = m.get("content")
        if c is not None and not isinstance(c, str | list):
            return f"Invalid type for 'messages[{i}].content': expected a string or an array."
    for key in ("max_tokens", "max_completion_tokens", "n", "seed"):
        v = body.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            return f"Invalid type for '{key}': expected an integer."
    for key in ("max_tokens", "max_completion_tokens", "n"):
        v = body.get(key)
        if v is not None and v < 1:
            return f"Invalid '{key}': integer below minimum value 1."
    if body.get("n") is not None and body["n"] > MAX_CHOICES:
        return f"Invalid 'n': integer above maximum value {MAX_CHOICES}."
    rf = body.get("response_format")
    if rf is not None and (
        not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema")
    ):
        return "Invalid 'response_format': expected type 'text', 'json_object' or 'json_schema'."
    return None


def _refused(messages: list[Any], phrases: list[str]) -> bool:
    if not phrases:
        return False
    text = " ".join(tokens.message_text(m) for m in messages).lower()
    return any(phrase.lower() in text for phrase in phrases)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    s = st.settings
    st.requests += 1
    if not _authorised(request, st):
        st.by_status["401"] += 1
        return _unauthorised(request)
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        st.by_status["400"] += 1
        return _unparsable()
    problem = _validate(body)
    if problem:
        st.by_status["400"] += 1
        return _json(400, error_body(problem, "invalid_request_error"))
    if body["model"] not in s.models:
        st.by_status["404"] += 1
        return _no_such_model(body["model"])
    if body["model"] in s.denied_models:
        st.by_status["403"] += 1
        return _json(
            403,
            error_body(
                f"Your project does not have access to model `{body['model']}`.",
                "invalid_request_error",
                None,
                "model_not_found",
            ),
        )
    if wants_json(body) and not s.json_mode:
        st.by_status["400"] += 1
        return _json(
            400,
            error_body(
                f"'response_format' of type '{body['response_format'].get('type')}' is not "
                "supported with this model.",
                "invalid_request_error",
                "response_format",
            ),
        )

    started = time.monotonic()
    messages = body["messages"]
    prompt_tokens = tokens.count_messages(messages)
    if _refused(messages, s.refused_phrases):
        st.by_status["400"] += 1
        return _json(
            400,
            error_body(
                "Invalid prompt: your prompt was flagged as potentially violating our usage policy.",
                "invalid_request_error",
                None,
                "invalid_prompt",
            ),
        )
    if s.max_context_tokens and prompt_tokens > s.max_context_tokens:
        st.by_status["400"] += 1
        return _json(
            400,
            error_body(
                f"This model's maximum context length is {s.max_context_tokens} tokens. However, your "
                f"messages resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
                "invalid_request_error",
                "messages",
                "context_length_exceeded",
            ),
        )
    limit = max_tokens_of(body)
    n = body.get("n") or 1
    decision = st.limiter.admit(prompt_tokens + (limit or DEFAULT_COMPLETION_ESTIMATE) * n)
    if decision.limited:
        st.by_status["429"] += 1
        headers = {**st.limiter.headers(), **st.limiter.retry_headers(decision)}
        return _json(429, st.limiter.error_body(decision), headers)

    digest = request_digest(body)
    st.received[digest] += 1
    fault = faults.choose_fault(st.rng, s.faults)
    if s.keepalive_s > 0 and fault != "5xx":
        return await _keepalive_answer(request, st, body, prompt_tokens, decision, fault)
    await st.serve()
    if fault == "5xx":
        status, err = faults.server_error(st.rng)
        st.by_status[str(status)] += 1
        return _json(status, err, st.limiter.headers())
    if fault == "reset":
        st.by_status["reset"] += 1
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # nothing is sent; aiohttp drops the connection quietly
    if fault == "hang":
        await asyncio.sleep(s.faults.hang_s)
    if request.transport is None or request.transport.is_closing():
        st.by_status["hang" if fault == "hang" else "499"] += 1
        raise asyncio.CancelledError

    completion = _completion(st, body, prompt_tokens, decision, fault)
    headers = {
        **st.limiter.headers(),
        "x-request-id": "req_" + uuid.uuid4().hex[:24],
        "openai-processing-ms": str(int((time.monotonic() - started) * 1000)),
    }
    if body.get("stream") is True:
        return await _stream(request, st, completion, body, headers, fault, digest)
    payload = orjson.dumps(completion)
    if fault == "truncated":
        st.by_status["truncated"] += 1
        return web.Response(
            status=200,
            body=faults.truncate_body(payload, st.rng),
            content_type="application/json",
            headers=headers,
        )
    st.by_status[fault if fault in ("empty_choices", "length") else "200"] += 1
    st.answered[digest] += 1
    return web.Response(status=200, body=payload, content_type="application/json", headers=headers)


async def embeddings(request: web.Request) -> web.Response:
    """`POST /v1/embeddings`: auth, validation, rate limits and latency as for chat; no faults."""
    st = request.app[STATE]
    st.requests += 1
    if not _authorised(request, st):
        st.by_status["401"] += 1
        return _unauthorised(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        st.by_status["400"] += 1
        return _unparsable()
    problem = embedding_content.problem(body)
    if problem:
        st.by_status["400"] += 1
        return _json(400, error_body(problem, "invalid_request_error"))
    if body["model"] not in st.settings.embedding_models:
        st.by_status["404"] += 1
        return _no_such_model(body["model"])
    prompt_tokens = sum(tokens.count_text(text) for text in embedding_content.inputs(body))
    decision = st.limiter.admit(prompt_tokens)
    if decision.limited:
        st.by_status["429"] += 1
        headers = {**st.limiter.headers(), **st.limiter.retry_headers(decision)}
        return _json(429, st.limiter.error_body(decision), headers)
    await asyncio.sleep(st.latency())
    st.by_status["200"] += 1
    st.answered[canonical_digest(body)] += 1
    return _json(200, embedding_content.response(body, prompt_tokens), st.limiter.headers())


def _unparsable() -> web.Response:
    return _json(
        400,
        error_body(
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly.)",
            "invalid_request_error",
        ),
    )


def _no_such_model(name: str) -> web.Response:
    return _json(
        404,
        error_body(
            f"The model `{name}` does not exist or you do not have access to it.",
            "invalid_request_error",
            None,
            "model_not_found",
        ),
    )


def _completion(
    st: SimState, body: dict[str, Any], prompt_tokens: int, decision: Decision, fault: str | None
) -> dict[str, Any]:
    """The chat completion for this request (a "length" fault cuts it, "empty_choices" drops
    its choices)."""
    s = st.settings
    n = body.get("n") or 1
    seed_digest = content_digest(body)
    gens = [generate(body, s, i, seed_digest) for i in range(n)]
    if fault == "length":
        gens = [
            replace(g, content=faults.cut_content(g.content, st.rng), finish_reason="length") for g in gens
        ]
    completion_tokens = sum(tokens.count_text(g.content) for g in gens)
    st.limiter.reconcile(decision.charged_tokens, prompt_tokens + completion_tokens)
    cached = st.cache.cached_tokens(body["messages"])
    completion = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": g.content, "refusal": None},
                "finish_reason": g.finish_reason,
                "logprobs": None,
            }
            for i, g in enumerate(gens)
            if fault != "empty_choices"
        ],
        "usage": tokens.usage_block(prompt_tokens, completion_tokens, cached, s.usage_style),
        "system_fingerprint": st.fingerprint,
    }
    return completion


async def _keepalive_answer(
    request: web.Request,
    st: SimState,
    body: dict[str, Any],
    prompt_tokens: int,
    decision: Decision,
    fault: str | None,
) -> web.StreamResponse:
    """DeepSeek's way: 200 at once, a blank line (a `: keep-alive` comment when streaming)
    every `keepalive_s` while the request waits, then the JSON body (or the events). A reset
    drops the connection after the blank lines; a hang goes silent; a truncated answer cuts
    the body."""
    stream = body.get("stream") is True
    resp = web.StreamResponse(
        status=200,
        headers={
            **st.limiter.headers(),
            "Content-Type": "text/event-stream" if stream else "application/json",
            "x-request-id": "req_" + uuid.uuid4().hex[:24],
        },
    )
    await resp.prepare(request)
    waiting = asyncio.ensure_future(st.serve())
    try:
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=st.settings.keepalive_s)
            if not waiting.done():
                await resp.write(b": keep-alive\n\n" if stream else b"\n")
    except ConnectionResetError:
        waiting.cancel()
        st.by_status["499"] += 1
        return resp
    if fault == "reset":
        st.by_status["reset"] += 1
        if request.transport is not None:
            request.transport.abort()
        return resp
    if fault == "hang":
        await asyncio.sleep(st.settings.faults.hang_s)
        st.by_status["hang"] += 1
        return resp
    completion = _completion(st, body, prompt_tokens, decision, fault)
    if stream:
        return await _stream(request, st, completion, body, {}, fault, request_digest(body), resp)
    payload = orjson.dumps(completion)
    if fault == "truncated":
        st.by_status["truncated"] += 1
        payload = faults.truncate_body(payload, st.rng)
    else:
        st.by_status[fault if fault in ("empty_choices", "length") else "200"] += 1
        st.answered[request_digest(body)] += 1
    await resp.write(payload)
    await resp.write_eof()
    return resp


async def _stream(
    request: web.Request,
    st: SimState,
    completion: dict[str, Any],
    body: dict[str, Any],
    headers: dict[str, str],
    fault: str | None,
    digest: str,
    resp: web.StreamResponse | None = None,
) -> web.StreamResponse:
    """Server-sent events like OpenAI's `stream: true` (a truncated fault cuts the stream),
    on `resp` if it was prepared already."""
    if resp is None:
        resp = web.StreamResponse(
            status=200, headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
    base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    events: list[bytes] = []
    for ch in completion["choices"]:
        i, content = ch["index"], ch["message"]["content"]
        events.append(
            orjson.dumps(
                {
                    **base,
                    "choices": [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                            "logprobs": None,
                        }
                    ],
                }
            )
        )
        for k in range(0, len(content), STREAM_CHUNK_CHARS):
            events.append(
                orjson.dumps(
                    {
                        **base,
                        "choices": [
                            {
                                "index": i,
                                "delta": {"content": content[k : k + STREAM_CHUNK_CHARS]},
                                "finish_reason": None,
                                "logprobs": None,
                            }
                        ],
                    }
                )
            )
        events.append(
            orjson.dumps(
                {
                    **base,
                    "choices": [
                        {"index": i, "delta": {}, "finish_reason": ch["finish_reason"], "logprobs": None}
                    ],
                }
            )
        )
    opts = body.get("stream_options")
    if isinstance(opts, dict) and opts.get("include_usage"):
        events.append(orjson.dumps({**base, "choices": [], "usage": completion["usage"]}))
    if fault == "truncated":
        events = events[: max(1, len(events) // 2)]
    data = b"".join(b"data: " + e + b"\n\n" for e in events)
    await resp.write(data if fault == "truncated" else data + b"data: [DONE]\n\n")
    if fault == "truncated":
        st.by_status["truncated"] += 1
        if request.transport is not None:
            request.transport.abort()
        return resp
    await resp.write_eof()
    st.by_status[fault if fault in ("empty_choices", "length") else "200"] += 1
    st.answered[digest] += 1
    return resp


async def list_models(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not _authorised(request, st):
        return _unauthorised(request)
    return _json(200, {"object": "list", "data": [_model(m) for m in st.settings.models]})


async def get_model(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not _authorised(request, st):
        return _unauthorised(request)
    name = request.match_info["model"]
    if name not in st.settings.models:
        return _no_such_model(name)
    return _json(200, _model(name))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1715367049, "owned_by": "simulator"}


async def stats(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return _json(
        200,
        {
            "requests": st.requests,
            "by_status": dict(st.by_status),
            "received": dict(st.received),
            "answered": dict(st.answered),
        },
    )


def build_app(settings: SimSettings) -> web.Application:
    """The simulator app for these settings."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = SimState(settings)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_get("/_sim/stats", stats)
    return app


async def start(
    settings: SimSettings, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 1.0
) -> tuple[web.AppRunner, int]:
    """Start the app in the running loop; returns the runner (call `cleanup()`) and the bound port."""
    runner = web.AppRunner(build_app(settings), access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]
