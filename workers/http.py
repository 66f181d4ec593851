"""HTTP to one OpenAI-compatible endpoint: what every transport answers, and two of them.

A transport's `post_chat(payload)` sends prepared JSON bytes to `{base_url}/chat/completions`
and returns every HTTP answer as a `Reply` (status, headers with lower-case names, body: the
caller classifies it); when there is no answer it raises `TransportError` of kind "timeout"
or "reset". `workers/transports.py` opens the one named by `endpoints.X.transport`:

- `http1` (the default): our lean HTTP/1.1 client, `workers/http1.py`;
- `aiohttp`, `EndpointHTTP` here: one aiohttp session per endpoint;
- `openai`, `SDKHTTP` here: the openai SDK's `AsyncOpenAI` on its aiohttp transport
  (`DefaultAioHttpClient`), with the SDK's retries off (the LLM layer retries).

All have the SDK's semantics: Bearer auth, JSON body, `timeout_s` as the connect timeout
and as the longest silence between two reads (so a provider that sends keep-alive blank
lines while a request waits is not timed out), a pool as large as the endpoint's
concurrency, built once. They differ in CPU per request: `make bench` prints our request
layer on each of them in one run (docs/decisions.md has the numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx2  # the openai SDK's HTTP layer: its limits, timeouts and responses
import openai
import orjson

from service.redact import redact


class TransportError(Exception):
    """No HTTP answer: `kind` is "timeout" or "reset" (refused, dropped, cut short)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # read with lower-case names (aiohttp's and httpx's are case-insensitive)
    body: bytes

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
    """The headers every transport sends with a chat completion (the SDK's add its own)."""
    return {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": "agentrefine-synth",
    }


class Transport(Protocol):
    async def post_chat(self, payload: bytes) -> Reply: ...

    async def aclose(self) -> None: ...


class EndpointHTTP:
    """The aiohttp connection pool of one endpoint, opened in the running event loop on first use."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, connections: int) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = request_headers(api_key)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self._connections = max(1, connections)
        self._session: aiohttp.ClientSession | None = None

    async def post_chat(self, payload: bytes) -> Reply:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections), timeout=self._timeout
            )
        try:
            async with self._session.post(self._url, data=payload, headers=self._headers) as response:
                return Reply(response.status, response.headers, await response.read())
        except TimeoutError as exc:  # aiohttp's socket timeouts are TimeoutErrors too
            raise TransportError("timeout", f"no answer within {self._timeout.sock_read} s") from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransportError("reset", f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class SDKHTTP:
    """The same POST through the openai SDK's `AsyncOpenAI` on its aiohttp transport, built
    once per endpoint in the running event loop on first use."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, connections: int) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._connections = max(1, connections)
        self._client: openai.AsyncOpenAI | None = None

    def _open(self) -> openai.AsyncOpenAI:
        pool = httpx2.Limits(max_connections=self._connections, max_keepalive_connections=self._connections)
        return openai.AsyncOpenAI(
            base_url=self._base_url,
            api_key=self._api_key,
            max_retries=0,
            timeout=httpx2.Timeout(None, connect=self._timeout_s, read=self._timeout_s),
            http_client=openai.DefaultAioHttpClient(limits=pool),
        )

    async def post_chat(self, payload: bytes) -> Reply:
        if self._client is None:
            self._client = self._open()
        try:
            response = await self._client.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                content=payload,
                options={"headers": {"Content-Type": "application/json"}},
            )
        except openai.APIStatusError as exc:
            return Reply(exc.status_code, exc.response.headers, exc.response.content)
        except openai.APIConnectionError as exc:  # APITimeoutError included
            raise self._transport_error(exc) from exc
        return Reply(response.status_code, response.headers, response.content)

    def _transport_error(self, exc: openai.APIConnectionError) -> TransportError:
        """Classify by the root cause: the SDK's aiohttp transport reports a dropped
        connection (aiohttp's ServerDisconnectedError) as a connect timeout."""
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__
        if isinstance(root, TimeoutError) or (root is exc and isinstance(exc, openai.APITimeoutError)):
            return TransportError("timeout", f"no answer within {self._timeout_s} s")
        return TransportError("reset", f"{type(root).__name__}: {root}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
