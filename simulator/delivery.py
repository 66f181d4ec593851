"""How an admitted chat completion reaches the client, paced by the latency model
(`simulator.latency`), with its fault (`simulator.faults`) if one was drawn.

- Non-streaming: the whole body once the last token is decoded. With `keepalive_s` (DeepSeek)
  the 200 and its headers go out at once and a blank line follows every `keepalive_s` until
  the body.
- Streaming (`stream: true`, OpenAI's SSE): the role chunk at the first token, then one
  event every `stream_interval_s` of decoding holding the tokens decoded since the last,
  then each choice's finish_reason, the usage chunk (`stream_options.include_usage`) and
  `data: [DONE]`. With `keepalive_s`, `: keep-alive` comment lines until the first token.

Faults: "5xx" answers at the first token, before any byte. Non-streaming "reset" drops the
connection, "truncated" cuts the body and "hang" goes silent for `hang_s`, all once the
answer is ready. Streaming, they strike at a random point in the middle third of the
answer: "reset" aborts the connection, "truncated" ends the stream cleanly without finish,
usage or [DONE], "hang" stalls (connection open, nothing sent) for `hang_s`, then aborts.

Counting (`/_sim/stats`): every admitted request ends with one `by_status` entry: its
status, its fault's name, "hang" (client gone during a hang) or "499" (client gone). An
answer generated in full has its tokens used counted and, with `tpm_refund`, the unused part
of its TPM charge refunded; a complete one is also counted in `answered` and in the answers'
times.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from simulator import answer as answers
from simulator import faults
from simulator.answer import Answer
from simulator.latency import Generation
from simulator.state import SimState

MIN_STREAM_INTERVAL_S = 0.02  # real seconds between SSE events at most time scales: CPU stays low


async def deliver(request: web.Request, st: SimState, answer: Answer) -> web.StreamResponse:
    """Send the answer (see the module docstring); count how it ended."""
    st.load.admitted(answer.charged_tokens)
    answer.sent_at = time.monotonic()
    generation = st.model.generation(answer.prompt_tokens)
    try:
        if answer.fault == "5xx":
            return await _server_error(st, answer, generation)
        if answer.body.get("stream") is True:
            return await _stream(request, st, answer, generation)
        if st.settings.keepalive_s > 0:
            return await _keepalive_answer(request, st, answer, generation)
        return await _whole_answer(request, st, answer, generation)
    except ConnectionResetError:  # the client went away while we wrote
        raise asyncio.CancelledError from None
    finally:
        generation.close()
        st.load.ended()
        if answer.outcome is None and answer.fault == "hang":
            answer.outcome = "hang"  # the client gave up on the silence
            st.load.hang_given_up(time.monotonic() - answer.sent_at)
        st.by_status[answer.outcome or "499"] += 1


async def _first_token(st: SimState, answer: Answer, generation: Generation) -> None:
    """A place in the batch, the time to first token; then the text, and its decoding starts."""
    await generation.first_token()
    answers.write(st, answer)
    generation.decode(answer.decode_tokens)


async def _whole(st: SimState, answer: Answer, generation: Generation) -> None:
    await _first_token(st, answer, generation)
    await generation.last_token()


def _generated(st: SimState, answer: Answer) -> None:
    """The answer was generated in full: refund the unused charge (`tpm_refund`), count the
    tokens used."""
    if st.settings.tpm_refund:
        st.limiter.reconcile(answer.charged_tokens, answer.prompt_tokens + answer.completion_tokens)
    st.load.generated(answer.prompt_tokens, answer.completion_tokens)


def _complete(st: SimState, answer: Answer, generation: Generation) -> None:
    """The client has the whole answer."""
    _generated(st, answer)
    answer.outcome = answer.fault if answer.fault in ("empty_choices", "length") else "200"
    st.answered[answer.digest] += 1
    now = time.monotonic()
    st.load.answered(
        generation.queued_s, generation.first_token_at - answer.admitted_at, now - answer.admitted_at
    )


def _headers(st: SimState, answer: Answer) -> dict[str, str]:
    return {
        **st.limiter.headers(),
        "x-request-id": "req_" + uuid.uuid4().hex[:24],
        "openai-processing-ms": str(int((time.monotonic() - answer.admitted_at) * 1000)),
    }


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _server_error(st: SimState, answer: Answer, generation: Generation) -> web.Response:
    await generation.first_token()
    status, error = faults.server_error(st.rng)
    answer.outcome = str(status)
    return web.Response(
        status=status, body=orjson.dumps(error), content_type="application/json", headers=st.limiter.headers()
    )


async def _whole_answer(
    request: web.Request, st: SimState, answer: Answer, generation: Generation
) -> web.Response:
    await _whole(st, answer, generation)
    if answer.fault == "reset":
        answer.outcome = "reset"
        _abort(request)
        raise asyncio.CancelledError  # nothing is sent; aiohttp drops the connection quietly
    if answer.fault == "hang":
        await asyncio.sleep(st.settings.faults.hang_s * st.settings.time_scale)
    if request.transport is None or request.transport.is_closing():
        raise asyncio.CancelledError  # the client is gone: counted as "hang" or "499"
    payload = _body(st, answer, generation)
    return web.Response(
        status=200, body=payload, content_type="application/json", headers=_headers(st, answer)
    )


def _body(st: SimState, answer: Answer, generation: Generation) -> bytes:
    """The JSON body of a non-streaming answer (cut by a "truncated" fault), counted."""
    payload = orjson.dumps(answer.completion)
    if answer.fault != "truncated":
        _complete(st, answer, generation)
        return payload
    _generated(st, answer)
    answer.outcome = "truncated"
    return faults.truncate_body(payload, st.rng)


async def _keep_alive(
    resp: web.StreamResponse, answer: Answer, waiting: asyncio.Future[None], line: bytes, every_s: float
) -> None:
    """Write `line` every `every_s` until `waiting` is done (and raise what it raised)."""
    try:
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=every_s)
            if not waiting.done():
                await _write(resp, answer, line)
    finally:
        waiting.cancel()  # the client went away while we waited
    waiting.result()


async def _keepalive_answer(
    request: web.Request, st: SimState, answer: Answer, generation: Generation
) -> web.StreamResponse:
    """DeepSeek's way: 200 at once, a blank line every `keepalive_s` while the request waits,
    then the JSON body."""
    s = st.settings
    resp = web.StreamResponse(
        status=200, headers={**_headers(st, answer), "Content-Type": "application/json"}
    )
    await resp.prepare(request)
    await _keep_alive(
        resp,
        answer,
        asyncio.ensure_future(_whole(st, answer, generation)),
        b"\n",
        s.keepalive_s * s.time_scale,
    )
    if answer.fault == "reset":
        answer.outcome = "reset"
        _abort(request)
        return resp
    if answer.fault == "hang":
        await asyncio.sleep(s.faults.hang_s * s.time_scale)
        answer.outcome = "hang"
        return resp
    await resp.write(_body(st, answer, generation))
    await resp.write_eof()
    return resp


async def _stream(
    request: web.Request, st: SimState, answer: Answer, generation: Generation
) -> web.StreamResponse:
    """Server-sent events like OpenAI's `stream: true`, paced by the decoding."""
    s = st.settings
    resp = web.StreamResponse(status=200)
    if s.keepalive_s > 0:
        resp.headers.update(_sse_headers(st, answer))
        await resp.prepare(request)
        waiting = asyncio.ensure_future(_first_token(st, answer, generation))
        await _keep_alive(resp, answer, waiting, b": keep-alive\n\n", s.keepalive_s * s.time_scale)
    else:
        await _first_token(st, answer, generation)
        resp.headers.update(_sse_headers(st, answer))
        await resp.prepare(request)
    chunks = _Chunks(answer, st.fingerprint)
    await _write(resp, answer, chunks.first())
    stop_at = None
    if answer.fault in ("reset", "truncated", "hang"):
        stop_at = int(answer.decode_tokens * st.rng.uniform(1 / 3, 2 / 3))
    decoding = generation.decoding
    assert decoding is not None
    interval = max(s.stream_interval_s * s.time_scale, MIN_STREAM_INTERVAL_S)
    while True:
        done = decoding.done.done()
        decoded = decoding.decoded()
        if stop_at is not None and decoded >= stop_at:
            await _write(resp, answer, chunks.up_to(stop_at))
            return await _break_stream(request, st, answer, resp)
        await _write(resp, answer, chunks.up_to(decoded))
        if done:
            break
        await asyncio.wait({decoding.done}, timeout=interval)
    await resp.write(chunks.last())
    await resp.write_eof()
    _complete(st, answer, generation)
    return resp


async def _write(resp: web.StreamResponse, answer: Answer, data: bytes) -> None:
    if data:
        await resp.write(data)
        answer.sent_at = time.monotonic()


def _sse_headers(st: SimState, answer: Answer) -> dict[str, str]:
    return {**_headers(st, answer), "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def _break_stream(
    request: web.Request, st: SimState, answer: Answer, resp: web.StreamResponse
) -> web.StreamResponse:
    """The stream's fault strikes: a reset, a clean end without the rest, or a stall."""
    if answer.fault == "truncated":
        answer.outcome = "truncated"
        await resp.write_eof()
        return resp
    if answer.fault == "hang":
        await asyncio.sleep(st.settings.faults.hang_s * st.settings.time_scale)
    answer.outcome = answer.fault
    _abort(request)
    raise asyncio.CancelledError


class _Chunks:
    """The SSE events of one answer, cut by tokens decoded."""

    def __init__(self, answer: Answer, fingerprint: str) -> None:
        completion = answer.completion
        self._base = {
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
            "system_fingerprint": fingerprint,
        }
        self._choices = completion["choices"]
        self._tokens = dict(enumerate(n for _, n in answer.contents))
        self._sent = [0] * len(self._choices)  # characters of each choice sent
        self._usage = None
        opts = answer.body.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage"):
            self._usage = completion["usage"]

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**self._base, "choices": choices, **extra}) + b"\n\n"

    def first(self) -> bytes:
        return b"".join(
            self._event([{"index": c["index"], "delta": {"role": "assistant", "content": ""}, **_OPEN}])
            for c in self._choices
        )

    def up_to(self, decoded: int) -> bytes:
        """One event per choice with the text decoded since the last event."""
        events = []
        for k, choice in enumerate(self._choices):
            content = choice["message"]["content"]
            total = self._tokens.get(choice["index"], 0)
            end = len(content) if decoded >= total else len(content) * decoded // max(total, 1)
            if end > self._sent[k]:
                delta = {"content": content[self._sent[k] : end]}
                events.append(self._event([{"index": choice["index"], "delta": delta, **_OPEN}]))
                self._sent[k] = end
        return b"".join(events)

    def last(self) -> bytes:
        events = [
            self._event(
                [{"index": c["index"], "delta": {}, "finish_reason": c["finish_reason"], "logprobs": None}]
            )
            for c in self._choices
        ]
        if self._usage is not None:
            events.append(self._event([], usage=self._usage))
        return b"".join(events) + b"data: [DONE]\n\n"


_OPEN = {"finish_reason": None, "logprobs": None}
