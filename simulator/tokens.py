"""Deterministic token counting and the `usage` block of a chat completion.

Counts approximate OpenAI's tokenizer: about 4 characters per token, 4 tokens of
overhead per message and 3 for priming the reply. Like a BPE tokenizer, long runs of
the same whitespace character are cheap (16 characters per token). Prefix caching is simulated:
once a system prompt has been seen, its tokens rounded down to a multiple of 128
are reported as cached on later requests that start with the same system prompt.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

CHARS_PER_TOKEN = 4
PER_MESSAGE = 4
PRIMING = 3
CACHE_BLOCK = 128
RUN_CHARS_PER_TOKEN = 16
_RUN = re.compile(r"([ \t\n])\1{7,}")  # 8 or more of the same whitespace character


def count_text(text: str) -> int:
    """Approximate token count of a piece of text (ceil(len / 4), whitespace runs cheaper)."""
    run_chars = run_tokens = 0
    if "        " in text or "\n\n\n\n\n\n\n\n" in text or "\t\t\t\t\t\t\t\t" in text:
        for m in _RUN.finditer(text):
            n = m.end() - m.start()
            run_chars += n
            run_tokens += (n + RUN_CHARS_PER_TOKEN - 1) // RUN_CHARS_PER_TOKEN
    return (len(text) - run_chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN + run_tokens


def cut_to_tokens(text: str, max_tokens: int) -> str:
    """A longest prefix of `text` that counts as at most `max_tokens` tokens."""
    max_tokens = max(0, max_tokens)
    if count_text(text) <= max_tokens:
        return text
    lo, hi = 0, len(text)  # count_text(text[:lo]) <= max_tokens < count_text(text[:hi])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_text(text[:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid
    return text[:lo]


def pad_to_tokens(text: str, tokens: int) -> str:
    """`text` followed by whitespace that makes it count as at least `tokens` tokens (four
    characters a token: alternating, so never a cheap run)."""
    padded = text
    while (missing := tokens - count_text(padded)) > 0:  # once, unless text ends in a run
        padded += " \n" * (2 * missing)
    return padded


def message_text(message: Any) -> str:
    """The text of one chat message (string content or a list of text parts)."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def count_messages(messages: list[Any]) -> int:
    """Prompt tokens of a list of chat messages."""
    total = PRIMING
    for m in messages:
        total += PER_MESSAGE + count_text(message_text(m))
        if isinstance(m, dict) and isinstance(m.get("name"), str):
            total += 1 + count_text(m["name"])
    return total


class PrefixCache:
    """Remembers system prompts to report cached prompt tokens like a provider does."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._seen: dict[str, None] = {}
        self._max = max_entries

    def cached_tokens(self, messages: list[Any]) -> int:
        """Cached tokens for this request; records its system prompt as seen."""
        if not messages or not isinstance(messages[0], dict) or messages[0].get("role") != "system":
            return 0
        text = message_text(messages[0])
        key = hashlib.sha256(text.encode()).hexdigest()
        tokens = PER_MESSAGE + count_text(text)
        if key in self._seen:
            return (tokens // CACHE_BLOCK) * CACHE_BLOCK
        if len(self._seen) >= self._max:
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = None
        return 0


def usage_block(prompt_tokens: int, completion_tokens: int, cached_tokens: int, style: str) -> dict[str, Any]:
    """The `usage` object in OpenAI's or DeepSeek's shape."""
    cached = min(cached_tokens, prompt_tokens)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if style == "deepseek":
        usage["prompt_cache_hit_tokens"] = cached
        usage["prompt_cache_miss_tokens"] = prompt_tokens - cached
    else:
        usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage
