"""Exact persona dedup: a hash of the normalized text (Unicode NFKC, case-folded, punctuation
dropped, whitespace collapsed). The first occurrence is kept; later ones are duplicates."""

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


class ExactDedup:
    """Normalized-hash -> id of the first item with that hash."""

    def __init__(self, known: dict[str, str] | None = None) -> None:
        self._seen: dict[str, str] = dict(known or {})

    def __len__(self) -> int:
        return len(self._seen)

    def first(self, digest: str) -> str | None:
        """Id of the item this hash duplicates, or None."""
        return self._seen.get(digest)

    def add(self, digest: str, item_id: str) -> None:
        self._seen.setdefault(digest, item_id)
