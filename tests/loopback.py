"""A provider of our own on 127.0.0.1, for faults the simulator does not make: a real aiohttp
server in a thread of the test process, whose chat completions route is a handler the test
writes (answer itself, or `forward` to a simulator, or hold a request back)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson
from aiohttp import web


class Loopback:
    """The running server: its base URL and the time each chat request arrived."""

    def __init__(self) -> None:
        self.url = ""
        self.arrivals: list[float] = []  # time.monotonic() of each request, in order
        self.loop: asyncio.AbstractEventLoop | None = None
        self.upstream: aiohttp.ClientSession | None = None

    async def forward(self, request: web.Request, body: bytes, base_url: str) -> web.Response:
        """Send the request on to `base_url` (a simulator) and return its answer, whole (a
        stream as its events, with its content type)."""
        assert self.upstream is not None
        async with self.upstream.post(
            f"{base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
        ) as answer:
            return web.Response(
                status=answer.status, body=await answer.read(), content_type=answer.content_type
            )


@contextmanager
def loopback(
    handler: Callable[[Loopback, web.Request, bytes], Awaitable[web.StreamResponse]],
) -> Iterator[Loopback]:
    """Serve `handler(server, request, body)` as POST /v1/chat/completions; yield the server."""
    server = Loopback()
    ready = threading.Event()
    stop: asyncio.Event | None = None

    async def chat(request: web.Request) -> web.StreamResponse:
        server.arrivals.append(time.monotonic())
        return await handler(server, request, await request.read())

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server.upstream = aiohttp.ClientSession()
        server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        server.loop = asyncio.get_running_loop()
        ready.set()
        await stop.wait()
        await server.upstream.close()
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield server
    finally:
        assert server.loop is not None and stop is not None
        server.loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def completion(content: str, model: str = "sim-gpt-4o") -> web.Response:
    """A 200 chat completion answering `content`."""
    body: dict[str, Any] = {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def error(status: int, message: str) -> web.Response:
    """An OpenAI-style error answer."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def is_expansion(body: bytes) -> bool:
    """The request is a persona-to-persona expansion (pipeline/prompts/persona_user.md)."""
    return b"Who is in close relationship with this persona?" in body
