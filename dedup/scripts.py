"""The text a script is deduplicated on: its Goal plus a short summary of its Environment
(the names of its locations, items and documents, the start of any free text), so two
scripts that set the same task in the same world match, whatever their action lists."""

from __future__ import annotations

from typing import Any

MAX_VALUE_CHARS = 120
MAX_KEY_CHARS = 800


def script_key(script: dict[str, Any]) -> str:
    parts = [f"Goal: {script.get('Goal', '')}"]
    environment = script.get("Environment")
    if isinstance(environment, dict):
        for section, value in environment.items():
            parts.append(f"{section}: {_summary(value)}")
    return "\n".join(parts)[:MAX_KEY_CHARS]


def _summary(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(str(name) for name in value)
    if isinstance(value, list):
        return ", ".join(str(item)[:40] for item in value)
    return str(value)[:MAX_VALUE_CHARS]
