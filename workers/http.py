"""HTTP to one OpenAI-compatible endpoint: one shared aiohttp connection pool, one POST.

`EndpointHTTP.post_chat(payload)` sends prepared JSON bytes to `{base_url}/chat/completions`
and returns every HTTP answer as a `Reply` (status, headers, body: the caller classifies
it); when there is no answer it raises `TransportError` of kind "timeout" or "reset".

This replaces the openai SDK's request layer on the hot path: on this machine the SDK
spent 0.9–1.5 ms of CPU per request on its own (option models, header merging, URL
parsing, httpx request and response objects over its aiohttp transport) against about
0.4–0.5 ms for the same POST through aiohttp directly (docs/decisions.md has the numbers).
The semantics are the SDK's: Bearer auth, JSON body, `timeout_s` as the connect timeout and
as the longest silence between two reads (so a provider that sends keep-alive blank lines
while a request waits is not timed out), a pool as large as the endpoint's concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import orjson
from multidict import CIMultiDictProxy


class TransportError(Exception):
    """No HTTP answer: `kind` is "timeout" or "reset" (refused, dropped, cut short)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def error_message(self) -> str:
        """The provider's error message (OpenAI's `{"error": {"message": ...}}`), or the body."""
        try:
            error = orjson.loads(self.body).get("error")
            message = error.get("message") if isinstance(error, dict) else error
        except (orjson.JSONDecodeError, AttributeError):
            message = None
        text = message if isinstance(message, str) else self.body.decode("utf-8", "replace")
        return " ".join(text.split())[:300]


class EndpointHTTP:
    """The connection pool of one endpoint, opened in the running event loop on first use."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, connections: int) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "agentrefine-synth",
        }
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
