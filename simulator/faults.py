"""Transport and server faults, drawn per request from a seeded RNG.

Kinds (exclusive, probabilities from `FaultSettings`):

- ``"5xx"``: an HTTP 500, 502 or 503 with an OpenAI-style error body;
- ``"reset"``: the connection is aborted without any response;
- ``"truncated"``: a 200 whose JSON body is cut in the middle (Content-Length
  matches the cut body, so the client reads it completely and fails to parse it);
- ``"hang"``: the answer is delayed by ``hang_s`` seconds, so the client times out;
- ``"empty_choices"``: a 200 with a well-formed body whose ``choices`` list is empty;
- ``"length"``: a 200 whose content is cut at a random point with ``finish_reason:
  "length"``, as when a model runs into ``max_tokens``.

The RNG advances with every request, so a retried request does not meet the same
fault again by construction (unlike the content, which depends on the request only).
"""

from __future__ import annotations

import random

from simulator.settings import FaultSettings

_5XX = (
    (500, "server_error", "The server had an error while processing your request. Sorry about that!"),
    (502, "server_error", "Bad gateway."),
    (503, "server_error", "The engine is currently overloaded, please try again later."),
)


def choose_fault(rng: random.Random, settings: FaultSettings) -> str | None:
    """One fault kind for this request, or None."""
    u = rng.random()
    for kind, p in (
        ("5xx", settings.p_5xx),
        ("reset", settings.p_reset),
        ("truncated", settings.p_truncated_body),
        ("hang", settings.p_hang),
        ("empty_choices", settings.p_empty_choices),
        ("length", settings.p_length),
    ):
        if u < p:
            return kind
        u -= p
    return None


def server_error(rng: random.Random) -> tuple[int, dict[str, object]]:
    """An HTTP status (500/502/503) and OpenAI's error body for it."""
    status, kind, message = rng.choice(_5XX)
    return status, {"error": {"message": message, "type": kind, "param": None, "code": None}}


def cut_content(content: str, rng: random.Random) -> str:
    """The content cut at a random point in its middle third (as a model stopped by max_tokens)."""
    n = len(content)
    return content[: rng.randint(n // 3, max(n // 3, (2 * n) // 3))]


def truncate_body(body: bytes, rng: random.Random) -> bytes:
    """The body cut somewhere in its middle third (never a valid JSON document)."""
    n = len(body)
    if n < 4:
        return body[:1]
    cut = rng.randint(max(1, n // 3), max(1, (2 * n) // 3))
    return body[:cut]
