"""What the client tells the rest of the world: one `RequestEvent` per HTTP attempt (and per
answer replayed from the cache), handed to each of a list of sinks in turn, as structlog
hands a log line to its processors.

A sink is any callable taking the event: the run's Prometheus metrics, its `Budget`, a
`RequestTally` for the progress line and the summary, `log_failures` for the run log. The
client keeps no counters of its own and knows nothing of what its caller does with them.
`stage` is the caller's label for what a request is for (a pipeline stage, "dedup"); the
client only passes it on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from llm.usage import Usage

ANSWERED = frozenset(("ok", "cut_below_cap"))  # outcomes of a paid answer
CACHED = "cached"  # an answer replayed from the cache: nothing was sent or paid

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One request attempt of an `LLMClient` and how it ended."""

    endpoint: str
    model: str
    stage: str
    # ok, cut_below_cap (answered, cut by a sized max_tokens: asked again at the cap), cached,
    # batch_error (a batch did not answer it: next round),
    # 429, 5xx, timeout, reset, bad_response, or the HTTP status of a refusal (400, 401, ...)
    outcome: str
    latency_s: float = 0.0  # sent to last byte (limiter wait excluded)
    usage: Usage = field(default_factory=Usage)  # paid tokens (answered outcomes only)
    cost_usd: float = 0.0
    max_tokens: int = 0  # sent with the request (what a TPM limit is charged with)
    first_token_s: float | None = None  # a streamed answer's first token, after sending
    error: str = ""  # why a failed attempt failed, one line
    saved_usd: float = 0.0  # a batch answer: its online list price less what it cost

    @property
    def answered(self) -> bool:
        return self.outcome in ANSWERED


Sink = Callable[[RequestEvent], None]


@dataclass
class RequestTally:
    """Totals of the events it is handed: attempts by outcome, the paid tokens, what a TPM
    limit was charged for them (prompt + max_tokens sent), their cost, and cache replays."""

    outcomes: Counter[str] = field(default_factory=Counter)
    usage: Usage = field(default_factory=Usage)
    charged: int = 0
    cost_usd: float = 0.0
    replayed: int = 0
    saved_usd: float = 0.0  # batch answers against their online list price

    def __call__(self, event: RequestEvent) -> None:
        if event.outcome == CACHED:
            self.replayed += 1
            return
        self.outcomes[event.outcome] += 1
        if event.answered:
            self.usage += event.usage
            self.charged += event.usage.prompt + event.max_tokens
            self.cost_usd += event.cost_usd
            self.saved_usd += event.saved_usd

    @property
    def attempts(self) -> int:
        return sum(self.outcomes.values())

    @property
    def charged_per_used(self) -> float | None:
        """Tokens a TPM limit was charged per token the answers used."""
        return self.charged / self.usage.total if self.usage.total else None


def log_failures(event: RequestEvent) -> None:
    """A sink that logs every failed attempt (the client retries it, or gives up)."""
    if not event.answered and event.outcome != CACHED:
        log.info(
            "llm_attempt_failed",
            endpoint=event.endpoint,
            stage=event.stage,
            outcome=event.outcome,
            error=event.error,
        )
