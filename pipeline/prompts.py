"""Prompt files (`pipeline/prompts/*.md`) rendered with `string.Template` ($name placeholders,
so the JSON braces inside prompts need no escaping), the worked examples they show
(`pipeline/prompts/example_*.json`, each passing every rule: tests/pipeline/test_prompts.py), and the
agent's view of a script: what the trained agent is shown, so also all the Player may know."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template
from typing import Any

import orjson

PROMPT_DIR = Path(__file__).with_name("prompts")


@cache
def _template(name: str) -> Template:
    return Template((PROMPT_DIR / f"{name}.md").read_text(encoding="utf-8").strip())


def render(name: str, **values: object) -> str:
    """The prompt file `name` with its placeholders filled (a missing value is an error)."""
    return _template(name).substitute({k: str(v) for k, v in values.items()})


@cache
def example(name: str) -> str:
    """The worked example `prompts/example_<name>.json` as the prompts show it."""
    return (PROMPT_DIR / f"example_{name}.json").read_text(encoding="utf-8").strip()


def agent_view(script: dict[str, Any]) -> str:
    """The system message of a training sample: the ReAct instruction, the Environment without
    hidden information, the Goal and the action templates with their descriptions (no patterns,
    no allowed values). The Player of a trajectory is told to know no more than this."""
    environment = {k: v for k, v in script["Environment"].items() if "hidden" not in k.lower()}
    actions = "\n".join(
        f"- {template}: {spec.get('description', '')}"
        for template, spec in script["Available Actions"].items()
    )
    return render(
        "sample_system",
        environment=orjson.dumps(environment, option=orjson.OPT_INDENT_2).decode(),
        goal=script["Goal"],
        actions=actions,
    )


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
