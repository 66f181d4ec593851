"""Streaming and the aiohttp transport of the LLM client, over real HTTP on loopback against small
scripted servers (aiohttp.web, one scripted answer per request): a stream that stalls
midway is given up after the silence timeout while a long answer that keeps coming
(keep-alive comments included) arrives whole; a stream cut short is retried as a bad
response, never accepted; blank content in JSON mode is retried; the first token is timed
and handed to the limiter with the completion tokens; an answer over the size cap is
refused; requests go through the proxy the environment names."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from llm import (
    Completion,
    Endpoint,
    Generation,
    LLMClient,
    MemoryCache,
    RequestEvent,
    RequestFailed,
    RequestTally,
)
from llm import transport as http
from llm.limiter import Ticket

MESSAGES = [{"role": "user", "content": "Say something."}]
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
SILENCE_S = 1.0  # the clients' timeout_s: connect, and the longest silence between two reads
GAP_S = SILENCE_S / 10  # a pause of a server that keeps making progress

Step = bytes | float | None  # bytes written, seconds of silence, or None: drop the connection


def event(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


ROLE = event({"role": "assistant", "content": ""})
END = event(finish="stop")
USAGE_EVENT = b"data: " + orjson.dumps({"id": "chatcmpl-1", "choices": [], "usage": USAGE}) + b"\n\n"
DONE = b"data: [DONE]\n\n"


def stream(*pieces: str) -> list[Step]:
    """A whole stream of these content pieces."""
    return [ROLE, *(event({"content": p}) for p in pieces), END, USAGE_EVENT, DONE]


async def scripted(answers: list[list[Step]], seen: list[str] | None = None) -> tuple[web.AppRunner, str]:
    """A server that answers its n-th request with the n-th script, as server-sent events
    (and notes in `seen` the URL each request asked for)."""
    queue = iter(answers)

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        if seen is not None:
            seen.append(str(request.url))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for step in next(queue):
            if step is None:
                assert request.transport is not None
                request.transport.abort()
                return response
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                await response.write(step)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"


class Asked:
    """What one request left behind: the attempts' outcomes, the events, the cached answers."""

    def __init__(self) -> None:
        self.tally = RequestTally()
        self.events: list[RequestEvent] = []
        self.cache = MemoryCache()

    @property
    def outcomes(self) -> dict[str, int]:
        return dict(self.tally.outcomes)

    def cached_finish_reasons(self) -> list[str | None]:
        return [answer.finish_reason for answer in self.cache._answers.values()]


def ask(
    answers: list[list[Step]],
    json_mode: bool = False,
    proxy: tuple[pytest.MonkeyPatch, list[str]] | None = None,
    **endpoint: Any,
) -> tuple[Completion | Exception, Asked]:
    """One request through an LLMClient against a server giving these answers in turn;
    `proxy`: the server is instead named by HTTP_PROXY, for an endpoint that does not exist
    (the URLs it was asked for are noted in the list)."""
    asked = Asked()

    async def go() -> Completion | Exception:
        runner, url = await scripted(answers, proxy[1] if proxy else None)
        if proxy is not None:
            proxy[0].setenv("HTTP_PROXY", url.removesuffix("/v1"))
            url = "http://api.example.invalid/v1"
        spec = {"model": "m", "name": "s", "base_url": url, "timeout_s": SILENCE_S, "max_retries": 1}
        client = LLMClient(
            Endpoint(**{**spec, **endpoint}), url, cache=asked.cache, sinks=[asked.tally, asked.events.append]
        )
        try:
            request = client.prepare(MESSAGES, Generation(0.7, 100, seed=1, json_mode=json_mode), "script")
            return await client.complete(request, "script")
        except RequestFailed as exc:
            return exc
        finally:
            await client.aclose()
            await runner.cleanup()

    return asyncio.run(go()), asked


def test_a_stream_that_stalls_midway_is_given_up_after_the_silence_timeout() -> None:
    stall = [ROLE, event({"content": "Half an ans"}), 5 * SILENCE_S, *stream("wer.")[1:]]
    result, asked = ask([stall], max_retries=0)
    assert isinstance(result, RequestFailed) and f"nothing received for {SILENCE_S} s" in str(result)
    assert asked.outcomes == {"timeout": 1}


def test_a_long_answer_that_keeps_coming_arrives_whole() -> None:
    # it waits (keep-alive comments only) and then writes, each for longer than the silence
    # timeout: progress, never silence, so it is not cut off (a total timeout would cut it)
    wait = [b": keep-alive\n\n", GAP_S] * 15
    pieces = [f"word{i} " for i in range(30)]
    writing = [step for piece in pieces for step in (event({"content": piece}), GAP_S / 2)]
    result, asked = ask([[*wait, ROLE, *writing, END, USAGE_EVENT, DONE]])
    assert isinstance(result, Completion), result
    assert result.content == "".join(pieces) and result.finish_reason == "stop"
    assert (result.usage.prompt, result.usage.completion) == (11, 7)  # exact, from the usage chunk
    assert asked.outcomes == {"ok": 1}


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param([ROLE, event({"content": "Hi"}), END, USAGE_EVENT], id="no [DONE]"),
        pytest.param([ROLE, event({"content": "Hi"}), END, DONE], id="no usage"),
        pytest.param([ROLE, event({"content": "Hi"}), USAGE_EVENT, DONE], id="no finish_reason"),
        pytest.param([ROLE, b'data: {"error": {"message": "overloaded"}}\n\n', DONE], id="error event"),
        pytest.param([USAGE_EVENT, DONE], id="no choices"),
    ],
)
def test_a_stream_cut_short_is_retried_as_a_bad_response(cut: list[Step]) -> None:
    result, asked = ask([cut, stream("Hello", " there.")])
    assert isinstance(result, Completion) and result.content == "Hello there."
    assert asked.outcomes == {"bad_response": 1, "ok": 1}
    assert asked.cached_finish_reasons() == ["stop"]  # the cut one is not kept


def test_a_connection_dropped_mid_stream_is_retried_as_a_reset() -> None:
    result, asked = ask([[ROLE, event({"content": "Hi"}), None], stream("Hello", " there.")])
    assert isinstance(result, Completion) and result.content == "Hello there."
    assert asked.outcomes == {"reset": 1, "ok": 1}
    assert asked.cached_finish_reasons() == ["stop"]  # the cut one is not kept


@pytest.mark.parametrize("blank", ["", " \n\t "])
def test_blank_content_in_json_mode_is_retried_and_elsewhere_left_to_the_stage(blank: str) -> None:
    answers = [stream(blank), stream('{"ok": true}')]
    result, asked = ask(answers, json_mode=True)
    assert isinstance(result, Completion) and result.content == '{"ok": true}'
    assert asked.outcomes == {"bad_response": 1, "ok": 1}
    result, asked = ask(answers, json_mode=False)
    assert isinstance(result, Completion) and result.content == blank and asked.outcomes == {"ok": 1}


def test_the_first_token_is_timed_and_handed_to_the_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    succeeded: Callable[..., None] = Ticket.succeeded

    def spy(ticket: Ticket, *args: Any, **kwargs: Any) -> None:
        seen.append({"latency_s": args[2], **kwargs})
        succeeded(ticket, *args, **kwargs)

    monkeypatch.setattr(Ticket, "succeeded", spy)
    delay = GAP_S
    answer = [ROLE, delay, event({"content": "Late"}), delay, *stream(" words.")[1:]]
    result, asked = ask([answer])
    assert isinstance(result, Completion) and result.content == "Late words."
    [reported] = seen
    assert reported["completion_tokens"] == 7
    assert delay <= reported["first_token_s"] <= reported["latency_s"] - delay
    [told] = asked.events  # and told the sinks
    assert told.first_token_s == reported["first_token_s"]


def test_an_answer_over_the_size_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_ANSWER_BYTES", 2**16)
    huge = [ROLE, *(event({"content": "x" * 1000}) for _ in range(300)), END, USAGE_EVENT, DONE]
    result, asked = ask([huge], max_retries=0)
    assert isinstance(result, RequestFailed) and f"answer larger than {2**16} bytes" in str(result)
    assert asked.outcomes == {"bad_response": 1}


def test_requests_go_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # the endpoint's host does not exist: only through the proxy (the scripted server) can it answer
    seen: list[str] = []
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    result, _ = ask([stream("Proxied.")], proxy=(monkeypatch, seen))
    assert isinstance(result, Completion) and result.content == "Proxied."
    assert seen == ["http://api.example.invalid/v1/chat/completions"]
