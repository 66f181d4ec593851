"""What the endpoint sent, read: a chat completion as one JSON document (`parse_answer`) or a
stream of server-sent events (`parse_stream`), and the vectors of an embeddings answer
(`parse_embeddings`).

A stream is parsed once, when it has ended: its `data:` events are joined into one JSON
array for a single `orjson.loads`, then the deltas of the first choice are concatenated.
At a provider's limit hundreds of streams deliver thousands of chunks a second, so nothing
is parsed per chunk (`first_content` looks only at the chunks before the first token, to
time it). Comments (`: keep-alive`) and blank lines are skipped. A stream is whole only if
it has a `finish_reason`, the usage chunk (`stream_options.include_usage`) and `[DONE]`;
anything less is a cut answer: ValueError, which the LLM layer retries as a bad response,
never a shorter answer silently accepted.
"""

from __future__ import annotations

from typing import Any

import orjson

from llm.cache import Answer
from llm.redact import redact

DATA = b"data:"
DONE = b"[DONE]"


def parse_answer(body: bytes, endpoint: str, model: str) -> Answer:
    """The first choice of a chat completion body; ValueError when it is not one. Whitespace
    before the JSON (DeepSeek's keep-alive blank lines while a request waits) is allowed.
    `model` stands in when the body names none."""
    data = orjson.loads(body)
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("response has no choices")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return _answer(
        content, choice.get("finish_reason"), data.get("usage"), data.get("model"), endpoint, model
    )


def parse_stream(body: bytes, endpoint: str, model: str) -> Answer:
    """The first choice of a streamed chat completion, assembled from its events;
    ValueError when the stream is not a whole one."""
    events = [line[len(DATA) :] for line in body.split(b"\n") if line.startswith(DATA)]
    if not events or events[-1].strip() != DONE:
        raise ValueError("stream cut short: it ended before [DONE]")
    try:
        chunks = orjson.loads(b"[" + b",".join(events[:-1]) + b"]")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"stream has an unreadable event: {exc}") from None
    pieces: list[str] = []
    finish_reason = usage = named = None
    choices = 0
    for chunk in chunks:
        if not isinstance(chunk, dict):
            raise ValueError("stream event is not a JSON object")
        if chunk.get("error") is not None:
            raise ValueError(f"stream reported an error: {chunk['error']}")
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            choices += 1
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else None
            if piece:
                pieces.append(piece)
            finish_reason = choice.get("finish_reason") or finish_reason
        usage = chunk.get("usage") or usage
        named = named or chunk.get("model")
    if not choices:
        raise ValueError("response has no choices")
    if finish_reason is None:
        raise ValueError("stream cut short: no finish_reason")
    if usage is None:
        raise ValueError("stream has no usage chunk (is stream_options.include_usage supported?)")
    return _answer("".join(pieces), finish_reason, usage, named, endpoint, model)


def first_content(head: bytes, start: int) -> tuple[bool, int]:
    """Whether a complete event in `head[start:]` carries the answer's first token (any
    non-empty delta field but the role: content, or reasoning), and where to look next time."""
    end = head.rfind(b"\n", start) + 1
    for line in head[start:end].split(b"\n"):
        if not line.startswith(DATA) or line[len(DATA) :].strip() == DONE:
            continue
        try:
            chunk = orjson.loads(line[len(DATA) :])
        except orjson.JSONDecodeError:
            return True, end  # not ours to judge here: `parse_stream` will say what is wrong
        for choice in (chunk.get("choices") or ()) if isinstance(chunk, dict) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and any(v for k, v in delta.items() if k != "role"):
                return True, end
    return False, max(start, end)


def _answer(content: Any, finish_reason: Any, usage: Any, named: Any, endpoint: str, model: str) -> Answer:
    if not isinstance(content, str | None) or not isinstance(usage, dict | None):
        raise ValueError("response has a malformed message or usage")
    return Answer(
        content=redact(content or ""),  # an API key the content echoes is never stored or used
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        usage=usage or {},
        model=named if isinstance(named, str) and named else model,
        endpoint=endpoint,
    )


def parse_embeddings(body: bytes, count: int) -> tuple[list[list[float]], dict[str, Any]]:
    """The vectors of an `/embeddings` answer in input order, and its usage block; ValueError
    when it does not hold one vector per input."""
    data = orjson.loads(body)
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) != count:
        raise ValueError(
            f"embeddings answer has {len(items) if isinstance(items, list) else 'no'} vectors, "
            f"expected {count}"
        )
    try:
        ordered = sorted(items, key=lambda item: item["index"])
        vectors = [item["embedding"] for item in ordered]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"embeddings answer is malformed: {exc!r}") from None
    if not all(isinstance(vector, list) for vector in vectors):
        raise ValueError("embeddings answer is malformed: a vector is not a list")
    usage = data.get("usage")
    return vectors, usage if isinstance(usage, dict) else {}
