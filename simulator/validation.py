"""What the chat endpoint refuses in a request body, and OpenAI's error shape (shared by the
chat route and the batches, which answer each request as the chat route would)."""

from __future__ import annotations

from typing import Any

from simulator import tokens
from simulator.settings import SimSettings

MAX_CHOICES = 8
_ROLES = frozenset(("system", "user", "assistant", "tool", "developer", "function"))


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def problem(body: Any) -> str | None:
    """An error message for a malformed chat completion request, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "'messages' must be a non-empty array."
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"Invalid value for 'messages[{i}].role'."
        c = m.get("content")
        if c is not None and not isinstance(c, str | list):
            return f"Invalid type for 'messages[{i}].content': expected a string or an array."
    for key in ("max_tokens", "max_completion_tokens", "n", "seed"):
        v = body.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            return f"Invalid type for '{key}': expected an integer."
    for key in ("max_tokens", "max_completion_tokens", "n"):
        v = body.get(key)
        if v is not None and v < 1:
            return f"Invalid '{key}': integer below minimum value 1."
    if body.get("n") is not None and body["n"] > MAX_CHOICES:
        return f"Invalid 'n': integer above maximum value {MAX_CHOICES}."
    rf = body.get("response_format")
    if rf is not None and (
        not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema")
    ):
        return "Invalid 'response_format': expected type 'text', 'json_object' or 'json_schema'."
    return None


def refused(messages: list[Any], phrases: list[str]) -> bool:
    if not phrases:
        return False
    text = " ".join(tokens.message_text(m) for m in messages).lower()
    return any(phrase.lower() in text for phrase in phrases)


def batch_problem(body: Any, settings: SimSettings) -> str | None:
    """Why the chat endpoint would refuse this body (a 400, 403 or 404 online), or None."""
    problem_text = problem(body)
    if problem_text:
        return problem_text
    if body["model"] not in settings.models or body["model"] in settings.denied_models:
        return f"The model `{body['model']}` does not exist or you do not have access to it."
    if refused(body["messages"], settings.refused_phrases):
        return "Invalid prompt: your prompt was flagged as potentially violating our usage policy."
    prompt_tokens = tokens.count_messages(body["messages"])
    if settings.max_context_tokens and prompt_tokens > settings.max_context_tokens:
        return f"This model's maximum context length is {settings.max_context_tokens} tokens."
    return None
