"""Content of the simulator's answers: task recognition, scripts, trajectories, flaws.

Requests are built from the real prompt files in pipeline/prompts and sent over HTTP;
the checks below re-implement the SPEC rules S1-S7 and T1-T8 with RE2.
"""

from __future__ import annotations

import asyncio
import random
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import re2

from pipeline.prompts import example
from pipeline.rules import Failure, check_script, check_trajectory
from pipeline.script import script_messages
from pipeline.trajectory import Game, continue_messages, fresh_messages
from simulator.content import generate
from simulator.content.flaws import SCRIPT_FLAWS, TRAJECTORY_FLAWS, chosen_flaw
from simulator.content.scriptmodel import parse_script
from simulator.content.trajectories import build
from simulator.server import start
from simulator.settings import SimSettings

PROMPTS = Path(__file__).resolve().parents[2] / "pipeline" / "prompts"
FLAGS = ("parameter_error", "place_error", "logic_error")
PLAYER_KEYS = {"turn", "role", "Thought", "Action"}
DM_KEYS = {"turn", "role", "Thought", "Observation", *FLAGS}
_PH = re.compile(r"\{([^{}]+)\}")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
PERSONAS = [
    "A night-shift nurse in Leeds who worries about medication errors.",
    "A DevOps engineer in Tallinn who is tired of 3 a.m. pager alerts.",
    "A baker in Lyon who supplies three cafés.",
    "A harbour master in Cork who fights for a safer harbour wall.",
    "A court clerk in Ghent who digitises old case files.",
    "A retired chemistry teacher who volunteers at a community garden.",
]
CLEAN = {"latency_median_s": 0.0, "flaws": {"script_rate": 0.0, "trajectory_rate": 0.0}}
FLAWED = {
    "latency_median_s": 0.0,
    "flaws": {"script_rate": 1.0, "trajectory_rate": 1.0, "retry_rate_factor": 1.0},
}


# ------------------------------------------------------------------ prompts


def prompt(name: str, **values: object) -> str:
    """A prompt file filled like the service fills it (string.Template, "$$" is a literal "$")."""
    return string.Template((PROMPTS / name).read_text()).substitute(**values)


def script_request(persona: str, seed: int = 1) -> dict[str, Any]:
    return {
        "model": "sim-gpt-4o",
        "seed": seed,
        "response_format": {"type": "json_object"},
        "messages": script_messages(persona, None),
    }


def trajectory_request(script: dict[str, Any], seed: int = 1, refinement: bool = True) -> dict[str, Any]:
    return {
        "model": "sim-gpt-4o",
        "seed": seed,
        "response_format": {"type": "json_object"},
        "messages": fresh_messages(Game(script, refinement), None),
    }


def continuation_request(
    script: dict[str, Any], prefix: list[dict[str, Any]], seed: int = 1
) -> dict[str, Any]:
    last = prefix[-1]["turn"]
    failure = Failure("T5", f"turn {last + 1}: the DM flagged a valid action", last + 1)
    return {
        "model": "sim-gpt-4o",
        "seed": seed,
        "response_format": {"type": "json_object"},
        "messages": continue_messages(Game(script, True), prefix, [failure]),
    }


def persona_request(persona: str, count: int) -> dict[str, Any]:
    return {
        "model": "sim-gpt-4o",
        "messages": [
            {"role": "system", "content": prompt("persona_system.md")},
            {"role": "user", "content": prompt("persona_user.md", persona=persona, count=count)},
        ],
    }


# ------------------------------------------------------------------ checks (SPEC §3, §4)


def strip_fence(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t[t.find("\n") + 1 :]
        t = t.rstrip().removesuffix("```")
    return t


def script_failures(text: str) -> set[str]:
    """The script rules (S1-S7) the text fails."""
    try:
        s = orjson.loads(strip_fence(text))
    except orjson.JSONDecodeError:
        return {"S1"}
    if not isinstance(s, dict):
        return {"S1"}
    fails = set()
    if len(orjson.dumps(s)) > 32 * 1024:
        fails.add("S7")
    conds = s.get("Completion Conditions")
    if not (
        isinstance(s.get("Environment"), dict)
        and isinstance(s.get("Goal"), str)
        and s["Goal"].strip()
        and isinstance(conds, list)
        and conds
        and all(isinstance(c, str) for c in conds)
        and isinstance(s.get("Available Actions"), dict)
    ):
        return fails | {"S2"}
    actions = s["Available Actions"]
    if not 3 <= len(actions) <= 30:
        fails.add("S3")
    for template, spec in actions.items():
        names = _PH.findall(template)
        params = spec.get("parameters")
        if (
            not isinstance(params, dict)
            or sorted(names) != sorted(params)
            or any(
                not isinstance(v, list) or not v or len(v) > 50 or not all(isinstance(x, str) for x in v)
                for v in params.values()
            )
        ):
            fails.add("S4")
            continue
        try:
            pattern = re2.compile(spec["verification code"], _RE2_OPTIONS)
        except (re2.error, KeyError):
            fails.add("S5")
            continue
        if pattern.groups != len(names):
            fails.add("S5")
            continue
        for name in names:
            for value in params[name]:
                values = {n: params[n][0] for n in names}
                values[name] = value
                m = pattern.fullmatch(_PH.sub(lambda m, v=values: v[m.group(1)], template))
                if m is None or list(m.groups()) != [values[n] for n in names]:
                    fails.add("S6")
    return fails


class Validator:
    """T4: an action is valid when some pattern fully matches it with allowed values."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.actions = [
            (re2.compile(spec["verification code"], _RE2_OPTIONS), _PH.findall(t), spec["parameters"])
            for t, spec in script["Available Actions"].items()
        ]

    def valid(self, command: str) -> bool:
        for pattern, names, params in self.actions:
            m = pattern.fullmatch(command)
            if m and all(v in params[n] for n, v in zip(names, m.groups(), strict=True)):
                return True
        return False


def parse_turns(text: str) -> list[Any] | None:
    try:
        obj = orjson.loads(strip_fence(text))
    except orjson.JSONDecodeError:
        return None
    turns = obj.get("trajectory") if isinstance(obj, dict) else obj
    return turns if isinstance(turns, list) else None


def error_refine_turns(turns: list[dict[str, Any]]) -> int:
    count = pending = 0
    for t in turns:
        if t["role"] == "DM":
            if any(t[f] for f in FLAGS):
                pending += 1
            else:
                count, pending = count + pending, 0
    return count


def trajectory_failures(text: str, script: dict[str, Any], prefix: list[dict[str, Any]] = ()) -> set[str]:
    """The trajectory rules (T1-T8) the text (appended to the prefix) fails."""
    new = parse_turns(text)
    if new is None:
        return {"T1"}
    turns = [*prefix, *new]
    for t in turns:
        keys = PLAYER_KEYS if isinstance(t, dict) and t.get("role") == "Player" else DM_KEYS
        if (
            not isinstance(t, dict)
            or t.get("role") not in ("Player", "DM")
            or set(t) != keys
            or type(t["turn"]) is not int
            or not all(isinstance(t[k], str) for k in ("Thought", "Action", "Observation") if k in t)
            or (t["role"] == "DM" and not all(type(t[f]) is bool for f in FLAGS))
        ):
            return {"T2"}
    for i, t in enumerate(turns):
        if t["turn"] != i + 1 or t["role"] != ("Player" if i % 2 == 0 else "DM"):
            return {"T3"}
    if not turns or turns[-1]["role"] != "DM":
        return {"T3"}
    fails = set()
    validator = Validator(script)
    for player, dm in zip(turns[::2], turns[1::2], strict=True):
        valid = validator.valid(player["Action"])
        if dm["parameter_error"] == valid:
            fails.add("T5" if valid else "T4")
            break
    if error_refine_turns(turns) < 2:
        fails.add("T6")
    if not validator.valid(turns[-2]["Action"]) or any(turns[-1][f] for f in FLAGS):
        fails.add("T7")
    if len(turns) > 60 or any(
        isinstance(v, str) and len(v.encode()) > 4096 for t in turns for v in t.values()
    ):
        fails.add("T8")
    return fails


# ------------------------------------------------------------------ HTTP helper


def ask_all(settings: dict[str, Any], bodies: list[dict[str, Any]]) -> list[str]:
    """Send the bodies to a fresh simulator; the answers' content, in order."""

    async def main() -> list[str]:
        runner, port = await start(SimSettings.from_dict(settings))
        try:
            async with aiohttp.ClientSession() as s:

                async def one(body: dict[str, Any]) -> str:
                    async with s.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
                        assert r.status == 200
                        return (await r.json())["choices"][0]["message"]["content"]

                return list(await asyncio.gather(*(one(b) for b in bodies)))
        finally:
            await runner.cleanup()

    return asyncio.run(main())


# ------------------------------------------------------------------ tests


def test_task_recognition_with_the_real_prompts() -> None:
    settings = SimSettings.from_dict(CLEAN)
    script_text = ask_all(CLEAN, [script_request(PERSONAS[0])])[0]
    script = orjson.loads(script_text)
    turns = orjson.loads(ask_all(CLEAN, [trajectory_request(script)])[0])["trajectory"]
    bodies = {
        "script": script_request(PERSONAS[0]),
        "trajectory": trajectory_request(script),
        "continuation": continuation_request(script, turns[:4]),
        "persona_expansion": persona_request(PERSONAS[1], 7),
        "generic": {"model": "sim-gpt-4o", "messages": [{"role": "user", "content": "What is 2 + 2?"}]},
    }
    answers = dict(zip(bodies, ask_all(CLEAN, list(bodies.values())), strict=True))
    for kind, body in bodies.items():
        assert generate(body, settings).task == kind
    assert set(orjson.loads(answers["script"])) == {
        "Environment",
        "Goal",
        "Completion Conditions",
        "Available Actions",
    }
    assert parse_turns(answers["trajectory"])[0]["turn"] == 1
    assert parse_turns(answers["continuation"])[0]["turn"] == 5
    personas = orjson.loads(strip_fence(answers["persona_expansion"]))["personas"]
    assert len(personas) == 7 and len(set(personas)) == 7
    for p in personas:
        assert 1 <= p.count(". ") + 1 <= 3 and len(p) < 400
    assert answers["generic"] and "trajectory" not in answers["generic"]


def test_generated_scripts_and_trajectories_are_correct() -> None:
    script_texts = ask_all(CLEAN, [script_request(p, seed=i) for i, p in enumerate(PERSONAS * 3)])
    scripts = []
    for text in script_texts:
        assert script_failures(text) == set(), text[:300]
        s = orjson.loads(text)
        assert 4 <= len(s["Available Actions"]) <= 12 and 2 <= len(s["Completion Conditions"]) <= 5
        for spec in s["Available Actions"].values():
            assert all(2 <= len(v) <= 15 for v in spec["parameters"].values())
        scripts.append(s)
    assert len({orjson.dumps(s) for s in scripts}) == len(scripts)
    answers = ask_all(CLEAN, [trajectory_request(s, seed=i) for i, s in enumerate(scripts)])
    for script, text in zip(scripts, answers, strict=True):
        assert trajectory_failures(text, script) == set(), text[:500]
        turns = parse_turns(text)
        validator = Validator(script)
        assert [t["role"] for t in turns] == ["Player", "DM"] * (len(turns) // 2)
        assert [t["turn"] for t in turns] == list(range(1, len(turns) + 1))
        assert error_refine_turns(turns) >= 2 and not any(turns[-1][f] for f in FLAGS)
        for player, dm in zip(turns[::2], turns[1::2], strict=True):
            assert dm["parameter_error"] == (not validator.valid(player["Action"]))
        assert 3 <= len(turns) // 2 - error_refine_turns(turns) <= 8 + 4


def test_continuation_keeps_prefix_and_completes() -> None:
    scripts = [orjson.loads(t) for t in ask_all(CLEAN, [script_request(p, seed=9) for p in PERSONAS])]
    full = [parse_turns(t) for t in ask_all(CLEAN, [trajectory_request(s, seed=9) for s in scripts])]
    cases = [(s, turns[: 2 * (i % 3 + 1)]) for i, (s, turns) in enumerate(zip(scripts, full, strict=True))]
    answers = ask_all(CLEAN, [continuation_request(s, prefix, seed=9) for s, prefix in cases])
    for (script, prefix), text in zip(cases, answers, strict=True):
        assert trajectory_failures(text, script, prefix) == set(), text[:400]
        new = parse_turns(text)
        assert new[0]["turn"] == prefix[-1]["turn"] + 1 and new[0]["role"] == "Player"
        done = {
            p["Action"]
            for p, d in zip(prefix[::2], prefix[1::2], strict=True)
            if not any(d[f] for f in FLAGS)
        }
        redone = [t["Action"] for t in new if t["role"] == "Player" and t["Action"] in done]
        assert len(redone) <= 1  # what was achieved stays achieved (at most a confirming action)


def test_trajectory_for_a_hand_written_script() -> None:
    script = {
        "Environment": {
            "locations": {"home": "Your home directory.", "etc": "System configuration."},
            "documents": {"motd": "Welcome! Remember to restart nginx after editing its config."},
            "player information": "You are the administrator, starting in /.",
        },
        "Goal": "Read the motd in home and restart nginx.",
        "Completion Conditions": ["The motd has been read.", "nginx has been restarted."],
        "Available Actions": {
            "cd {path}": {
                "description": "change directory",
                "verification code": "^\\s*cd\\s+(\\S+)\\s*$",
                "parameters": {"path": ["home", "home/user", "etc"]},
            },
            "cat {file}": {
                "description": "show a file",
                "verification code": "^cat ([a-z.]+)$",
                "parameters": {"file": ["motd", "passwd"]},
            },
            "service {name} restart": {
                "description": "restart a service",
                "verification code": "^\\s*service\\s+(\\w+)\\s+restart\\s*$",
                "parameters": {"name": ["nginx", "cron"]},
            },
            "ls": {"description": "list files", "verification code": "^\\s*ls\\s*$", "parameters": {}},
        },
    }
    text = ask_all(CLEAN, [trajectory_request(script, seed=s) for s in range(5)])
    for t in text:
        assert trajectory_failures(t, script) == set(), t[:400]
        actions = [x["Action"] for x in parse_turns(t) if x["role"] == "Player"]
        assert actions[-1] == "service nginx restart" and "cat motd" in actions


def test_every_flaw_kind_appears_and_breaks_its_rule() -> None:
    settings = SimSettings.from_dict(FLAWED)
    clean_scripts = [orjson.loads(t) for t in ask_all(CLEAN, [script_request(p, seed=3) for p in PERSONAS])]
    clean_turns = [
        parse_turns(t) for t in ask_all(CLEAN, [trajectory_request(s, seed=3) for s in clean_scripts])
    ]
    script_bodies = [script_request(PERSONAS[i % len(PERSONAS)], seed=i) for i in range(42)]
    traj_bodies = [trajectory_request(clean_scripts[i % len(clean_scripts)], seed=i) for i in range(48)]
    cont_cases = [(clean_scripts[i % 6], clean_turns[i % 6][: 2 * (i % 3 + 2)]) for i in range(24)]
    cont_bodies = [continuation_request(s, prefix, seed=i) for i, (s, prefix) in enumerate(cont_cases)]
    answers = ask_all(FLAWED, script_bodies + traj_bodies + cont_bodies)
    seen: Counter[str] = Counter()
    for body, text in zip(script_bodies, answers, strict=False):
        flaw = chosen_flaw(body, settings)
        assert flaw in SCRIPT_FLAWS and flaw in script_failures(text), (flaw, text[:300])
        seen[flaw] += 1
    traj_answers = answers[len(script_bodies) :]
    for i, (body, text) in enumerate(zip(traj_bodies, traj_answers, strict=False)):
        flaw = chosen_flaw(body, settings)
        script = clean_scripts[i % len(clean_scripts)]
        assert flaw in TRAJECTORY_FLAWS and flaw in trajectory_failures(text, script), (flaw, text[:300])
        seen[flaw] += 1
    for body, (script, prefix), text in zip(
        cont_bodies, cont_cases, answers[-len(cont_bodies) :], strict=True
    ):
        flaw = chosen_flaw(body, settings)
        assert flaw in trajectory_failures(text, script, prefix), (flaw, text[:300])
    assert set(seen) == set(SCRIPT_FLAWS) | set(TRAJECTORY_FLAWS), seen


def test_flawed_trajectories_leave_a_usable_prefix_most_of_the_time() -> None:
    settings = SimSettings.from_dict(FLAWED)
    scripts = [
        orjson.loads(generate(script_request(p, 5), SimSettings.from_dict(CLEAN)).content) for p in PERSONAS
    ]
    late = early = 0
    for i in range(120):
        g = generate(trajectory_request(scripts[i % len(scripts)], seed=100 + i), settings)
        if g.flaw != "T2":
            continue
        turns = parse_turns(g.content)
        bad = next(
            i + 1
            for i, t in enumerate(turns)
            if set(t) not in (PLAYER_KEYS, DM_KEYS)
            or type(t["turn"]) is not int
            or any(isinstance(t.get(f), str) for f in FLAGS)
        )
        late += bad >= 5
        early += bad <= 2
    assert late > early > 0


def test_flaw_rates_and_retry_factor() -> None:
    body = script_request(PERSONAS[2])
    retry = {
        **body,
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": "{}"},
            {"role": "user", "content": prompt("script_feedback.md", problems="- S2: x")},
        ],
    }
    assert generate(retry, SimSettings.from_dict(CLEAN)).task == "script"
    no_retry_flaws = SimSettings.from_dict({"flaws": {"script_rate": 1.0, "retry_rate_factor": 0.0}})
    assert chosen_flaw(body, no_retry_flaws) is not None
    assert all(chosen_flaw({**retry, "seed": i}, no_retry_flaws) is None for i in range(20))
    default = SimSettings.from_dict({})
    rate = (
        sum(chosen_flaw(script_request(PERSONAS[0], seed=i), default) is not None for i in range(200)) / 200
    )
    assert 0.1 <= rate <= 0.3


def test_generation_is_deterministic() -> None:
    settings = SimSettings.from_dict({})
    body = script_request(PERSONAS[1], seed=42)
    assert generate(body, settings).content == generate(body, settings).content
    other = SimSettings.from_dict({"seed": 1})
    assert generate(body, settings).content != generate(body, other).content
    script = orjson.loads(generate(body, SimSettings.from_dict(CLEAN)).content)
    parsed = parse_script(orjson.dumps(script).decode())
    assert build(parsed, random.Random(7)) == build(parsed, random.Random(7))
    trajectory = trajectory_request(script, seed=3)
    assert generate(trajectory, settings).content == generate(trajectory, settings).content


def test_persona_expansion_is_diverse() -> None:
    settings = SimSettings.from_dict({})
    seeds = PERSONAS * 2
    pool: list[str] = []
    frontier = seeds
    for generation in range(3):
        nxt = []
        for i, p in enumerate(frontier):
            body = persona_request(p, 5)
            body["seed"] = generation * 1000 + i
            nxt += orjson.loads(strip_fence(generate(body, settings).content))["personas"]
        pool += nxt
        frontier = nxt
    assert len(pool) == 12 * 5 + 60 * 5 + 300 * 5
    assert len(set(pool)) >= 0.99 * len(pool)


def test_no_mistakes_mode_answers_without_mistakes_and_its_t6_flaw_adds_some() -> None:
    """The "w/o refinement data" prompt: correct answers have no flagged turn (inverted T6
    passes); the T6 flaw of this mode is a mistake, which the inverted T6 refuses."""
    script = parse_script(example("script"))
    actions = check_script(example("script")).actions
    clean, flawed = SimSettings.from_dict(CLEAN), SimSettings.from_dict(FLAWED)
    kinds: Counter[str] = Counter()
    for seed in range(60):
        request = trajectory_request(orjson.loads(example("script")), seed, refinement=False)
        good = generate(request, clean)
        assert check_trajectory(good.content, actions, refinement=False).ok
        bad = generate(request, flawed)
        verdict = check_trajectory(bad.content, actions, refinement=False)
        assert not verdict.ok and bad.flaw in {f.rule for f in verdict.failures}
        kinds[bad.flaw] += 1
    assert "T6" in kinds and "T7" not in kinds and script is not None
