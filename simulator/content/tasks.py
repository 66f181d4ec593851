"""Recognise which of the service's tasks a request is, from its messages only.

The service's prompts (pipeline/prompts/*.md) are the contract: tags such as
``<persona>``, ``<script>`` and ``<verified_prefix>`` and a few fixed sentences (among them
the no-mistakes sentence of the "w/o refinement data" mode).
Precedence: judge > continuation > trajectory > persona expansion > script > generic (a
judge request shows a script too: its ``<judged_turn>`` tag comes first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from simulator.tokens import message_text

JUDGE = "judge"
CONTINUATION = "continuation"
TRAJECTORY = "trajectory"
PERSONAS = "persona_expansion"
SCRIPT = "script"
GENERIC = "generic"

_NEXT_TURN = re.compile(r"Continue the interaction from turn\s+(\d+)")
_FAILED_TURN = re.compile(r"Turn\s+(\d+)\s+failed verification")
NO_MISTAKES = "The Player makes no mistakes"  # pipeline/prompts/trajectory_no_mistakes.md
_COUNT = re.compile(r"Write\s+(\d+)\s+such personas")
_COUNT_LOOSE = re.compile(r"(\d+)\s+(?:such\s+|distinct\s+|different\s+|related\s+)?personas")
MAX_PERSONAS = 50


@dataclass(frozen=True)
class Task:
    """A recognised task and the inputs extracted from the prompt."""

    kind: str
    is_retry: bool = False
    persona: str = ""
    count: int = 0
    script_text: str = ""
    prefix_text: str = ""
    next_turn: int = 0
    prompt: str = ""
    clean: bool = False  # the "w/o refinement data" mode: a trajectory without mistakes
    turn_text: str = ""  # the DM turn a judge request asks about


def between(text: str, open_tag: str, close_tag: str) -> str | None:
    """The text between the first `open_tag` and the next `close_tag`, stripped."""
    start = text.find(open_tag)
    if start < 0:
        return None
    start += len(open_tag)
    end = text.find(close_tag, start)
    if end < 0:
        return text[start:].strip()
    return text[start:end].strip()


def _without_persona(text: str) -> str:
    start = text.find("<persona>")
    end = text.find("</persona>", start + 1)
    if start < 0 or end < 0:
        return text
    return text[:start] + text[end:]


def recognise(messages: list[Any]) -> Task:
    """Classify the request (see module docstring) and extract its inputs."""
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    texts = [message_text(m) for m in messages]
    user = [t for r, t in zip(roles, texts, strict=True) if r == "user"]
    is_retry = "assistant" in roles or any("failed verification" in t for t in user)
    clean = any(NO_MISTAKES in t for t in texts)

    judged = [t for t in user if "<judged_turn>" in t]
    if judged:
        text = judged[-1]
        return Task(
            JUDGE, is_retry, turn_text=between(text, "<judged_turn>", "</judged_turn>") or "", prompt=text
        )

    cont = [t for t in user if "<verified_prefix>" in t]
    if cont:
        text = cont[-1]
        script = between(text, "<script>", "</script>") or ""
        prefix = between(text, "<verified_prefix>", "</verified_prefix>") or ""
        m = _NEXT_TURN.search(text) or _FAILED_TURN.search(text)
        return Task(
            CONTINUATION,
            True,
            script_text=script,
            prefix_text=prefix,
            next_turn=int(m.group(1)) if m else 0,
            prompt=text,
            clean=clean,
        )

    traj = [t for t in user if "<script>" in t]
    if traj:
        text = traj[0]
        return Task(
            TRAJECTORY,
            is_retry,
            script_text=between(text, "<script>", "</script>") or "",
            prompt=text,
            clean=clean,
        )

    with_persona = [t for t in user if "<persona>" in t]
    if with_persona:
        text = with_persona[0]
        persona = between(text, "<persona>", "</persona>") or ""
        outside = " ".join(_without_persona(t) for t in texts)
        if "close relationship" in outside:
            m = _COUNT.search(text) or _COUNT_LOOSE.search(_without_persona(text))
            count = min(MAX_PERSONAS, max(1, int(m.group(1)))) if m else 5
            return Task(PERSONAS, is_retry, persona=persona, count=count, prompt=text)
        return Task(SCRIPT, is_retry, persona=persona, prompt=text)

    return Task(GENERIC, is_retry, prompt=user[-1] if user else "")
