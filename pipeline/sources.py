"""Persona sources, in a fixed order so a resumed run continues where it stopped.

- A file: Persona Hub JSONL (`{"persona": ...}`, other keys kept as metadata) or plain
  text, one persona per line, told apart by the content, not the name: JSONL when the first
  line that is not blank starts with `{`. A UTF-8 byte order mark is dropped. A file that
  cannot be one (missing, empty, binary,
  compressed, UTF-16) is refused before any work (`check_persona_file`). A malformed line
  (bad JSON, not UTF-8, NUL bytes, longer than MAX_LINE_BYTES: read past in chunks, never
  held whole) becomes a `Malformed` item with a one-line reason naming file:line; it is
  skipped and counted (or stops the run in strict mode).
- No file: the built-in seed list, expanded breadth-first through the endpoint with the
  Persona Hub persona-to-persona prompt (`pipeline.expansion.PersonaExpander`).

Each item carries its position in the source and `cursor`: the position a resumed run may
start after once this item's outcome is stored (a file: the item's own line; expansion,
whose items come out of order: see `pipeline.expansion`). Persona text is kept on one line,
with control characters (ESC, BEL, ...) removed: they would reach the training data.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

SEED_FILE = Path(__file__).parent / "data" / "seed_personas.txt"
MAX_LINE_BYTES = 64 * 1024
MAX_PERSONA_CHARS = 4000
CHUNK_BYTES = 64 * 1024
BOM = b"\xef\xbb\xbf"
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # whitespace controls are split on instead


@dataclass(frozen=True)
class Persona:
    position: int
    source: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    cursor: int | None = None  # None: the position itself

    def resume_after(self) -> int:
        return self.position if self.cursor is None else self.cursor


@dataclass(frozen=True)
class Malformed:
    position: int
    source: str
    reason: str

    def resume_after(self) -> int:
        return self.position


SourceItem = Persona | Malformed


class PersonaInputError(Exception):
    """The persona source cannot be used at all (missing, unreadable, strict-mode line)."""


def check_persona_file(path: str | Path) -> None:
    """Refuse a file that cannot be a persona file, with one line naming it and why."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(CHUNK_BYTES)
            first = _first_non_space(handle, head.removeprefix(BOM))
    except OSError as exc:
        raise PersonaInputError(f"{path}: cannot open persona file: {exc.strerror}") from None
    if head.startswith(b"\x1f\x8b"):
        raise PersonaInputError(f"{path}: gzip-compressed; decompress it first (JSONL or text expected)")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PersonaInputError(f"{path}: UTF-16 text; convert it to UTF-8")
    if (nul := head.find(b"\x00")) >= 0:
        raise PersonaInputError(
            f"{path}: binary data (NUL byte at offset {nul}); expected JSONL or UTF-8 text"
        )
    if first is None:
        raise PersonaInputError(f"{path}: persona file is empty")


def read_persona_file(path: str | Path, start_after: int = -1) -> Iterator[SourceItem]:
    """Items of a JSONL or plain-text persona file; position = 1-based line number."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise PersonaInputError(f"{path}: cannot open persona file: {exc.strerror}") from None
    with handle:
        jsonl = _looks_like_jsonl(path)
        for number, (raw, length) in enumerate(_lines(handle), start=1):
            if number == 1 and raw is not None:
                raw = raw.removeprefix(BOM)
            if number <= start_after:
                continue
            where = f"{path}:{number}"
            if raw is None:
                yield Malformed(number, where, f"line is {length} bytes (limit {MAX_LINE_BYTES})")
                continue
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                yield Malformed(number, where, f"not UTF-8 text (byte {exc.start})")
                continue
            if not line:
                continue
            if "\x00" in line:
                yield Malformed(number, where, "contains NUL bytes (binary data?)")
                continue
            yield _parse_jsonl(number, where, line) if jsonl else _plain(number, where, line)


def _lines(handle: BinaryIO) -> Iterator[tuple[bytes | None, int]]:
    """(line, its length) for each line; an over-long line is (None, its length), read past
    in chunks so that memory stays bounded whatever the file holds."""
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        if len(raw) <= MAX_LINE_BYTES:
            yield raw, len(raw)
            continue
        length = len(raw)
        while not raw.endswith(b"\n") and (raw := handle.readline(CHUNK_BYTES)):
            length += len(raw)
        yield None, length


def _first_non_space(handle: BinaryIO, head: bytes) -> int | None:
    """The first byte that is not whitespace, reading on from `head` in chunks; None if none."""
    chunk = head
    while chunk:
        stripped = chunk.lstrip()
        if stripped:
            return stripped[0]
        chunk = handle.read(CHUNK_BYTES)
    return None


def _looks_like_jsonl(path: Path) -> bool:
    """JSONL when the first byte that is not whitespace (after a BOM) is `{`, whatever the name."""
    with path.open("rb") as handle:
        return _first_non_space(handle, handle.read(CHUNK_BYTES).removeprefix(BOM)) == ord("{")


def _parse_jsonl(number: int, where: str, line: str) -> SourceItem:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Malformed(number, where, f"invalid JSON: {str(exc).split(':')[0]}")
    if not isinstance(obj, dict):
        return Malformed(number, where, "expected a JSON object with key 'persona'")
    persona = obj.pop("persona", None)
    if not isinstance(persona, str) or not persona.strip():
        return Malformed(number, where, "missing or empty 'persona' string")
    return _plain(number, where, persona, obj)


def clean_persona(text: str) -> str:
    """A persona on one line: control characters dropped, whitespace runs made one space."""
    return " ".join(_CONTROL.sub("", text).split())


def _plain(number: int, where: str, text: str, meta: dict[str, Any] | None = None) -> SourceItem:
    text = clean_persona(text)
    if not text:
        return Malformed(number, where, "no printable text")
    if len(text) > MAX_PERSONA_CHARS:
        return Malformed(number, where, f"persona is {len(text)} characters (limit {MAX_PERSONA_CHARS})")
    return Persona(number, where, text, meta or {})


def seed_personas() -> list[str]:
    """The built-in seed list (one persona per line, # comments)."""
    lines = SEED_FILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


async def file_source(path: str, start_after: int) -> AsyncIterator[SourceItem]:
    for item in read_persona_file(path, start_after):
        yield item
