"""Parse a script from a prompt and check actions against it (SPEC §3, T4).

Patterns from prompts are compiled with RE2 only (linear time; never Python's `re`).
Actions whose pattern does not compile, or whose parameters are malformed, are
kept out of the usable set, so any script a real LLM writes can still be played.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
import re2

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


def placeholders(template: str) -> list[str]:
    """The placeholder names of a template, in order."""
    return _PLACEHOLDER.findall(template)


def fill(template: str, values: dict[str, str]) -> str:
    """The template with each placeholder replaced by its value."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


@functools.lru_cache(maxsize=8192)
def compile_pattern(pattern: str) -> Any | None:
    """The RE2-compiled pattern, or None when RE2 rejects it."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except Exception:
        return None


def full_groups(pattern: Any, text: str) -> list[str | None] | None:
    """The groups of `pattern` fully matching `text` (None: no match).

    RE2 matches UTF-8 bytes either way; given bytes, google-re2's wrapper skips turning byte
    offsets back into character offsets, which was half of the simulator's RE2 time."""
    m = pattern.fullmatch(text.encode())
    if m is None:
        return None
    return [g.decode() if g is not None else None for g in m.groups()]


def strip_fence(text: str) -> str:
    """Text without a surrounding Markdown code fence."""
    t = text.strip()
    if t.startswith("```"):
        first_nl = t.find("\n")
        t = t[first_nl + 1 :] if first_nl >= 0 else t[3:]
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()


def loads_lenient(text: str) -> Any | None:
    """JSON from text (fence stripped), or None."""
    try:
        return orjson.loads(strip_fence(text))
    except orjson.JSONDecodeError:
        return None


@dataclass
class Action:
    """One usable available action."""

    template: str
    names: list[str]
    params: dict[str, list[str]]
    pattern: Any
    description: str = ""
    index: int = 0

    def match_values(self, command: str) -> list[str] | None:
        """Captured values when the pattern fully matches `command`, else None."""
        groups = full_groups(self.pattern, command)
        if groups is None:
            return None
        return [g if g is not None else "" for g in groups]

    def accepts(self, command: str) -> bool:
        """T4: the pattern fully matches and every captured value is allowed."""
        got = self.match_values(command)
        if got is None or len(got) != len(self.names):
            return False
        return all(v in self.params.get(n, ()) for n, v in zip(self.names, got, strict=True))


@dataclass
class Script:
    """The parts of a script the trajectory generator needs."""

    raw: dict[str, Any]
    actions: list[Action] = field(default_factory=list)
    goal: str = ""
    conditions: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    def is_valid(self, command: str) -> bool:
        """T4: some available action accepts the command."""
        return any(a.accepts(command) for a in self.actions)


def parse_script(text: str) -> Script | None:
    """Parse the script JSON from a prompt; None when it is not a JSON object."""
    raw = loads_lenient(text)
    if not isinstance(raw, dict):
        return None
    env = raw.get("Environment")
    goal = raw.get("Goal")
    conds = raw.get("Completion Conditions")
    script = Script(
        raw=raw,
        goal=goal if isinstance(goal, str) else "",
        conditions=[c for c in conds if isinstance(c, str)] if isinstance(conds, list) else [],
        environment=env if isinstance(env, dict) else {},
    )
    acts = raw.get("Available Actions")
    if not isinstance(acts, dict):
        return script
    for i, (template, spec) in enumerate(acts.items()):
        action = _parse_action(template, spec, i)
        if action is not None:
            script.actions.append(action)
    return script


def _parse_action(template: str, spec: Any, index: int) -> Action | None:
    if not isinstance(spec, dict) or not isinstance(template, str) or not template.strip():
        return None
    code = spec.get("verification code")
    if not isinstance(code, str):
        return None
    pattern = compile_pattern(code)
    if pattern is None:
        return None
    names = placeholders(template)
    raw_params = spec.get("parameters") or {}
    if not isinstance(raw_params, dict):
        return None
    params: dict[str, list[str]] = {}
    for name in names:
        values = raw_params.get(name)
        if not isinstance(values, list):
            return None
        values = [v for v in values if isinstance(v, str)]
        if not values:
            return None
        params[name] = values
    if pattern.groups != len(names):
        return None
    desc = spec.get("description")
    return Action(template, names, params, pattern, desc if isinstance(desc, str) else "", index)
