"""HTTP to one OpenAI-compatible endpoint: the `Transport` interface the client speaks
through, and `AiohttpTransport`, one aiohttp session per endpoint, built once.

`post(path, payload, stream)` POSTs prepared JSON bytes to `{base_url}{path}`
(`/chat/completions`, `/embeddings`) and returns every HTTP answer as a `Reply` (status,
headers with lower-case names, the whole body, and for a stream the time to its first
token): the caller classifies it. When there is no whole answer it raises `TransportError`
of kind "timeout" (silence), "reset" (refused, or the connection dropped, before or during
the answer) or "bad_response" (the answer outgrew MAX_ANSWER_BYTES). Another transport (a
fake in tests, a batch file writer) implements the same two methods.

- **Timeouts.** `timeout_s` bounds connecting and every silence between two reads of the
  socket (aiohttp's `sock_connect` and `sock_read`); there is no total timeout. Every byte
  counts as progress (a token, DeepSeek's keep-alive blank lines and `: keep-alive`
  comments), so an answer that keeps coming is never cut off, however long, and one that
  stops is given up `timeout_s` after its last byte.
- **Reading.** The body stays in aiohttp's buffer until it is complete, so an answer wakes
  its task once rather than once per chunk; a stream's first chunks are looked at only
  until its first token arrives, to time it.
- **Size.** The buffer is also the cap: aiohttp stops reading a connection whose unread
  body reaches MAX_ANSWER_BYTES (and stops its silence timer with it), so while the body
  waits it is looked at every `timeout_s`: over the cap, it is refused as too large; not
  grown since the last look, it is a silence. (A 32k-token stream is about 10 MiB.)
- **Proxies.** `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (and proxy credentials in `.netrc`) are
  honoured with aiohttp's own rules, resolved once per endpoint: its `trust_env` would
  resolve them in a thread on every request, and would also apply `.netrc` logins to the
  endpoint, clashing with the Bearer key. A loopback endpoint (the embedded one, a local
  vLLM) is never proxied.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from llm.answers import first_content
from llm.redact import redact

MAX_ANSWER_BYTES = 32 * 2**20


class TransportError(Exception):
    """No whole HTTP answer: `kind` is "timeout", "reset" or "bad_response"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # read with lower-case names (aiohttp's are case-insensitive)
    body: bytes
    streamed: bool = False  # the body is server-sent events (`stream: true` was honoured)
    first_token_s: float | None = None  # a stream's first token, seconds after sending

    def error_message(self) -> str:
        """The provider's error message (OpenAI's `{"error": {"message": ...}}`), or the body,
        with any API key it echoes redacted (before it is cut to one line)."""
        try:
            error = orjson.loads(self.body).get("error")
            message = error.get("message") if isinstance(error, dict) else error
        except (orjson.JSONDecodeError, AttributeError):
            message = None
        text = message if isinstance(message, str) else self.body.decode("utf-8", "replace")
        return one_line(redact(text))


def one_line(text: str) -> str:
    """`text` on one line (whitespace runs become one space), at most 300 characters."""
    return " ".join(text.split())[:300]


def request_headers(api_key: str) -> dict[str, str]:
    """The headers sent with every request."""
    return {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": "agentrefine-synth",
    }


class Transport(Protocol):
    """How the client's requests reach the endpoint."""

    async def post(self, path: str, payload: bytes, stream: bool) -> Reply:
        """The endpoint's answer to `payload` at `path`; TransportError when there is none."""
        ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """The aiohttp connection pool of one endpoint, opened in the running event loop on first use."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, connections: int) -> None:
        self._base = base_url.rstrip("/")
        self._urls: dict[str, URL] = {}
        self._headers = request_headers(api_key)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self._connections = max(1, connections)
        self._session: aiohttp.ClientSession | None = None

    def _open(self, url: URL) -> aiohttp.ClientSession:
        proxy, proxy_auth = _env_proxy(url)
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._connections),
            timeout=self._timeout,
            read_bufsize=MAX_ANSWER_BYTES // 2,  # reading pauses at twice this unread
            proxy=proxy,
            proxy_auth=proxy_auth,
        )

    async def post(self, path: str, payload: bytes, stream: bool) -> Reply:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._base + path)
        if self._session is None:
            self._session = self._open(url)
        sent = time.monotonic()
        try:
            async with self._session.post(url, data=payload, headers=self._headers) as response:
                received = response.content
                streamed = stream and response.content_type == "text/event-stream"
                head, first_token_s = b"", None
                if streamed and response.status == 200:
                    head = await _until_first_token(received)
                    first_token_s = time.monotonic() - sent
                await self._until_end(received)
                body = head + received.read_nowait()
                return Reply(response.status, response.headers, body, streamed, first_token_s)
        except TimeoutError as exc:  # aiohttp's socket timeouts are TimeoutErrors too
            raise self._silence() from exc
        except aiohttp.ClientPayloadError as exc:  # the connection dropped mid-answer
            raise TransportError("reset", f"answer cut short: {one_line(str(exc))}") from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransportError("reset", f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _until_end(self, received: aiohttp.StreamReader) -> None:
        """Wait for the end of the body (left in the buffer), looking at it every `timeout_s`."""
        looked_at = -1
        while True:
            look = asyncio.timeout(self._timeout.sock_read)
            try:
                async with look:
                    await received.wait_eof()
                return
            except TimeoutError:
                if not look.expired():  # aiohttp's own silence timer
                    raise
            if received.total_bytes >= MAX_ANSWER_BYTES:
                raise _too_large()
            if received.total_bytes == looked_at:  # reading paused, and nothing came since
                raise self._silence()
            looked_at = received.total_bytes

    def _silence(self) -> TransportError:
        return TransportError("timeout", f"nothing received for {self._timeout.sock_read} s")


async def _until_first_token(received: aiohttp.StreamReader) -> bytes:
    """Read a stream's chunks until one carries the first token, or the stream ends."""
    head, scanned = b"", 0
    while chunk := await received.readany():
        head += chunk
        found, scanned = first_content(head, scanned)
        if found:
            break
        if len(head) >= MAX_ANSWER_BYTES:
            raise _too_large()
    return head


def _too_large() -> TransportError:
    return TransportError("bad_response", f"answer larger than {MAX_ANSWER_BYTES} bytes")


def _env_proxy(url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for `url` (None: go direct)."""
    if url.host is None or url.host == "localhost" or _loopback(url.host):
        return None, None
    try:
        return get_env_proxy_for_url(url)
    except LookupError:  # no proxy for this scheme, or NO_PROXY names the host
        return None, None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
