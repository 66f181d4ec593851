"""Exact dedup key: a hash of the normalized text (Unicode NFKC, case-folded, punctuation
dropped, whitespace collapsed), checked before any embedding (`dedup.near`)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> str:
    """Hash of the normalized text; equal for case, spacing and punctuation variants."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()[:32]
