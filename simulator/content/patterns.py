"""Build "verification code" regular expressions from command templates.

A pattern is the template's literal words (escaped) joined by ``\\s+``, one capture
group per placeholder in order, anchored with ``^...$``. The style (group class,
anchors, case-insensitivity, verb alternatives) varies with the RNG like patterns
written by different LLMs.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass

_SPECIAL = set("\\.^$|?*+()[]{}")
_TOKEN = re.compile(r"\{[^{}]+\}|\S+")
_SAFE_CHARS = set(string.ascii_letters + string.digits + "_./-")

# verb alternatives a pattern may accept besides the template's own verb
VERB_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "take": ("grab", "get"),
    "go": ("walk",),
    "read": ("view",),
    "look": ("l",),
    "check": ("inspect",),
    "put": ("place",),
    "use": ("apply",),
    "ask": ("query",),
    "log": ("record",),
}


def escape(word: str) -> str:
    """A literal word escaped for RE2."""
    return "".join("\\" + c if c in _SPECIAL else c for c in word)


@dataclass(frozen=True)
class PatternStyle:
    """How one script writes its patterns."""

    loose_anchors: bool
    ignore_case: bool
    safe_class: str
    verb_alternatives: bool

    @classmethod
    def random(cls, rng: random.Random) -> PatternStyle:
        return cls(
            loose_anchors=rng.random() < 0.8,
            ignore_case=rng.random() < 0.25,
            safe_class=rng.choice((r"([A-Za-z0-9_./-]+)", r"(\S+)", r"([\w./-]+)", r"([^\s]+)")),
            verb_alternatives=rng.random() < 0.3,
        )


def group_for(values: list[str], style: PatternStyle, last: bool, rng: random.Random) -> str:
    """The capture group for a placeholder with these allowed values."""
    if any(any(ch.isspace() for ch in v) for v in values):
        return "(.+)" if last and rng.random() < 0.3 else "(.+?)"
    if all(set(v) <= _SAFE_CHARS for v in values):
        return style.safe_class
    return r"(\S+)"


def build_pattern(
    template: str,
    params: dict[str, list[str]],
    style: PatternStyle,
    rng: random.Random,
    *,
    verb: str | None = None,
    capture_verb: bool = False,
) -> str:
    """The verification code for a template (optionally with another verb, a flaw)."""
    tokens = _TOKEN.findall(template)
    parts: list[str] = []
    last_ph = max((i for i, t in enumerate(tokens) if t.startswith("{")), default=-1)
    for i, tok in enumerate(tokens):
        if tok.startswith("{") and tok.endswith("}"):
            parts.append(group_for(params.get(tok[1:-1], []), style, i == last_ph == len(tokens) - 1, rng))
        elif i == 0:
            word = verb if verb is not None else tok
            alts = VERB_ALTERNATIVES.get(word.lower(), ()) if style.verb_alternatives and verb is None else ()
            if alts:
                parts.append("(?:" + "|".join(escape(w) for w in (word, *alts)) + ")")
            else:
                parts.append(escape(word))
        else:
            parts.append(escape(tok))
    if capture_verb and len(parts) > 1 and parts[1].startswith("("):
        # a flaw: the first group also swallows the verb in front of it
        parts[:2] = ["(" + parts[0] + r"\s+" + parts[1][1:]]
    body = r"\s+".join(parts)
    prefix = "(?i)" if style.ignore_case else ""
    if style.loose_anchors:
        return prefix + r"^\s*" + body + r"\s*$"
    return prefix + "^" + body + "$"
