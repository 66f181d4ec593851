"""Thoughts and observations for trajectories, in several phrasings each.

Texts refer to the script's concrete names (values, documents, locations) and to
the state the game is in (where the player is, what it carries).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from simulator.content.planner import Step

MAX_QUOTE = 300


@dataclass
class State:
    """What the DM knows about the game while narrating."""

    location: str = ""
    inventory: list[str] = field(default_factory=list)


def the(value: str) -> str:
    """The value with "the " in front where English wants it."""
    v = value.strip()
    low = v.lower()
    if not v or low.startswith(("the ", "a ", "an ")) or not v[0].isalpha() or v[0].isupper():
        return v
    if any(c in v for c in "/._@#") or "'s " in v:
        return v
    return "the " + v


def _cut(text: str, n: int = MAX_QUOTE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def first_sentence(text: str, n: int = 140) -> str:
    """The first sentence of a text, shortened."""
    for sep in (". ", "! ", "? "):
        i = text.find(sep)
        if 0 < i < n:
            return text[: i + 1]
    return _cut(text, n)


def lookup(env: dict[str, Any], section_words: tuple[str, ...], name: str) -> str | None:
    """A description of `name` from an Environment section (dict or list), if any."""
    low = name.lower()
    for key, section in env.items():
        if not isinstance(key, str) or not any(w in key.lower() for w in section_words):
            continue
        if isinstance(section, dict):
            for k, v in section.items():
                if isinstance(k, str) and k.lower() == low:
                    return _cut(v if isinstance(v, str) else str(v))
        elif isinstance(section, list):
            for entry in section:
                if isinstance(entry, dict):
                    label = entry.get("name") or entry.get("title") or ""
                    if isinstance(label, str) and label.lower() == low:
                        return _cut(" ".join(str(v) for k, v in entry.items() if k not in ("name", "title")))
                elif isinstance(entry, str) and entry.lower().startswith(low):
                    return _cut(entry)
    return None


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    return text[:1].lower() + text[1:] if first[:1].isupper() and first[1:].islower() else text


def goal_text(goal: str) -> str:
    g = goal.strip().rstrip(".")
    return g[:1].lower() + g[1:] if g else "finish the task"


# ---------------------------------------------------------------- Player thoughts


def step_thought(step: Step, rng: random.Random, goal: str, first: bool, last: bool) -> str:
    """The Player's reasoning before a correct action."""
    vs = list(step.values.values())
    cmd = step.command
    v0 = the(vs[0]) if vs else ""
    by_kind = {
        "move": [
            f"I should go to {v0} next.",
            f"Next stop: {v0}.",
            f"What I need is in {v0}, so I'll head there.",
        ],
        "take": [
            f"I need {v0}, so I'll get it now.",
            f"Let me pick up {v0} before anything else.",
            f"{v0[:1].upper() + v0[1:]} is needed for the task; I'll take it.",
        ],
        "read": [
            f"{v0[:1].upper() + v0[1:]} may tell me what exactly to do.",
            f"Before going further I want to check {v0}.",
            f"I'll read {v0} to be sure of the details.",
        ],
        "put": [f"Now {v0} has to go where it belongs.", f"I have {v0}; time to put it in place."],
        "talk": [f"{v0[:1].upper() + v0[1:]} should hear about this.", f"I'll keep {v0} informed."],
        "record": [f"The result needs to be written down: {v0}.", "I should record what I did."],
        "use": [f"Now I can work on it: {cmd}.", f"Everything is ready to {cmd}."],
    }
    options = list(by_kind.get(step.kind, [])) if vs else []
    options += [f"Next I'll {cmd}.", f"The next step is to {cmd}."]
    text = rng.choice(options)
    if first:
        text = rng.choice((f"My goal: {goal_text(goal)}. ", "Let me start. ", "")) + text
    if last:
        text += rng.choice(
            (
                " This should complete the task.",
                " That should be the last step.",
                " After this everything should be done.",
            )
        )
    if not text.rstrip().endswith((".", "!", "?")):
        text += "."
    if "'" not in text and rng.random() < 0.5:
        text += f" The command is '{cmd}'."
    return text


def correction_thought(observation: str, fix: str, rng: random.Random) -> str:
    """The Player reads the DM's feedback and corrects itself."""
    snip = first_sentence(observation)
    low = snip[:1].lower() + snip[1:]
    lead = rng.choice(
        (
            f'The DM says: "{snip}"',
            f"That didn't work: {low}",
            f"Hmm, {low}",
            f'The feedback was "{snip}"',
            f"I see, {low}",
        )
    )
    return f"{lead} {fix}"


# ---------------------------------------------------------------- DM texts


def valid_dm(step: Step, env: dict[str, Any], state: State, rng: random.Random) -> tuple[str, str]:
    """DM thought and observation for a correct action; updates the state."""
    vs = list(step.values.values())
    v0 = the(vs[0]) if vs else ""
    v1 = the(vs[1]) if len(vs) > 1 else ""
    verb = step.action.template.split()[0]
    kind = step.kind
    if kind == "move" and vs:
        state.location = vs[0]
        desc = lookup(env, ("location", "place", "room", "map"), vs[0])
        obs = rng.choice((f"You are now in {v0}.", f"You arrive at {v0}.", f"You make your way to {v0}."))
        if desc:
            obs += " " + desc
    elif kind == "take" and vs:
        state.inventory.append(vs[0])
        where = f" from {v1}" if v1 else ""
        obs = rng.choice(
            (
                f"You take {v0}{where}. It is now in your inventory.",
                f"You {verb} {v0}{where} and carry it with you.",
                f"Got it: {v0} is now with you{' (it was in ' + v1 + ')' if v1 else ''}.",
            )
        )
    elif kind == "read" and vs:
        content = lookup(env, ("document", "file", "note", "record"), vs[0])
        obs = (
            rng.choice((f'{v0[:1].upper() + v0[1:]} reads: "{content}"', f'You read {v0}: "{content}"'))
            if content
            else rng.choice(
                (
                    f"You read {v0}. Nothing in it contradicts your plan.",
                    f"You go through {v0}; it confirms what needs to be done.",
                )
            )
        )
    elif kind == "put" and vs:
        if vs[0] in state.inventory:
            state.inventory.remove(vs[0])
        obs = rng.choice(
            (
                f"{v0[:1].upper() + v0[1:]} is now in {v1 or 'place'}.",
                f"You {verb} {v0}{' — ' + v1 + ' now holds it' if v1 else ''}.",
            )
        )
    elif kind == "talk" and vs:
        obs = rng.choice(
            (
                f"{v0[:1].upper() + v0[1:]} listens and thanks you"
                f"{' for the update on ' + vs[1] if v1 else ''}.",
                f"You speak with {v0}; they now know what is going on.",
            )
        )
    elif kind == "record" and vs:
        obs = rng.choice(
            (
                f"The entry {vs[0]!r} is now recorded{' in ' + v1 if v1 else ''}.",
                f"You {verb} {v0}{' in ' + v1 if v1 else ''}. The entry is saved.",
            )
        )
    elif not vs:
        t = step.action.template.lower()
        if "invent" in t:
            obs = "You are carrying: " + (", ".join(state.inventory) or "nothing of note") + "."
        elif "look" in t or "search" in t:
            desc = lookup(env, ("location", "place", "room"), state.location) if state.location else None
            obs = f"You look around{' ' + the(state.location) if state.location else ''}. " + (
                desc or "Nothing unexpected catches your eye."
            )
        else:
            obs = rng.choice(
                ("Done.", "A moment passes. Nothing else changes.", "You do that. All is in order.")
            )
    else:
        effect = rng.choice(
            (
                "It works as expected.",
                "That sorts it out.",
                "The result looks right.",
                "It takes a minute, but it is done.",
            )
        )
        obs = f"You {step.command}. {effect}"
    thought = rng.choice(
        (
            f"'{step.command}' matches '{step.action.template}' and uses allowed values; it succeeds.",
            "Valid command, right place, right time: it succeeds.",
            f"The player can {step.command} here; this moves the task forward.",
            "Correct action with allowed parameters. No error.",
        )
    )
    return thought, obs


def success_observation(base: str, conditions: list[str], goal: str, rng: random.Random) -> str:
    """The last DM observation: the result of the last action and the task completed."""
    if conditions:
        done = "; ".join(_lower_first(c.strip().rstrip(".")) for c in conditions[:5])
        tail = rng.choice((f"All done: {done}.", f"Task complete. {done}.", f"Success! {done}."))
    else:
        tail = rng.choice((f"Task complete: {goal_text(goal)}.", "Success! The goal is achieved."))
    return _cut(base + " " + tail, 1500)
