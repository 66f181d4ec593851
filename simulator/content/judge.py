"""The embedded endpoint's answer to a judge request (workers/prompts/judge/): whether the DM
turn shown should carry `place_error` and `logic_error`.

It reads only what the request shows: the judged DM turn's Thought, in which the simulated DM
(`mistakes`) always names the kind of a place or logic mistake it reports. So a flag that was
planted or removed after the trajectory was written (the DM's words say one thing, its flags
another) is caught, as a careful human annotator would catch it. With `flaws.judge_disagree_rate`
the answer flips one flag on purpose: a judge that disagrees with a correct DM that often.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from simulator.content.scriptmodel import loads_lenient

# the phrases with which `mistakes._place` / `mistakes._logic` name the error in the DM Thought
PLACE_CUES = ("place error", "wrong place", "at the player's location")
LOGIC_CUES = ("logic error", "too early", "does not advance the goal")


def verdict(turn: dict[str, Any]) -> dict[str, bool]:
    """The flags the DM turn's own words call for."""
    thought = str(turn.get("Thought", "")).lower()
    return {
        "place_error": any(cue in thought for cue in PLACE_CUES),
        "logic_error": any(cue in thought for cue in LOGIC_CUES),
    }


def answer(turn_text: str, disagree_rate: float, rng: random.Random) -> str:
    """The judge's JSON answer for the DM turn in `turn_text`."""
    turn = loads_lenient(turn_text)
    if not isinstance(turn, dict):
        return orjson.dumps({"place_error": False, "logic_error": False, "reason": "no turn shown"}).decode()
    flags = verdict(turn)
    reason = _reason(flags)
    if rng.random() < disagree_rate:
        flipped = rng.choice(sorted(flags))
        flags[flipped] = not flags[flipped]
        reason = (
            f"On reflection, {flipped.replace('_', ' ')} is {'' if flags[flipped] else 'not '}what happened."
        )
    return orjson.dumps({**flags, "reason": reason}).decode()


def _reason(flags: dict[str, bool]) -> str:
    if flags["place_error"] and flags["logic_error"]:
        return "The action is out of place and out of order."
    if flags["place_error"]:
        return "The action is well-formed but cannot be done where the player is."
    if flags["logic_error"]:
        return "The action is possible here but wrong for the situation."
    return "The action is correct for where the player is and what the task needs."
