"""Keeps API keys out of everything a run prints, logs, stores or exports.

Text that comes from a provider (an error body, a completion) may echo the key it was sent:
`Incorrect API key provided: Bearer sk-…`. `redact(text)` replaces every configured key
(the values of the endpoints' `api_key_env` variables, set once per run by `configure`)
and anything shaped like a credential (`Bearer <token>`, `sk-…`) with `[redacted]`. It is
applied where provider text enters our data (`llm/transport.py` error messages, the content
of every answer in `llm/answers.py`) and again at the sinks (the log processor, the error
line the CLI prints, the rejects written to the store and to rejects.jsonl).

Cheap on the common path: a text holding none of the keys and no `sk-`/`earer ` is returned
after a few substring scans, without running the regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# a bearer token, or an OpenAI/DeepSeek-style secret key (sk-…, sk-proj-…) of 16+ characters
_SHAPES = re.compile(
    r"(?P<bearer>\b[Bb]earer\s+)[A-Za-z0-9._~+/=-]{8,}|(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}"
)
_HINTS = ("sk-", "earer")


class Redactor:
    """Replaces the given secrets, and credential shapes, with `[redacted]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so that a key containing another key is replaced whole
        self._secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
        self._secret_bytes = [secret.encode() for secret in self._secrets]

    def in_text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if any(hint in text for hint in _HINTS):
            text = _SHAPES.sub(_replacement, text)
        return text

    def in_bytes(self, data: bytes) -> bytes:
        for secret in self._secret_bytes:
            if secret in data:
                data = data.replace(secret, REDACTED.encode())
        if b"sk-" in data or b"earer" in data:
            data = self.in_text(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        return data


def _replacement(match: re.Match[str]) -> str:
    return (match.group("bearer") or "") + REDACTED


_active = Redactor()


def configure(secrets: Iterable[str]) -> None:
    """The keys of this run (every endpoint's key variable that is set)."""
    global _active
    _active = Redactor(secrets)


def redact(text: str) -> str:
    """`text` with every configured key and credential shape replaced by `[redacted]`."""
    return _active.in_text(text)


def redact_bytes(data: bytes) -> bytes:
    """The same for serialized bytes (a JSON record about to be written)."""
    return _active.in_bytes(data)
