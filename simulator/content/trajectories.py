"""Write a trajectory (SPEC §4) for any script: alternating Player/DM turns.

The plan comes from `planner.plan`; 2-4 mistakes (see `mistakes`) are inserted
before plan steps, each followed by a Player thought that reads the DM's
observation and a corrected action. A continuation replays the verified prefix
(what was achieved stays achieved), then writes only the new turns, adding
mistakes when the prefix has fewer than 2 error turns.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from simulator.content import mistakes as mk
from simulator.content import narration as nar
from simulator.content.planner import Step, kind_of, plan
from simulator.content.scriptmodel import Script

FLAGS = ("parameter_error", "place_error", "logic_error")


def player_turn(turn: int, thought: str, action: str) -> dict[str, Any]:
    return {"turn": turn, "role": "Player", "Thought": thought, "Action": action}


def dm_turn(turn: int, thought: str, observation: str, flag: str | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"turn": turn, "role": "DM", "Thought": thought, "Observation": observation}
    for f in FLAGS:
        t[f] = f == flag
    return t


def is_error_turn(turn: Any) -> bool:
    """A DM turn with any flag true."""
    return isinstance(turn, dict) and turn.get("role") == "DM" and any(turn.get(f) is True for f in FLAGS)


def _mistake_counts(n_steps: int, n: int, rng: random.Random) -> list[int]:
    counts = [0] * n_steps
    for _ in range(n):
        free = [i for i in range(n_steps) if counts[i] < 2]
        if not free:
            break
        counts[rng.choice(free)] += 1
    return counts


def _replay(script: Script, steps: list[Step], prefix: list[Any], state: nar.State) -> tuple[list[Step], int]:
    """Remaining steps after a verified prefix, and its number of error turns."""
    clean: list[str] = []
    for a, b in itertools.pairwise(prefix):
        if (
            isinstance(a, dict)
            and a.get("role") == "Player"
            and isinstance(b, dict)
            and b.get("role") == "DM"
            and not is_error_turn(b)
            and isinstance(a.get("Action"), str)
            and script.is_valid(a["Action"])
        ):
            clean.append(a["Action"])
    ptr = 0
    for cmd in clean:
        for idx in range(ptr, len(steps)):
            if steps[idx].command == cmd:
                ptr = idx + 1
                break
        for action in script.actions:
            if action.accepts(cmd):
                vals = action.match_values(cmd) or []
                kind = kind_of(action.template)
                if kind == "move" and vals:
                    state.location = vals[0]
                elif kind == "take" and vals:
                    state.inventory.append(vals[0])
                break
    done = set(clean)
    remaining = [s for s in steps[ptr:] if s.command not in done]
    errors = sum(1 for t in prefix if is_error_turn(t))
    return remaining, errors


def _confirmation(script: Script, steps: list[Step]) -> Step:
    for a in script.actions:
        if not a.names and a.accepts(a.template):
            return Step(a, {}, "other")
    return steps[-1]


def _detours(script: Script, steps: list[Step], n: int) -> list[Step]:
    pool = [Step(a, {}, "other") for a in script.actions if not a.names and a.accepts(a.template)]
    pool += [s for s in steps if s.kind in ("move", "read")] or steps[:1]
    return [pool[i % len(pool)] for i in range(n)]


def build(
    script: Script,
    rng: random.Random,
    *,
    start_turn: int = 1,
    prefix: list[Any] | None = None,
    n_mistakes: int | None = None,
    min_turns: int = 0,
    protect_last: bool = False,
) -> list[dict[str, Any]] | None:
    """The turns of a trajectory (or of a continuation after `prefix`); None if unplayable."""
    steps = plan(script)
    if not steps:
        return None
    state = nar.State()
    pending_obs: str | None = None
    if prefix:
        remaining, prefix_errors = _replay(script, steps, prefix, state)
        if not remaining:
            remaining = [_confirmation(script, steps)]
        last = prefix[-1] if isinstance(prefix[-1], dict) else {}
        if is_error_turn(last) and isinstance(last.get("Observation"), str):
            pending_obs = last["Observation"]
        if n_mistakes is None:
            n_mistakes = max(0, 2 - prefix_errors) + (1 if rng.random() < 0.25 else 0)
    else:
        remaining = steps
        if n_mistakes is None:
            n_mistakes = rng.choices((2, 3, 4), (0.45, 0.4, 0.15))[0]
    if min_turns:
        extra = max(0, (min_turns - start_turn + 1) // 2 - len(remaining) - n_mistakes + 1)
        remaining = remaining[:-1] + _detours(script, steps, extra) + remaining[-1:]

    counts = _mistake_counts(
        len(remaining) - (1 if protect_last and len(remaining) > 1 else 0), n_mistakes, rng
    )
    counts += [0] * (len(remaining) - len(counts))
    turns: list[dict[str, Any]] = []
    t = start_turn
    pending_fix = ""
    for i, step in enumerate(remaining):
        last_step = i == len(remaining) - 1
        for _ in range(counts[i]):
            m = mk.any_mistake(i, remaining, script, state, rng)
            if m is None:
                continue
            if pending_obs is not None:
                thought = nar.correction_thought(pending_obs, f"Let me try this: {m.command}.", rng)
            else:
                thought = nar.step_thought(step, rng, script.goal, first=t == 1, last=False)
                if m.kind in ("place", "logic"):
                    thought = rng.choice(
                        (
                            f"I think I can {m.command} now.",
                            f"Let me {m.command}.",
                            f"It should work to {m.command} right away.",
                        )
                    )
            turns.append(player_turn(t, thought, m.command))
            turns.append(dm_turn(t + 1, m.dm_thought, m.observation, m.flag))
            t += 2
            pending_obs, pending_fix = m.observation, m.fix
        if pending_obs is not None:
            fix = pending_fix or f"I'll {step.command} instead."
            thought = nar.correction_thought(pending_obs, fix, rng)
        else:
            thought = nar.step_thought(step, rng, script.goal, first=t == 1, last=last_step)
        turns.append(player_turn(t, thought, step.command))
        dm_thought, obs = nar.valid_dm(step, script.environment, state, rng)
        if last_step:
            obs = nar.success_observation(obs, script.conditions, script.goal, rng)
            dm_thought = rng.choice(
                (
                    "That was the last step; every completion condition is met.",
                    "Valid action, and the goal is now achieved.",
                    "Correct, and with this the task is complete.",
                )
            )
        turns.append(dm_turn(t + 1, dm_thought, obs))
        t += 2
        pending_obs, pending_fix = None, ""
    return turns
