"""Token usage and its cost: one normalized shape for every provider's `usage` block.

OpenAI reports cached prompt tokens in `prompt_tokens_details.cached_tokens` and reasoning
tokens in `completion_tokens_details.reasoning_tokens`; DeepSeek reports
`prompt_cache_hit_tokens` / `prompt_cache_miss_tokens` at the top level. Both become a
`Usage`, and `cost_usd` prices it with the endpoint's table (USD per 1M tokens; cached
prompt tokens at the cached price when one is given, else at the input price).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm.config import Price


@dataclass(frozen=True)
class Usage:
    prompt: int = 0
    cached_prompt: int = 0
    completion: int = 0
    reasoning: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt + other.prompt,
            self.cached_prompt + other.cached_prompt,
            self.completion + other.completion,
            self.reasoning + other.reasoning,
        )

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt,
            "cached_prompt_tokens": self.cached_prompt,
            "completion_tokens": self.completion,
            "reasoning_tokens": self.reasoning,
        }


@dataclass
class Charge:
    """Tokens a TPM limit was charged with for the answers (prompt + the max_tokens sent, as
    OpenAI counts a request when it admits it) against the tokens they used (prompt +
    completion), over the answers whose max_tokens is known."""

    charged: int = 0
    used: int = 0

    def add(self, usage: Usage, max_tokens: int | None) -> None:
        if max_tokens is not None:
            self.charged += usage.prompt + max_tokens
            self.used += usage.total

    @property
    def ratio(self) -> float | None:
        """Charged per token used (None before any answer)."""
        return self.charged / self.used if self.used else None


def parse_usage(block: dict[str, Any] | None) -> Usage:
    """Normalize an OpenAI- or DeepSeek-style usage block (missing fields count as 0)."""
    if not block:
        return Usage()
    prompt = _int(block.get("prompt_tokens"))
    details = block.get("prompt_tokens_details") or {}
    cached = _int(details.get("cached_tokens"))
    if "prompt_cache_hit_tokens" in block:
        cached = _int(block.get("prompt_cache_hit_tokens"))
        prompt = prompt or cached + _int(block.get("prompt_cache_miss_tokens"))
    completion_details = block.get("completion_tokens_details") or {}
    return Usage(
        prompt=prompt,
        cached_prompt=min(cached, prompt),
        completion=_int(block.get("completion_tokens")),
        reasoning=_int(completion_details.get("reasoning_tokens")),
    )


def cost_usd(usage: Usage, price: Price) -> float:
    """Dollars for one usage at one price table (reasoning tokens are part of completion tokens)."""
    cached_price = price.input if price.cached_input is None else price.cached_input
    uncached = usage.prompt - usage.cached_prompt
    return (
        uncached * price.input + usage.cached_prompt * cached_price + usage.completion * price.output
    ) / 1e6


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
