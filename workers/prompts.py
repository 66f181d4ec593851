"""Prompt files (`workers/prompts/*.md`) rendered with `string.Template` ($name placeholders,
so the JSON braces inside prompts need no escaping)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template

PROMPT_DIR = Path(__file__).with_name("prompts")


@cache
def _template(name: str) -> Template:
    return Template((PROMPT_DIR / f"{name}.md").read_text(encoding="utf-8").strip())


def render(name: str, **values: object) -> str:
    """The prompt file `name` with its placeholders filled (a missing value is an error)."""
    return _template(name).substitute({k: str(v) for k, v in values.items()})


ECHO_LIMIT = 16_384  # characters of a rejected answer echoed back with the feedback


def chat(
    system: str, user: str, rejected: str | None = None, feedback: str | None = None
) -> list[dict[str, str]]:
    """A request's messages; after a failed check, the rejected answer and the feedback follow."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if rejected is not None and feedback is not None:
        messages += [
            {"role": "assistant", "content": rejected[:ECHO_LIMIT]},
            {"role": "user", "content": feedback},
        ]
    return messages
