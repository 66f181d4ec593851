"""An in-process stand-in for HTTP: `FakeTransport` answers each request the client posts with
what a script says (a `Reply`, or a `TransportError` for a reset, a silence or an answer too
large), and keeps every request it was given. The reply builders write the bodies the
providers send: a chat completion whole or as server-sent events, an error, an embeddings
answer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from llm import Reply, TransportError

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}

Response = Reply | TransportError
Script = Callable[[str, dict[str, Any]], Response]  # (path, request body) -> what to answer


@dataclass
class FakeTransport:
    """Answers the n-th request with the n-th of `replies` (the last one again once they run
    out), or with what `script(path, body)` returns."""

    replies: list[Response] = field(default_factory=list)
    script: Script | None = None
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    closed: bool = False

    async def post(self, path: str, payload: bytes, stream: bool) -> Reply:
        body = orjson.loads(payload)
        self.requests.append((path, body))
        if self.script is not None:
            response = self.script(path, body)
        else:
            response = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(response, TransportError):
            raise response
        return response

    async def aclose(self) -> None:
        self.closed = True

    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in self.requests]


def chat(
    content: str = '{"ok": true}',
    finish: str = "stop",
    usage: dict[str, Any] | None = None,
    model: str = "m",
    headers: dict[str, str] | None = None,
) -> Reply:
    """A whole (not streamed) chat completion."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
        ],
        "usage": USAGE if usage is None else usage,
    }
    return Reply(200, headers or {}, orjson.dumps(body))


def streamed(pieces: Iterable[str], finish: str = "stop", usage: dict[str, Any] | None = None) -> Reply:
    """A chat completion as server-sent events, with its usage chunk and [DONE]."""

    def event(chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({"id": "chatcmpl-1", "model": "m", **chunk}) + b"\n\n"

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    body = event(choice({"role": "assistant", "content": ""}))
    body += b"".join(event(choice({"content": piece})) for piece in pieces)
    body += event(choice({}, finish)) + event({"choices": [], "usage": USAGE if usage is None else usage})
    return Reply(200, {}, body + b"data: [DONE]\n\n", streamed=True, first_token_s=0.01)


def error(status: int, message: str = "no", headers: dict[str, str] | None = None) -> Reply:
    """An error answer in OpenAI's shape."""
    return Reply(status, headers or {}, orjson.dumps({"error": {"message": message}}))


def embeddings(vectors: list[list[float]], prompt_tokens: int = 5) -> Reply:
    """An `/embeddings` answer (given out of order, as the API allows)."""
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return Reply(200, {}, orjson.dumps({"object": "list", "data": data[::-1], "usage": usage}))
