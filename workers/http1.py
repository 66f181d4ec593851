"""The default transport: a lean HTTP/1.1 client for one endpoint, with a keep-alive pool.

`HTTP1Endpoint.post_chat(payload)` sends prepared JSON bytes to `{base_url}/chat/completions`
over a pooled connection and returns the answer as a `Reply`, or raises `TransportError`
("timeout", "reset"), exactly like the aiohttp and openai SDK transports in `workers/http.py`.
The connections are asyncio protocols; responses are parsed by httptools (llhttp, the parser
of Node.js, used by uvicorn), so no HTTP parsing is ours.

Why it exists: at a provider's rate limit the client spends its CPU on per-request overhead,
not on bytes, and aiohttp's request/response machinery alone costs more than twice what the
rest of our request layer does (`make bench` prints our layer on all three transports in one
run; docs/decisions.md has the figures). It does only what POSTing JSON to an
OpenAI-compatible endpoint needs: http and https (the system's CA store, as aiohttp),
responses delimited by Content-Length, chunked encoding or the end of the connection (gzip
or deflate decoded if a server compresses unasked), keep-alive (a connection is reused
unless the server says otherwise, and dropped after IDLE_S unused), `timeout_s` to connect
and as the longest silence between two reads (so DeepSeek's keep-alive blank lines keep a
long request alive). No proxies, redirects or cookies: the OpenAI API needs none of them,
and the aiohttp transport remains one line of config away.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from urllib.parse import urlsplit

import httptools

from workers.http import Reply, TransportError, request_headers

COMPRESSED = frozenset(("gzip", "x-gzip", "deflate"))  # never asked for, decoded if sent anyway
IDLE_S = 15.0  # an idle connection older than this is closed rather than reused (as aiohttp does)


class HTTP1Endpoint:
    """One endpoint's pool of keep-alive HTTP/1.1 connections, opened as requests need them."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, connections: int) -> None:
        url = urlsplit(base_url.rstrip("/") + "/chat/completions")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        target = url.path + (f"?{url.query}" if url.query else "")
        headers = {"Host": url.netloc.rpartition("@")[2], **request_headers(api_key)}
        self._head = (
            f"POST {target} HTTP/1.1\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + "Content-Length: "
        ).encode("latin-1")
        self._timeout_s = timeout_s
        self._max_idle = max(1, connections)
        self._idle: list[tuple[float, _Connection]] = []  # (returned at, connection), newest last
        self._open: set[_Connection] = set()

    async def post_chat(self, payload: bytes) -> Reply:
        loop = asyncio.get_running_loop()
        connection = self._reuse(loop.time()) or await self._connect(loop)
        request = b"%s%d\r\n\r\n%s" % (self._head, len(payload), payload)
        try:
            reply = await connection.exchange(request, self._timeout_s)
        except BaseException:  # a failure, or cancelled mid-answer: the connection is unusable
            connection.abort()
            raise
        if connection.reusable and len(self._idle) < self._max_idle:
            self._idle.append((loop.time(), connection))
        else:
            connection.close()
        return reply

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    def _reuse(self, now: float) -> _Connection | None:
        """The most recently returned idle connection still open and fresh, if any."""
        while self._idle:
            returned, connection = self._idle.pop()
            if connection.reusable and now - returned < IDLE_S:
                return connection
            connection.close()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that arrives as the connection completes, and a cancelled worker would go on
            async with asyncio.timeout(self._timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self._open),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError as exc:
            raise TransportError("timeout", f"could not connect within {self._timeout_s} s") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise TransportError("reset", f"{type(exc).__name__}: {exc}") from exc
        return connection


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, registry: set[_Connection]) -> None:
        self._loop = loop
        self._registry = registry
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Reply] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_s = 0.0
        self._last_read = 0.0
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._delimited = True  # the body's end is known (Content-Length or chunked), not the close
        self.reusable = False

    async def exchange(self, request: bytes, timeout_s: float) -> Reply:
        """Send one request, wait for its whole answer (no silence longer than `timeout_s`)."""
        if self._transport is None or not self.reusable:  # closed by the server since it was opened
            raise TransportError("reset", "connection closed before the request was sent")
        self.reusable = False
        self._waiter = self._loop.create_future()
        self._timeout_s = timeout_s
        self._last_read = self._loop.time()
        self._timer = self._loop.call_at(self._last_read + timeout_s, self._check_silence)
        self._transport.write(request)
        try:
            return await self._waiter
        finally:
            self._timer.cancel()
            self._waiter = None

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._registry.add(self)
        self.reusable = True

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError("reset", f"unreadable HTTP answer: {exc}"))

    def eof_received(self) -> None:
        self.reusable = False  # the transport closes itself: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._registry.discard(self)
        if self._waiter is not None and not self._waiter.done():
            if self._status and not self._delimited:  # the body ran to the close: it is complete
                self._answer()
            else:
                self._waiter.set_exception(TransportError("reset", f"connection closed: {exc or 'by peer'}"))

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._status = 0
        self._headers = {}
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._delimited = "content-length" in self._headers or "transfer-encoding" in self._headers

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 100 Continue and the like: the real answer follows
            return
        if self._waiter is None or self._waiter.done():  # nothing was asked: do not trust the connection
            self.close()
            return
        self.reusable = self._parser.should_keep_alive() and not self._transport.is_closing()
        self._answer()

    # -- internals ---------------------------------------------------------------------

    def _answer(self) -> None:
        """Hand the whole answer to the waiting request."""
        assert self._waiter is not None
        body = b"".join(self._body)
        if self._headers.get("content-encoding", "identity").lower() in COMPRESSED:
            try:
                body = zlib.decompress(body, wbits=47)  # 32 + 15: a gzip or zlib header, told apart
            except zlib.error as exc:
                self._fail(TransportError("reset", f"unreadable compressed answer: {exc}"))
                return
        self._waiter.set_result(Reply(self._status, self._headers, body))

    def _check_silence(self) -> None:
        """The read timer: time out after `timeout_s` without a byte, else look again later."""
        deadline = self._last_read + self._timeout_s
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check_silence)
            return
        self._fail(TransportError("timeout", f"no answer within {self._timeout_s} s"))

    def _fail(self, error: TransportError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.abort()
