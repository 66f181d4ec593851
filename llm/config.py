"""How to reach one OpenAI-compatible endpoint and what it allows: the settings of one
`LLMClient` (the run's `config.yaml` holds one per entry of `endpoints:`).

Each number has its range on the field (`typedconfig.bounded`), so a config loader built on
`typedconfig` checks them where they are written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from typedconfig import ConfigError, bounded, one_of

TRANSPORTS = ("aiohttp",)  # how an endpoint is spoken to (llm/transport.py); http1 and openai were removed


@dataclass(frozen=True)
class Limits:
    """Client-side limits for one endpoint (0 = no limit)."""

    rpm: int = bounded(0, 0, 10**8, note="0: no limit")
    tpm: int = bounded(0, 0, 10**11, note="0: no limit")
    # a ceiling: the limiter finds the concurrency the endpoint takes (llm/concurrency.py);
    # 10,000 RPM x 60 s answers need 10,000 in flight
    max_concurrency: int = bounded(10_000, 1, 1_000_000)


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: float = bounded(0.0, 0, 10_000)
    cached_input: float | None = bounded(None, 0, 10_000, note="null: the input price")
    output: float = bounded(0.0, 0, 10_000)


@dataclass(frozen=True)
class BatchSettings:
    """Batch mode (`llm/batch.py`): how a round is gathered, how batches are polled, and what
    becomes of a request its batch did not answer."""

    gather_s: float = bounded(
        1.0, 0, 3600, above=True
    )  # a round closes after this long without a new request
    gather_max_s: float = bounded(60.0, 0, 86_400, above=True)  # ... or after this long in all
    poll_s: float = bounded(5.0, 0, 3600, above=True)  # first poll of a batch; then x1.5 each time
    poll_max_s: float = bounded(60.0, 0, 86_400, above=True)
    max_requests: int = bounded(50_000, 1, 50_000)  # per input file (the API's limit)
    max_file_bytes: int = bounded(200 * 1024 * 1024, 1024, 200 * 1024 * 1024)
    max_tries: int = bounded(3, 1, 100)  # rounds a request may be sent in before it fails its sample
    # next_round: a request its batch did not answer goes to the next round; online: it is sent online
    on_failure: str = one_of("next_round", ("next_round", "online"))


@dataclass(frozen=True)
class Breaker:
    """When an endpoint is down or refuses the configuration, stop the run with one line
    instead of failing sample after sample."""

    failures: int = bounded(50, 1, 10**6)  # consecutive failed tries (5xx, reset, timeout, bad answer) ...
    outage_s: float = bounded(60.0, 0, 86_400)  # ... spanning at least this long with no success
    bad_requests: int = bounded(10, 1, 10**6)  # consecutive 400/413/422 answers: the config is wrong


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible endpoint: where it is, which model, how to authenticate."""

    model: str
    name: str = ""
    base_url: str | None = None
    api_key_env: str | None = None
    json_mode: bool = True
    send_seed: bool = True
    max_tokens_param: str = one_of("max_tokens", ("max_tokens", "max_completion_tokens"))
    # connect, and the longest silence between two reads (no total timeout)
    timeout_s: float = bounded(55.0, 0, 3600, above=True)
    max_retries: int = bounded(8, 0, 100)
    transport: str = one_of("aiohttp", TRANSPORTS)
    stream: bool = True  # ask for server-sent events (with usage); false for an endpoint that cannot
    size_max_tokens: bool = True  # under a TPM limit: max_tokens sized to the answers (llm/sizing.py)
    extra_body: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    price: Price = field(default_factory=Price)
    batch_price: Price | None = None  # the Batch API's prices (null: half the list price)
    breaker: Breaker = field(default_factory=Breaker)

    def batch_prices(self) -> Price:
        """The Batch API's prices: `batch_price`, else half the list price (OpenAI's discount)."""
        if self.batch_price is not None:
            return self.batch_price
        p = self.price
        return Price(p.input / 2, None if p.cached_input is None else p.cached_input / 2, p.output / 2)

    def api_key(self) -> str:
        """The key from the environment; local endpoints without one get a placeholder."""
        if self.api_key_env is None:
            return "not-needed"
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"endpoints.{self.name}.api_key_env: environment variable {self.api_key_env} is not set"
            )
        return value
