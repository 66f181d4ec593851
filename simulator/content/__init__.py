"""Text generation of the simulator, deterministic given the request.

`generate(body, settings)` recognises the task from the messages (see `tasks`),
seeds a `random.Random` from the sha256 of the canonical request body (which holds
the service's `seed` parameter) and the simulator's `seed` setting, writes the
answer (possibly flawed on purpose, see `flaws`) and cuts it at `max_tokens`.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import orjson

from simulator import tokens
from simulator.content import flaws, judge, personas, scripts, tasks, trajectories
from simulator.content.scriptmodel import loads_lenient, parse_script
from simulator.settings import SimSettings

# keys that change how an answer is delivered, not what it says
TRANSPORT_KEYS = frozenset(("stream", "stream_options"))
# keys that only limit how long it may be (with the above: left out of `request_digest`)
LIMIT_KEYS = frozenset(("max_tokens", "max_completion_tokens"))


@dataclass(frozen=True)
class Generation:
    """One generated answer: the task recognised, the flaw put in (if any), the text."""

    task: str
    flaw: str | None
    content: str
    finish_reason: str = "stop"


def canonical_digest(body: Any) -> str:
    """sha256 hex of the request body serialised with sorted keys (also used by /_sim/stats)."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def content_digest(body: dict[str, Any]) -> str:
    """The digest that seeds the content: the canonical body without transport-only keys."""
    if any(k in body for k in TRANSPORT_KEYS):
        body = {k: v for k, v in body.items() if k not in TRANSPORT_KEYS}
    return canonical_digest(body)


def request_digest(body: dict[str, Any]) -> str:
    """The digest /_sim/stats counts requests by: the question asked (the canonical body
    without TRANSPORT_KEYS and LIMIT_KEYS), as the service keys its store."""
    return canonical_digest({k: v for k, v in body.items() if k not in TRANSPORT_KEYS | LIMIT_KEYS})


def request_rng(digest: str, seed: int, index: int = 0) -> random.Random:
    """The content RNG of one request (and choice index)."""
    h = hashlib.sha256(f"{digest}:{seed}:{index}".encode()).digest()
    return random.Random(int.from_bytes(h, "big"))


def wants_json(body: dict[str, Any]) -> bool:
    """Whether the request asks for JSON mode (json_object or json_schema)."""
    rf = body.get("response_format")
    return isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")


def max_tokens_of(body: dict[str, Any]) -> int | None:
    """The completion token limit of the request, if any."""
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def generate(
    body: dict[str, Any], settings: SimSettings, index: int = 0, seed_digest: str | None = None
) -> Generation:
    """The answer to a chat completion request (see module docstring)."""
    rng = request_rng(seed_digest or content_digest(body), settings.seed, index)
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    task = tasks.recognise(messages)
    json_mode = wants_json(body)
    fs = settings.flaws
    flaw: str | None = None
    if task.kind == tasks.SCRIPT:
        flaw = flaws.pick(rng, fs.script_rate, fs, task.is_retry, flaws.SCRIPT_FLAWS)
        gen = scripts.build_script(task.persona or "someone", rng)
        content = flaws.flaw_script(flaw, gen.script, rng) if flaw else _dumps(gen.script, rng)
    elif task.kind in (tasks.TRAJECTORY, tasks.CONTINUATION):
        content, flaw = _trajectory(task, fs, rng)
    elif task.kind == tasks.JUDGE:
        content = judge.answer(task.turn_text, fs.judge_disagree_rate, rng)
    elif task.kind == tasks.PERSONAS:
        content = orjson.dumps({"personas": personas.expand(task.persona, task.count, rng)}).decode()
    else:
        content = _generic(task.prompt, json_mode, rng)
    if not json_mode and task.kind != tasks.GENERIC and rng.random() < fs.code_fence_rate:
        content = "```json\n" + content + "\n```"
    finish = "stop"
    limit = max_tokens_of(body)
    if limit is not None and tokens.count_text(content) > limit:
        content, finish = tokens.cut_to_tokens(content, limit), "length"
    return Generation(task.kind, flaw, content, finish)


def _dumps(obj: Any, rng: random.Random) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 if rng.random() < 0.5 else 0).decode()


def _trajectory(task: tasks.Task, fs: Any, rng: random.Random) -> tuple[str, str | None]:
    script = parse_script(task.script_text)
    if script is None or not script.actions:
        return orjson.dumps({"trajectory": []}).decode(), None
    prefix: list[Any] = []
    start = 1
    if task.kind == tasks.CONTINUATION:
        raw = loads_lenient(task.prefix_text)
        if isinstance(raw, dict):
            raw = raw.get("trajectory")
        prefix = [t for t in raw if isinstance(t, dict)] if isinstance(raw, list) else []
        last = prefix[-1].get("turn") if prefix else 0
        start = task.next_turn or ((last + 1) if isinstance(last, int) else len(prefix) + 1)
    prefix_errors = sum(1 for t in prefix if trajectories.is_error_turn(t))
    kinds = flaws.feasible(flaws.TRAJECTORY_FLAWS, prefix_errors, task.clean)
    flaw = flaws.pick(rng, fs.trajectory_rate, fs, task.is_retry, kinds)
    opts = flaws.build_options(flaw, rng, prefix_errors, start, task.clean)
    turns = trajectories.build(script, rng, start_turn=start, prefix=prefix or None, **opts)
    if not turns:
        return orjson.dumps({"trajectory": []}).decode(), None
    if flaw is None:
        return _dumps({"trajectory": turns}, rng), None
    out = flaws.flaw_trajectory(flaw, turns, script, rng, start)
    return (out if isinstance(out, str) else _dumps({"trajectory": out}, rng)), flaw


_GENERIC = (
    "Sure, happy to help. Could you tell me a bit more about what you need?",
    "Hello! I'm a simulated assistant. I can help with that; what would you like to do first?",
    "Here is a short answer: it depends on the details, but the usual approach is to start small "
    "and iterate.",
    "Thanks for your message. I don't have much context yet; can you share more details?",
)


def _generic(prompt: str, json_mode: bool, rng: random.Random) -> str:
    text = rng.choice(_GENERIC)
    if json_mode:
        return orjson.dumps({"answer": text}).decode()
    return text
