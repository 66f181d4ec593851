"""Deliberately flawed outputs, so every check rule and both recovery paths get exercised.

A script answer is flawed with probability ``flaws.script_rate``, a trajectory or
continuation answer with ``flaws.trajectory_rate``; both are multiplied by
``flaws.retry_rate_factor`` when the conversation is a retry (it holds feedback, an
earlier assistant answer, or a verified prefix). The kind is uniform among:

Script flaws (SPEC §3)
- S1: invalid JSON: prose without any JSON, or the JSON object missing its closing brace.
- S2: a missing top-level key, an empty Goal, or Completion Conditions that is not a list.
- S3: fewer than 3 actions (1-2), or more than 30 (31-34).
- S4: a template's placeholders differ from its parameter keys, a parameter's value list is empty,
  or (as real models do) every value list is a type spec, ``["string", 1]``.
- S5: a pattern RE2 rejects (backreference ``\\1`` or lookahead ``(?=``), a wrong number of capture
  groups, or (as real models do) the key written ``verificationCode`` on every action.
- S6: a pattern that does not match its own filled template (another verb), or whose group
  swallows extra text (the verb in front of the value).
- S7: a script over 32 KiB (a huge document in the Environment: a long run of blanks, which
  costs few tokens, so it is not cut by a 4096-token max_tokens).

Trajectory flaws (SPEC §4); for T1-T5 the fault sits at a turn k >= 5 (continuations:
k >= N + 2) 80% of the time, else at the very start of the answer:
- T1: broken JSON: cut inside turn k (turns before it complete), a missing comma before
  turn k, or trailing prose after the JSON.
- T2: turn k has a missing key, an extra key, a flag as the string "false"/"true", or
  the turn number as a string.
- T3: numbering skips or repeats at turn k, two turns of the same role in a row at k, or
  the answer ends on a Player turn.
- T4: the Player action at turn k is invalid but the DM does not flag it (sometimes two actions
  in one, "A and B", as real models write).
- T5: the DM flags a valid action at turn k with parameter_error true (the Player repeats it).
- T6: only 0-1 mistakes in the whole interaction (prefix included).
- T7: ends in failure: the last DM turn carries a flag, or the last action is invalid.
- T8: over 60 turns (detours), or a text field over 4 KiB.

`chosen_flaw(body, settings)` returns the kind an answer to a request body gets
(it runs the same deterministic generation; the HTTP response never says).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson

from pipeline.rules import SCRIPT_RULES, TRAJECTORY_RULES
from simulator.content import mistakes as mk
from simulator.content.planner import Step, kind_of
from simulator.content.scriptmodel import Script
from simulator.content.trajectories import FLAGS, dm_turn, player_turn
from simulator.settings import FlawSettings, SimSettings

SCRIPT_FLAWS = SCRIPT_RULES  # one flaw for each rule (pipeline/rules.py)
TRAJECTORY_FLAWS = TRAJECTORY_RULES
MAX_SCRIPT_BYTES = 32 * 1024


def pick(
    rng: random.Random, rate: float, settings: FlawSettings, is_retry: bool, kinds: tuple[str, ...]
) -> str | None:
    """A flaw kind with probability rate (times the retry factor), else None."""
    p = rate * (settings.retry_rate_factor if is_retry else 1.0)
    roll = rng.random()
    kind = rng.choice(kinds)
    return kind if roll < p else None


def chosen_flaw(body: dict[str, Any], settings: SimSettings) -> str | None:
    """The flaw kind the simulator puts into its answer to this request body (None: correct)."""
    from simulator.content import generate

    return generate(body, settings).flaw


# ---------------------------------------------------------------- scripts


def flaw_script(kind: str, script: dict[str, Any], rng: random.Random) -> str:
    """The script as JSON text with one flaw of the given kind."""
    s = copy.deepcopy(script)
    acts: dict[str, Any] = s["Available Actions"]
    if kind == "S1":
        if rng.random() < 0.5:
            return rng.choice(
                (
                    "Here is a script for this persona. The player starts in the office and must find "
                    "the missing file, then report it. Available actions: go, take, read, report. "
                    "Let me know if you want the "
                    "JSON version!",
                    "Sure! I designed a small world: the player has to collect three items and deliver them. "
                    "The actions are 'go to {place}', 'take {item}' and 'deliver {item}'.",
                )
            )
        return _dumps(s, rng).rstrip()[:-1]
    if kind == "S2":
        variant = rng.randrange(3)
        if variant == 0:
            del s[rng.choice(("Environment", "Goal", "Completion Conditions", "Available Actions"))]
        elif variant == 1:
            s["Goal"] = ""
        else:
            s["Completion Conditions"] = " ".join(s["Completion Conditions"])
        return _dumps(s, rng)
    if kind == "S3":
        if rng.random() < 0.5:
            keep = list(acts)[: rng.randint(1, 2)]
            s["Available Actions"] = {k: acts[k] for k in keep}
        else:
            _add_many_actions(acts, rng.randint(31, 34))
        return _dumps(s, rng)
    with_ph = [k for k, v in acts.items() if v["parameters"]]
    key = rng.choice(with_ph) if with_ph else next(iter(acts))
    spec = acts[key]
    if kind == "S4":
        params = spec["parameters"]
        roll = rng.random()
        if params and roll < 0.35:
            name = rng.choice(list(params))
            params[name + "s" if not name.endswith("s") else name + "_name"] = params.pop(name)
        elif params and roll < 0.65:  # a real model's habit: a type spec instead of the values
            for other in acts.values():
                for name in other["parameters"]:
                    other["parameters"][name] = ["string", 1]
        elif params:
            params[rng.choice(list(params))] = []
        else:
            params["value"] = ["a", "b"]
        return _dumps(s, rng)
    if kind == "S5":
        code = spec["verification code"]
        variant = rng.randrange(4)
        if variant == 3:  # a real model's habit: the key renamed, on every action
            for other in acts.values():
                other["verificationCode"] = other.pop("verification code")
            return _dumps(s, rng)
        if variant == 0 and "(" in code:
            spec["verification code"] = (
                code.replace(r"\s*$", r"(?:\s+\1)?\s*$", 1) if r"\s*$" in code else code[:-1] + r"(?:\s+\1)?$"
            )
        elif variant == 1:
            spec["verification code"] = code.replace("^", "^(?=\\S)", 1)
        else:
            verb = key.split()[0]
            spec["verification code"] = code.replace(_escape_first(verb), "(" + _escape_first(verb) + ")", 1)
        return _dumps(s, rng)
    if kind == "S6":
        from simulator.content.patterns import PatternStyle, build_pattern

        style = PatternStyle(True, False, r"(\S+)", False)
        tokens = key.split()
        if len(tokens) > 1 and tokens[1].startswith("{") and rng.random() < 0.5:
            spec["verification code"] = build_pattern(key, spec["parameters"], style, rng, capture_verb=True)
        else:
            other = rng.choice([v for v in ("get", "use", "do", "make", "try", "set") if v != tokens[0]])
            spec["verification code"] = build_pattern(key, spec["parameters"], style, rng, verb=other)
        return _dumps(s, rng)
    # S7: a huge document (a degenerate run of blanks, as models sometimes write, plus
    # repeated entries); blank runs are cheap in tokens, so it fits a 4096-token answer
    docs = s["Environment"].setdefault("documents", {})
    if not isinstance(docs, dict):
        docs = s["Environment"]["documents"] = {}
    line = "Entry: checked, logged and signed off according to the usual procedure. "
    target = MAX_SCRIPT_BYTES + rng.randint(500, 3000)
    docs["full history log"] = "Scanned pages:" + " " * target + line * rng.randint(3, 12)
    return _dumps(s, rng)


def _escape_first(verb: str) -> str:
    from simulator.content.patterns import escape

    return escape(verb)


def _add_many_actions(acts: dict[str, Any], total: int) -> None:
    verbs = (
        "clean",
        "tidy",
        "dust",
        "sweep",
        "polish",
        "label",
        "count",
        "sort",
        "stack",
        "wipe",
        "lock",
        "unlock",
        "close",
        "prop open",
        "switch on",
        "switch off",
    )
    nouns = (
        "the floor",
        "the desk",
        "the door",
        "the window",
        "the shelves",
        "the bench",
        "the lights",
        "the radio",
    )
    i = 0
    while len(acts) < total:
        v, n = verbs[i % len(verbs)], nouns[(i // len(verbs)) % len(nouns)]
        i += 1
        template = f"{v} {n}"
        if template in acts:
            continue
        acts[template] = {
            "description": f"{v.capitalize()} {n}.",
            "verification code": r"^\s*" + r"\s+".join(template.split()) + r"\s*$",
            "parameters": {},
        }


def _dumps(obj: Any, rng: random.Random) -> str:
    opt = orjson.OPT_INDENT_2 if rng.random() < 0.5 else 0
    return orjson.dumps(obj, option=opt).decode()


# ---------------------------------------------------------------- trajectories


def build_options(
    kind: str | None, rng: random.Random, prefix_errors: int, start_turn: int, clean: bool = False
) -> dict[str, Any]:
    """Arguments for `trajectories.build` that produce the flaw at generation time. In the
    no-mistakes mode (`clean`) a trajectory has no mistakes, and the T6 flaw is one or two."""
    if clean:
        return {"n_mistakes": rng.randint(1, 2) if kind == "T6" else 0, "protect_last": kind == "T6"}
    if kind == "T6":
        return {"n_mistakes": rng.randint(0, max(0, 1 - prefix_errors))}
    if kind == "T8" and rng.random() < 0.5:
        return {"min_turns": rng.randint(62, 70)}
    if kind == "T7":  # errors before the last step stay error-refine turns, so only T7 fails
        return {"protect_last": True}
    return {}


def feasible(kinds: tuple[str, ...], prefix_errors: int, clean: bool = False) -> tuple[str, ...]:
    """Trajectory flaw kinds possible after a prefix with this many error turns."""
    if clean:  # T7 would need a mistake at the end: the inverted T6 catches it first
        return tuple(k for k in kinds if k != "T7")
    return tuple(k for k in kinds if not (k == "T6" and prefix_errors >= 2))


def _late_index(
    turns: list[dict[str, Any]], rng: random.Random, start_turn: int, role: str | None, ok: Any = None
) -> int | None:
    idx = [i for i, t in enumerate(turns) if (role is None or t["role"] == role) and (ok is None or ok(i))]
    if not idx:
        return None
    threshold = max(5, start_turn + 2)
    late = [i for i in idx if turns[i]["turn"] >= threshold]
    early = [i for i in idx if turns[i]["turn"] <= start_turn + 1]
    if late and (rng.random() < 0.8 or not early):
        return rng.choice(late)
    return early[0] if early else rng.choice(idx)


def _renumber(turns: list[dict[str, Any]], start_turn: int) -> None:
    for i, t in enumerate(turns):
        t["turn"] = start_turn + i


def flaw_trajectory(
    kind: str,
    turns: list[dict[str, Any]],
    script: Script,
    rng: random.Random,
    start_turn: int,
) -> list[dict[str, Any]] | str:
    """The turns (or raw text for T1) with one flaw of the given kind."""
    turns = [dict(t) for t in turns]
    if kind == "T1":
        return _broken_json(turns, rng, start_turn)
    if kind == "T2":
        i = _late_index(turns, rng, start_turn, None)
        if i is None:
            return turns
        t = turns[i]
        variant = rng.randrange(4)
        if variant == 0:
            del t[rng.choice(("Thought", "Action") if t["role"] == "Player" else ("Observation", *FLAGS))]
        elif variant == 1:
            t[rng.choice(("Inventory", "Location", "Reward", "Note"))] = rng.choice(
                (["notebook"], "here", 0, "ok")
            )
        elif variant == 2 and t["role"] == "DM":
            f = rng.choice(FLAGS)
            t[f] = "true" if t[f] else "false"
        else:
            t["turn"] = str(t["turn"])
        return turns
    if kind == "T3":
        variant = rng.randrange(3)
        if variant == 0:
            i = _late_index(turns, rng, start_turn, None) or 0
            if i > 0 and rng.random() < 0.5:
                turns[i]["turn"] = turns[i - 1]["turn"]  # a repeated number
            else:
                for t in turns[i:]:  # a skipped number
                    t["turn"] += 1
            return turns
        if variant == 1:
            i = _late_index(turns, rng, start_turn, "DM", ok=lambda j: j < len(turns) - 1)
            if i is not None:
                del turns[i]
                _renumber(turns, start_turn)
                return turns
        turns.append(
            player_turn(
                turns[-1]["turn"] + 1,
                "Let me double-check that everything is in order.",
                turns[-2]["Action"] if len(turns) >= 2 else "look around",
            )
        )
        return turns
    if kind == "T4":
        i = _clean_player(turns, rng, start_turn)
        if i is None:  # a short continuation: the last action then (T7 fails as well)
            i = _clean_player(turns, rng, start_turn, allow_last=True)
        step = _step_for(turns[i]["Action"], script) if i is not None else None
        bad = mk.invalid_variant(step, script, rng) if step else None
        if i is not None and i + 2 < len(turns) and rng.random() < 0.3:  # two actions in one
            both = f"{turns[i]['Action']} and {turns[i + 2]['Action']}"
            bad = bad if script.is_valid(both) else both
        if i is not None and bad:
            turns[i]["Action"] = bad
        else:
            turns[i if i is not None else -2]["Action"] += " now"  # pragma: no cover - no action to spoil
        return turns
    if kind == "T5":
        i = _clean_player(turns, rng, start_turn, allow_last=True)
        if i is None:
            return turns
        dm = turns[i + 1]
        wrong = dict(dm)
        wrong.update(
            {
                "Thought": "The command does not look right to me.",
                "Observation": rng.choice(
                    (
                        "That command is not valid here.",
                        "Invalid command.",
                        "I don't understand that command.",
                    )
                ),
                "parameter_error": True,
                "place_error": False,
                "logic_error": False,
            }
        )
        retry = player_turn(
            0,
            "The DM rejected it, but the command looks right to me. I'll try once more.",
            turns[i]["Action"],
        )
        turns[i + 1 : i + 2] = [wrong, retry, dm]
        _renumber(turns, start_turn)
        return turns
    if kind == "T7":
        last_p = len(turns) - 2
        if rng.random() < 0.5:
            turns[-1].update(
                {
                    "Observation": rng.choice(
                        (
                            "You run out of time before the task is finished.",
                            "Something goes wrong at the last moment; the task is not complete.",
                        )
                    ),
                    "logic_error": True,
                    "Thought": "The task cannot be completed like this.",
                }
            )
        else:
            step = _step_for(turns[last_p]["Action"], script)
            bad = mk.invalid_variant(step, script, rng) if step else None
            turns[last_p]["Action"] = bad or turns[last_p]["Action"] + " now please"
            turns[-1] = dm_turn(
                turns[-1]["turn"],
                "The command matches no action.",
                "That command is not recognised.",
                "parameter_error",
            )
        return turns
    if kind == "T8":
        if len(turns) <= 60 + 1 - start_turn:  # not long enough: make a text field too long
            i = _late_index(turns, rng, start_turn, "DM") or len(turns) - 1
            filler = " The room is exactly as described before, every shelf in its usual place."
            turns[i]["Observation"] += filler * (4200 // len(filler) + rng.randint(1, 20))
        return turns
    return turns


def _clean_player(
    turns: list[dict[str, Any]], rng: random.Random, start_turn: int, allow_last: bool = False
) -> int | None:
    end = len(turns) if allow_last else len(turns) - 1

    def ok(i: int) -> bool:
        return i + 1 < end and turns[i + 1]["role"] == "DM" and not any(turns[i + 1].get(f) for f in FLAGS)

    return _late_index(turns, rng, start_turn, "Player", ok=ok)


def _step_for(command: str, script: Script) -> Step | None:
    """The step (action and values) a valid command performs."""
    for action in script.actions:
        if action.accepts(command):
            values = action.match_values(command) or []
            return Step(action, dict(zip(action.names, values, strict=True)), kind_of(action.template))
    return None


def _broken_json(turns: list[dict[str, Any]], rng: random.Random, start_turn: int) -> str:
    parts = [orjson.dumps(t).decode() for t in turns]
    variant = rng.randrange(3)
    if variant == 2:
        return orjson.dumps({"trajectory": turns}).decode() + rng.choice(
            ("\n\nThe player has completed the goal.", "\n```", "]}", "\nLet me know if you need more turns.")
        )
    i = _late_index(turns, rng, start_turn, None) or 0
    head = '{"trajectory": [' + ", ".join(parts[:i])
    if variant == 1 and i > 0:
        return head + "\n" + ", ".join(parts[i:]) + "]}"
    cut = parts[i][: rng.randint(5, max(6, len(parts[i]) - 5))]
    return head + (", " if i else "") + cut
