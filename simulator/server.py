"""The simulator's aiohttp app: an OpenAI-compatible chat completions endpoint.

Routes: ``POST /v1/chat/completions``, ``POST /v1/embeddings`` (`simulator.embeddings`),
``GET /v1/models`` (and ``/v1/models/{id}``), the files and batches API
(`simulator.batches`), and ``GET /_sim/stats`` (tests, `make bench`):

- ``requests``: every chat and embeddings request; ``by_status``: HTTP statuses plus
  ``"reset"`` (connection aborted), ``"truncated"`` (a cut body or stream), ``"empty_choices"``
  and ``"length"`` (200s with those faults), ``"hang"`` (client gone during a hang) and
  ``"499"`` (client gone before the answer); ``concurrency_429``: the 429s of those for the
  cap on concurrent requests (``max_concurrent``);
- ``received`` / ``answered``: ``{digest: count}`` of the requests taken on for generation
  (past authorisation, validation, the concurrency cap and rate limits: what a provider
  bills) and of the complete answers; digest is the sha256 hex of the request body without
  ``stream``, ``stream_options``, ``max_tokens`` and ``max_completion_tokens``, serialised by
  ``orjson.dumps(body, option=OPT_SORT_KEYS)`` (`content.request_digest`: the question,
  however long or however delivered its answer, as the service keys its store).
  ``?digests=0`` leaves them out;
- ``admitted`` (requests taken on), ``in_flight`` (``now``, ``max``, ``mean`` since start,
  ``request_seconds``: its time integral, ``uptime_s``), ``tokens`` (``charged``: prompt +
  max_tokens at admission, as the provider counts it; ``used`` = ``prompt`` + ``completion``
  of the answers generated in full), ``answers`` (``generated``, ``complete``, and the summed
  seconds of the complete ones ``queued_s``, ``ttft_s``, ``latency_s``), ``hangs``
  (``given_up``: hung requests the client left, ``silence_s`` / ``max_silence_s``: how long
  it had heard nothing when it did): `simulator.load`;
- ``batch_api``: the files and batches API (`simulator.batches`): batches created, by status,
  and what a client must never cause (``answered_twice``, ``inputs_batched_twice``);
- ``batch``: sequences ``running`` (in the batch) and ``queued`` (waiting for a place);
- ``limits``: the profile, time_scale, and the limits in force per real minute (rpm, tpm;
  0 = none), max_concurrent, max_num_seqs and the ``knee`` (`simulator.latency.knee`).

The simulator is built with aiohttp's handler cancellation: a client that goes away ends
its request at once (its place in the batch and under the cap is freed), as at a provider.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from simulator import batches, faults, tokens, validation
from simulator import embeddings as embedding_content
from simulator.answer import Answer
from simulator.content import canonical_digest, max_tokens_of, request_digest, wants_json
from simulator.delivery import deliver
from simulator.settings import SimSettings
from simulator.state import SimState
from simulator.validation import error_body

STATE: web.AppKey[SimState] = web.AppKey("sim_state")
DEFAULT_COMPLETION_ESTIMATE = 1024


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
    problem = validation.problem(body)
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
    if validation.refused(messages, s.refused_phrases):
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
    if s.max_concurrent and st.load.in_flight >= s.max_concurrent:
        st.by_status["429"] += 1
        st.concurrency_429 += 1
        return _json(429, _concurrency_error(s.max_concurrent))
    limit = max_tokens_of(body)
    decision = st.limiter.admit(prompt_tokens + (limit or DEFAULT_COMPLETION_ESTIMATE) * (body.get("n") or 1))
    if decision.limited:
        st.by_status["429"] += 1
        headers = {**st.limiter.headers(), **st.limiter.retry_headers(decision)}
        return _json(429, st.limiter.error_body(decision), headers)
    digest = request_digest(body)
    st.received[digest] += 1
    fault = faults.choose_fault(st.rng, s.faults)
    answer = Answer(body, digest, prompt_tokens, decision.charged_tokens, fault, started)
    return await deliver(request, st, answer)


def _concurrency_error(cap: int) -> dict[str, Any]:
    """DeepSeek-style refusal beyond the key's concurrent requests (no rate-limit headers)."""
    return error_body(
        f"Rate Limit Reached: this API key has {cap} requests in progress, the most it may have "
        "at once. Please pace your requests reasonably.",
        "rate_limit_reached_error",
        None,
        "rate_limit_reached",
    )


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
    await asyncio.sleep(st.model.base_s())
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
    body: dict[str, Any] = {
        "requests": st.requests,
        "by_status": dict(st.by_status),
        "concurrency_429": st.concurrency_429,
        **st.load.snapshot(),
        "batch": {"running": st.model.batch.running, "queued": st.model.batch.queued},
        "limits": st.limits(),
        "batch_api": request.app[batches.BATCH_API].stats(),
    }
    if request.query.get("digests", "1") != "0":
        body["received"] = dict(st.received)
        body["answered"] = dict(st.answered)
    return _json(200, body)


def _guard(request: web.Request) -> web.Response | None:
    return None if _authorised(request, request.app[STATE]) else _unauthorised(request)


def build_app(settings: SimSettings, state_dir: str | None = None) -> web.Application:
    """The simulator app for these settings; `state_dir` keeps its files and batches (a
    temporary directory when None)."""
    app = web.Application(client_max_size=batches.MAX_FILE_BYTES + 1024 * 1024)
    st = app[STATE] = SimState(settings)
    batches.add_routes(app, batches.BatchApi(st, state_dir), _guard)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_get("/_sim/stats", stats)
    return app


async def start(
    settings: SimSettings,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
    state_dir: str | None = None,
) -> tuple[web.AppRunner, int]:
    """Start the app in the running loop; returns the runner (call `cleanup()`) and the bound port."""
    runner = web.AppRunner(
        build_app(settings, state_dir),
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]
