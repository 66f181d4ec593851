"""Getting JSON out of LLM text: code-fence stripping, strict parsing and salvage of a truncated list.

LLM outputs often wrap JSON in a Markdown code fence, and long outputs get cut off by the token
limit. These helpers are pure functions used by the verification rules (``pipeline.rules``):

* ``strip_fence`` returns the JSON-looking part of a reply;
* ``loads`` parses strictly (orjson; trailing content, NaN and lone surrogates are errors);
* ``salvage_list`` recovers the complete elements of a list that a parse error (usually truncation)
  broke off, so that the part before the break can still be used.
"""

import json
import re
from typing import Any

import orjson

__all__ = ["JSONDecodeError", "loads", "salvage_list", "strip_fence", "utf8_len"]

JSONDecodeError = orjson.JSONDecodeError
"""Raised by ``loads``; a subclass of ``ValueError`` and ``json.JSONDecodeError``."""

# Opening fence: ``` plus an optional info string ("json") and the rest of that line's blanks.
_FENCE_OPEN = re.compile(r"```[\w+.-]*[ \t]*\r?\n?")
# A closing fence stands at the start of a line; JSON strings cannot hold a raw newline, so a
# "```" inside a JSON string value is never mistaken for it.
_FENCE_CLOSE = re.compile(r"\n[ \t]*```")
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def strip_fence(text: str) -> str:
    """Return the JSON part of ``text``: the content of its first Markdown code fence, else the text.

    Text that already starts with ``{`` or ``[`` is taken as bare JSON (a fence inside one of its
    string values is content, not markup). An opening fence without a closing one (a truncated
    reply) yields everything after the opening fence. The result is stripped of outer whitespace.
    """
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped
    start = stripped.find("```")
    if start < 0:
        return stripped
    body = _FENCE_OPEN.match(stripped, start).end()
    close = _FENCE_CLOSE.search(stripped, body)
    if close is not None:
        end = close.start()
    else:  # a one-line fence (```{...}```) or none at all (truncated)
        end = stripped.find("```", body)
        if end < 0:
            end = len(stripped)
    return stripped[body:end].strip()


def utf8_len(text: str) -> int:
    """Size of ``text`` in UTF-8 bytes; never raises (a lone surrogate counts as 3 bytes)."""
    return len(text.encode("utf-8", "surrogatepass"))


def loads(text: str) -> Any:
    """Parse one JSON document strictly (orjson). Raises ``JSONDecodeError``."""
    return orjson.loads(text)


def _skip_ws(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()


def _decode_at(text: str, pos: int) -> tuple[Any, int]:
    """Decode the JSON value starting at ``pos`` with ``loads``' semantics; return it and its end."""
    _, end = _DECODER.raw_decode(text, pos)  # only finds where the value ends
    return loads(text[pos:end]), end


def salvage_list(text: str, key: str) -> list[Any]:
    """The complete leading elements of a JSON list that may be truncated or broken further on.

    The list is either ``text`` itself or the value of ``key`` in a top-level object. Elements are
    decoded one by one until the first one that does not parse (or the end of the list); every
    element returned is a complete JSON value. Returns ``[]`` when no list can be located.
    """
    items: list[Any] = []
    try:
        pos = _list_start(text, key)
        if pos < 0:
            return items
        pos = _skip_ws(text, pos + 1)
        if text.startswith("]", pos):
            return items
        while True:
            item, pos = _decode_at(text, pos)
            items.append(item)
            pos = _skip_ws(text, pos)
            if not text.startswith(",", pos):
                return items
            pos = _skip_ws(text, pos + 1)
    except (ValueError, RecursionError):
        return items


def _list_start(text: str, key: str) -> int:
    """Position of the list's ``[``: at the start of ``text`` or as the value of ``key``; else -1."""
    pos = _skip_ws(text, 0)
    if text.startswith("{", pos):
        pos = _find_key_value(text, pos + 1, key)
    return pos if pos >= 0 and text.startswith("[", pos) else -1


def _find_key_value(text: str, pos: int, key: str) -> int:
    """Position of the value of ``key`` in the object whose ``{`` precedes ``pos``; -1 if absent."""
    while True:
        pos = _skip_ws(text, pos)
        name, pos = _decode_at(text, pos)
        pos = _skip_ws(text, pos)
        if not isinstance(name, str) or not text.startswith(":", pos):
            return -1
        pos = _skip_ws(text, pos + 1)
        if name == key:
            return pos
        _, pos = _decode_at(text, pos)
        pos = _skip_ws(text, pos)
        if not text.startswith(",", pos):
            return -1
        pos += 1
