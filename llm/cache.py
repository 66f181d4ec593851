"""Where the client keeps its answers: the `AnswerCache` interface, and the `Answer` it holds.

The client asks the cache before it sends (a resumed run replays what it was answered
instead of paying again) and puts every paid answer into it. The service's cache is the
run's SQLite store (`service/store.py`, which also notes which sample each answer was for);
`MemoryCache` keeps them in a dict, for a client used on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Answer:
    """One completed chat answer as cached: its message and what it cost."""

    content: str
    finish_reason: str | None
    usage: dict[str, Any]  # the provider's usage block, as sent
    model: str
    endpoint: str
    cost_usd: float = 0.0
    stage: str = ""
    latency_s: float | None = None
    max_tokens: int | None = None  # sent with the request (None: cached before it was kept)
    max_tokens_cap: int | None = None  # the caller's cap then: below it, a cut answer was asked again
    list_cost_usd: float | None = None  # a batch answer: what it would have cost online


class AnswerCache(Protocol):
    """Answers by request key (`PreparedRequest.key`)."""

    def get(self, key: str) -> Answer | None: ...

    def put(self, key: str, answer: Answer) -> None: ...


class MemoryCache:
    """Answers in a dict, for as long as the process lives."""

    def __init__(self) -> None:
        self._answers: dict[str, Answer] = {}

    def get(self, key: str) -> Answer | None:
        return self._answers.get(key)

    def put(self, key: str, answer: Answer) -> None:
        self._answers.setdefault(key, answer)
