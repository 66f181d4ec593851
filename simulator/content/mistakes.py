"""Realistic Player mistakes and the DM's reaction to them.

- ``param_value``: a value outside the allowed list (a near miss, a value of another
  placeholder, "the ..." prefix, a misspelling) -> ``parameter_error``;
- ``typo``: a misspelt verb -> ``parameter_error``;
- ``missing``: the last argument left out -> ``parameter_error``;
- ``place``: a valid command in the wrong place (before moving there, or an item
  that is not where the player looks) -> ``place_error``;
- ``logic``: a valid command in the wrong order, or on the wrong object -> ``logic_error``.

Every mistake is checked against the script with RE2: parameter errors must be
invalid actions (T4) and place/logic errors valid ones, so the flags stay consistent (T5).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from simulator.content.narration import State, the
from simulator.content.planner import Step
from simulator.content.scriptmodel import Script, fill

KINDS = ("param_value", "typo", "missing", "place", "logic")
WEIGHTS = (0.3, 0.15, 0.1, 0.2, 0.25)
FLAG = {
    "param_value": "parameter_error",
    "typo": "parameter_error",
    "missing": "parameter_error",
    "place": "place_error",
    "logic": "logic_error",
}


@dataclass
class Mistake:
    """A wrong Player action with the DM's judgement and the fix the Player will make."""

    kind: str
    command: str
    dm_thought: str
    observation: str
    fix: str

    @property
    def flag(self) -> str:
        return FLAG[self.kind]


def make(
    kind: str, i: int, steps: list[Step], script: Script, state: State, rng: random.Random
) -> Mistake | None:
    """A mistake of this kind made while attempting step i, or None when not possible."""
    fn = {"param_value": _param_value, "typo": _typo, "missing": _missing, "place": _place, "logic": _logic}[
        kind
    ]
    return fn(i, steps, script, state, rng)


def any_mistake(
    i: int,
    steps: list[Step],
    script: Script,
    state: State,
    rng: random.Random,
    kinds: tuple[str, ...] = KINDS,
) -> Mistake | None:
    """A mistake of a random feasible kind (parameter errors as the fallback)."""
    weights = [WEIGHTS[KINDS.index(k)] for k in kinds]
    first = rng.choices(kinds, weights)[0]
    for kind in (first, "param_value", "typo", "missing"):
        m = make(kind, i, steps, script, state, rng)
        if m is not None:
            return m
    return None


def invalid_variant(step: Step, script: Script, rng: random.Random) -> str | None:
    """An invalid command close to the step's command (used for mistakes and flaws)."""
    m = _param_value(0, [step], script, State(), rng) or _typo(0, [step], script, State(), rng)
    return m.command if m else None


def _param_value(
    i: int, steps: list[Step], script: Script, state: State, rng: random.Random
) -> Mistake | None:
    step = steps[i]
    if not step.action.names:
        return None
    name = rng.choice(step.action.names)
    good = step.values[name]
    allowed = set(step.action.params[name])
    other = [v for a in script.actions for n in a.names for v in a.params[n] if v not in allowed]
    candidates = [
        good + "s" if not good.endswith("s") else good[:-1],
        "the " + good if not good.lower().startswith("the ") else good[4:],
        _misspell(good, rng),
        *rng.sample(other, min(3, len(other))),
        good.replace(" ", "_") if " " in good else good.upper(),
    ]
    rng.shuffle(candidates)
    for bad in candidates:
        if not bad or bad in allowed:
            continue
        values = dict(step.values)
        values[name] = bad
        cmd = fill(step.action.template, values)
        if not script.is_valid(cmd):
            shown = ", ".join(step.action.params[name][:4])
            return Mistake(
                "param_value",
                cmd,
                rng.choice(
                    (
                        f"'{bad}' is not an allowed value for {name}, so this is a parameter error.",
                        f"The command uses '{bad}', which the script does not allow for {name}.",
                    )
                ),
                rng.choice(
                    (
                        f"There is no '{bad}' you can use here. Valid options for {name} include: {shown}.",
                        f"'{bad}' is not something you can {step.action.template.split()[0]} here. "
                        f"Try one of: {shown}.",
                        f"Nothing called '{bad}' exists in this place.",
                    )
                ),
                f"'{bad}' is not a valid {name}; I meant '{good}'. I'll {step.command}.",
            )
    return None


def _misspell(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word + word[-1:]
    k = rng.randrange(1, len(word) - 2)
    return word[:k] + word[k + 1] + word[k] + word[k + 2 :]


def _typo(i: int, steps: list[Step], script: Script, state: State, rng: random.Random) -> Mistake | None:
    step = steps[i]
    cmd = step.command
    head, _, rest = cmd.partition(" ")
    for _ in range(4):
        bad_head = _misspell(head, rng) if len(head) >= 3 else head + head[-1:]
        bad = (bad_head + " " + rest).strip()
        if bad != cmd and not script.is_valid(bad):
            return Mistake(
                "typo",
                bad,
                rng.choice(
                    (
                        f"'{bad_head}' is not a command; the action matches no verification code.",
                        "The command is misspelt and matches none of the available actions.",
                    )
                ),
                rng.choice(
                    (
                        f"'{bad_head}' is not a command you can use here.",
                        f"I don't understand '{bad}'. Check the spelling of the command.",
                        f"Unknown command '{bad_head}'.",
                    )
                ),
                f"I misspelt the command. It should be '{cmd}'.",
            )
    return None


def _missing(i: int, steps: list[Step], script: Script, state: State, rng: random.Random) -> Mistake | None:
    step = steps[i]
    if not step.action.names:
        return None
    name = step.action.names[-1]
    values = dict(step.values)
    values[name] = ""
    bad = " ".join(fill(step.action.template, values).split())
    if not bad or script.is_valid(bad):
        return None
    return Mistake(
        "missing",
        bad,
        rng.choice(
            (
                f"The command lacks its {name}, so it matches no action pattern.",
                f"Incomplete command: no {name} given. Parameter error.",
            )
        ),
        rng.choice(
            (
                f"'{bad}' is incomplete: say which {name}.",
                f"Which {name}? The command needs one.",
                f"You need to give a {name} for that.",
            )
        ),
        f"I left out the {name}. The full command is '{step.command}'.",
    )


def _alternative(step: Step, script: Script, rng: random.Random) -> tuple[str, str, str] | None:
    """(placeholder, other allowed value, valid command) for the step, if any."""
    names = list(step.action.names)
    rng.shuffle(names)
    for name in names:
        others = [v for v in step.action.params[name] if v != step.values[name]]
        rng.shuffle(others)
        for v in others[:3]:
            values = dict(step.values)
            values[name] = v
            cmd = fill(step.action.template, values)
            if step.action.accepts(cmd):
                return name, v, cmd
    return None


def _place(i: int, steps: list[Step], script: Script, state: State, rng: random.Random) -> Mistake | None:
    step = steps[i]
    here = the(state.location) if state.location else "where you are"
    if step.kind == "move" and i + 1 < len(steps) and steps[i + 1].kind != "move" and steps[i + 1].values:
        nxt = steps[i + 1]
        what = the(next(iter(nxt.values.values())))
        there = the(next(iter(step.values.values()), ""))
        if nxt.action.accepts(nxt.command):
            return Mistake(
                "place",
                nxt.command,
                rng.choice(
                    (
                        f"Well-formed, but the player is not in {there} yet; place error.",
                        f"Valid command, wrong place: {what} is in {there}, not {here}.",
                    )
                ),
                rng.choice(
                    (
                        f"You can't do that from {here}: {what} is not here.",
                        f"{what[:1].upper() + what[1:]} is not within reach from {here}.",
                        f"You look for {what}, but it isn't in {here}.",
                    )
                ),
                f"I'm in the wrong place for that. I need to {step.command} first.",
            )
    if step.kind in ("take", "read", "use", "put") and step.values:
        alt = _alternative(step, script, rng)
        if alt is not None:
            name, v, cmd = alt
            return Mistake(
                "place",
                cmd,
                rng.choice(
                    (
                        f"The command is valid, but {the(v)} is not here; place error.",
                        f"Well-formed; however there is no {v} at the player's location.",
                    )
                ),
                rng.choice(
                    (
                        f"There is no {v} here.",
                        f"You can't find {the(v)} anywhere around you.",
                        f"{the(v)[:1].upper() + the(v)[1:]} is not in this place.",
                    )
                ),
                f"{the(v)[:1].upper() + the(v)[1:]} isn't here; the task needs '{step.values[name]}'. "
                f"I'll {step.command}.",
            )
    return None


def _logic(i: int, steps: list[Step], script: Script, state: State, rng: random.Random) -> Mistake | None:
    step = steps[i]
    if i + 1 < len(steps) and steps[i + 1].command != step.command and steps[i + 1].kind != "move":
        nxt = steps[i + 1]
        if nxt.action.accepts(nxt.command):
            return Mistake(
                "logic",
                nxt.command,
                rng.choice(
                    (
                        f"Valid and possible here, but too early: '{step.command}' has to come first.",
                        f"Wrong order: the player skipped '{step.command}'; logic error.",
                    )
                ),
                rng.choice(
                    (
                        "Not yet: something else has to be done before that.",
                        "That doesn't work yet; you are missing a step.",
                        "You try, but it is too early for that. Nothing changes.",
                    )
                ),
                f"I got ahead of myself; first I have to {step.command}.",
            )
    if step.kind in ("use", "talk", "record", "put") and step.values:
        alt = _alternative(step, script, rng)
        if alt is not None:
            name, v, cmd = alt
            return Mistake(
                "logic",
                cmd,
                rng.choice(
                    (
                        f"Possible, but '{v}' is the wrong {name} for this task; logic error.",
                        f"The action is valid but does not advance the goal: wrong {name}.",
                    )
                ),
                rng.choice(
                    (
                        f"You {cmd}, but it doesn't help: {v} is not what the task needs.",
                        f"Nothing useful happens; {v} is the wrong choice here.",
                    )
                ),
                f"'{v}' was the wrong {name}; the task needs '{step.values[name]}'. I'll {step.command}.",
            )
    return None
