"""Generate a correct script (SPEC §3) for a persona.

The domain comes from keywords in the persona (falling back to the RNG); a plan of
3-8 steps (move, read, take, use, put, talk, record) is drawn first, then the
actions that can carry it out, 1+ distractor actions, an Environment, a Goal and
2-5 Completion Conditions that mention the plan's values in order. Every pattern
is checked with RE2 against its own filled template before the script is returned.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from simulator.content.patterns import PatternStyle, build_pattern
from simulator.content.scriptmodel import compile_pattern, fill, full_groups
from simulator.content.worlds import DISTRACTOR_FORMS, FORMS, ROLE_NAMES, WORLDS, ZERO_FORMS, Form, World

_WORD = re.compile(r"[A-Za-zÀ-ÿ]+")
_ROLE = re.compile(r"\{(\w+)\}")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "with",
        "who",
        "whose",
        "which",
        "that",
        "this",
        "their",
        "they",
        "them",
        "his",
        "her",
        "its",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "has",
        "have",
        "had",
        "from",
        "by",
        "as",
        "into",
        "about",
        "over",
        "under",
        "after",
        "before",
        "while",
        "also",
        "very",
        "more",
        "most",
        "some",
        "many",
        "much",
        "often",
        "works",
        "working",
        "person",
        "people",
        "someone",
        "years",
        "year",
        "old",
        "new",
        "local",
        "small",
        "large",
    ]
)
KIND_ORDER = ("move", "read", "take", "move", "use", "put", "talk", "record")
KIND_P = (0.6, 0.55, 0.75, 0.35, 0.75, 0.5, 0.35, 0.6)


@dataclass
class PlanStep:
    """One step of the intended solution."""

    kind: str
    template: str
    values: dict[str, str]

    @property
    def command(self) -> str:
        return fill(self.template, self.values)


@dataclass
class GeneratedScript:
    """A generated script, its intended plan and the world it was drawn from."""

    script: dict[str, Any]
    plan: list[PlanStep]
    world: World


_GENERIC_ROLE_WORDS = frozenset(
    [
        "manager",
        "officer",
        "assistant",
        "owner",
        "head",
        "lead",
        "senior",
        "junior",
        "visiting",
        "main",
        "new",
        "chief",
        "member",
        "worker",
        "staff",
    ]
)


def _keyword_index() -> tuple[dict[str, list[tuple[int, int]]], list[tuple[str, int]]]:
    index: dict[str, list[tuple[int, int]]] = {}
    phrases: list[tuple[str, int]] = []
    for wi, world in enumerate(WORLDS):
        weights: dict[str, int] = {}
        for text in (*world.people, *world.specialities):
            for w in _WORD.findall(text.lower()):
                if len(w) >= 4 and w not in _GENERIC_ROLE_WORDS and w not in _STOP:
                    weights.setdefault(w, 1)
        for kw in world.keywords:
            if " " in kw:
                phrases.append((kw, wi))
            else:
                weights[kw] = 2
        for w, weight in weights.items():
            index.setdefault(w, []).append((wi, weight))
    return index, phrases


_INDEX, _PHRASES = _keyword_index()


def choose_world(persona: str, rng: random.Random) -> World:
    """The world whose keywords best match the persona, its role counting double (ties: RNG)."""
    text = persona.lower()
    role_words = set(_WORD.findall(persona_role(persona).lower()))
    scores = [0] * len(WORLDS)
    for w in _WORD.findall(text):
        mult = 2 if w in role_words else 1
        keys = [w] + [w[:k] for k in range(5, len(w))]
        for key in keys:
            for wi, weight in _INDEX.get(key, ()):
                scores[wi] += weight * mult
    for phrase, wi in _PHRASES:
        if phrase in text:
            scores[wi] += 2
    best = max(scores)
    if best == 0:
        return rng.choice(WORLDS)
    return rng.choice([WORLDS[i] for i, sc in enumerate(scores) if sc == best])


def persona_words(persona: str) -> list[str]:
    """Content words of the persona (for weaving into names and documents)."""
    seen: list[str] = []
    for w in _WORD.findall(persona):
        lw = w.lower()
        if 4 <= len(w) <= 14 and lw not in _STOP and lw not in seen:
            seen.append(lw)
    return seen


def persona_role(persona: str) -> str:
    """The persona's role, e.g. "retired chemistry teacher" from "A retired chemistry teacher in Lyon..."."""
    text = " " + persona.strip().rstrip(".") + " "
    low = text.lower()
    for art in (" a ", " an ", " the "):
        if low.startswith(art):
            text, low = text[len(art) - 1 :], low[len(art) - 1 :]
            break
    cut = len(text)
    for sep in (" who ", ", ", " in ", " at ", " from ", " with ", " for ", ". ", " and ", " whose "):
        i = low.find(sep)
        if 0 < i < cut:
            cut = i
    words = text[:cut].split()
    return " ".join(words[:6]) if words else "the player"


def _is(noun: str) -> str:
    return "are" if noun.endswith("s") and not noun.endswith("ss") else "is"


def _fmt(text: str, vals: dict[str, str], article: str) -> str:
    def repl_article(m: re.Match[str]) -> str:
        return article + vals.get(m.group(1), m.group(1))

    text = re.sub(r"the \{(\w+)\}", repl_article, text)
    return _ROLE.sub(lambda m: vals.get(m.group(1), m.group(1)), text)


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _cap(s: str) -> str:
    """Capitalised, unless the text starts with a name like "auth.log" or "/etc"."""
    first = s.split(" ", 1)[0] if s else ""
    if not first or not first.replace("'", "").isalpha():
        return s
    return s[:1].upper() + s[1:]


def _draw_kinds(rng: random.Random) -> list[str]:
    picked = [rng.random() < p for p in KIND_P]
    if picked[3] and not picked[0]:
        picked[0], picked[3] = True, False
    if picked[5] and not picked[2]:
        picked[2] = True  # put needs something taken
    if not picked[2] and not picked[4]:
        picked[4] = True
    for i in (2, 4, 7, 1):
        if sum(picked) >= 3:
            break
        picked[i] = True
    return [k for k, p in zip(KIND_ORDER, picked, strict=True) if p]


def _forms(world: World, kind: str) -> list[Form]:
    own = world.forms.get(kind, [])
    if own and world.replace_forms:
        return own
    return own + FORMS[kind]


def _names(world: World, roles: list[str], rng: random.Random) -> dict[str, str]:
    names: dict[str, str] = {}
    for role in roles:
        options = [n for n in world.role_names.get(role, ROLE_NAMES[role]) if n not in names.values()]
        options = options or [role + "_" + str(len(names))]
        names[role] = rng.choice(options)
    return names


def _values(world: World, role: str, must: list[str], rng: random.Random, avoid: set[str]) -> list[str]:
    pool = [v for v in world.values(role) if v not in must and v not in avoid]
    hi = min(15, len(must) + len(pool))
    n = rng.randint(max(2, len(must)), max(2, hi)) if hi >= 2 else len(must)
    out = list(must) + rng.sample(pool, min(len(pool), max(0, n - len(must))))
    rng.shuffle(out)
    return out


def build_script(persona: str, rng: random.Random) -> GeneratedScript:
    """A correct script for the persona and the plan that solves it."""
    for _ in range(8):
        gen = _build_once(persona, rng)
        if _plan_ok(gen):
            return gen
    return gen  # pragma: no cover - a draw whose plan fails its own patterns 8 times in a row


def _plan_ok(gen: GeneratedScript) -> bool:
    """Every plan step is accepted by its own action (values can collide with template words)."""
    acts = gen.script["Available Actions"]
    for step in gen.plan:
        spec = acts[step.template]
        pattern = compile_pattern(spec["verification code"])
        groups = full_groups(pattern, step.command) if pattern is not None else None
        names = list(spec["parameters"])
        if groups != [step.values[n] for n in names]:
            return False
        if any(step.values[n] not in spec["parameters"][n] for n in names):
            return False
    return True


def _build_once(persona: str, rng: random.Random) -> GeneratedScript:
    world = choose_world(persona, rng)
    pwords = persona_words(persona)
    kinds = _draw_kinds(rng)

    locs = rng.sample(world.locs, min(3, len(world.locs)))
    start, loc1, loc2 = locs[0], locs[1], locs[2 % len(locs)]
    chosen: dict[str, str] = {"loc": loc1}
    used: set[str] = set(locs)
    for role in ("item", "src", "dst", "doc", "tool", "target", "person", "topic", "record", "register"):
        pool = [v for v in world.values(role) if v not in used] or list(world.values(role))
        chosen[role] = rng.choice(pool)
        used.add(chosen[role])
    role_word = _WORD.findall(persona_role(persona))[-1:] or pwords[:1]
    if role_word and rng.random() < 0.5:
        word = role_word[0].lower()
        chosen["doc"] = f"{word}-checklist.md" if world.key == "unix" else f"{word}'s checklist"
    used.add(chosen["doc"])

    # forms per kind (a kind used twice shares its template)
    form_of: dict[str, Form] = {}
    for kind in kinds:
        if kind not in form_of:
            forms = _forms(world, kind)
            form_of[kind] = rng.choice(forms)

    style = PatternStyle.random(rng)
    actions: dict[str, dict[str, Any]] = {}
    plan: list[PlanStep] = []
    move_values = [loc1, loc2] if kinds.count("move") == 2 else [loc1]
    templates: dict[str, tuple[str, dict[str, str]]] = {}
    for kind, form in form_of.items():
        roles = _ROLE.findall(form[0])
        names = _names(world, roles, rng)
        template = _ROLE.sub(lambda m, names=names: "{" + names[m.group(1)] + "}", form[0])
        params: dict[str, list[str]] = {}
        for role in roles:
            must = move_values if role == "loc" else [chosen[role]]
            params[names[role]] = _values(world, role, must, rng, used - set(must))
        templates[kind] = (template, names)
        actions[template] = {"description": form[3], "verification code": "", "parameters": params}

    moves_done = 0
    for kind in kinds:
        template, names = templates[kind]
        vals = dict(chosen)
        if kind == "move":
            vals["loc"] = move_values[min(moves_done, len(move_values) - 1)]
            moves_done += 1
        plan.append(PlanStep(kind, template, {names[r]: vals[r] for r in names}))

    _add_distractors(world, actions, kinds, chosen, rng)
    keys = list(actions)
    if rng.random() < 0.5:
        rng.shuffle(keys)
    actions = {k: actions[k] for k in keys}
    for template, spec in actions.items():
        spec["verification code"] = build_pattern(template, spec["parameters"], style, rng)
        _self_check(template, spec)

    script = {
        "Environment": _environment(world, persona, kinds, chosen, start, loc1, loc2, pwords, rng),
        "Goal": _goal(world, kinds, form_of, chosen, loc2, rng),
        "Completion Conditions": _conditions(world, kinds, form_of, chosen, move_values, rng),
        "Available Actions": actions,
    }
    if rng.random() < 0.3:
        script = {k: script[k] for k in ("Goal", "Environment", "Completion Conditions", "Available Actions")}
    return GeneratedScript(script, plan, world)


def _add_distractors(
    world: World,
    actions: dict[str, dict[str, Any]],
    kinds: list[str],
    chosen: dict[str, str],
    rng: random.Random,
) -> None:
    n_total = rng.randint(max(4, len(actions) + 1), 12)
    pool: list[tuple[str, str]] = [(t, d) for t, d in ZERO_FORMS]
    pool += [(t, d) for t, d in DISTRACTOR_FORMS if not (world.key == "unix" and "{dir}" in t)]
    for kind in ("talk", "read", "record"):
        if kind not in kinds:
            f = rng.choice(_forms(world, kind))
            pool.append((f[0], f[3]))
    rng.shuffle(pool)
    have_verbs = {t.split()[0] for t in actions}
    for form, desc in pool:
        if len(actions) >= n_total:
            break
        verb = form.split()[0]
        if verb in have_verbs:
            continue
        roles = _ROLE.findall(form)
        names = _names(world, roles, rng)
        template = _ROLE.sub(lambda m, names=names: "{" + names[m.group(1)] + "}", form)
        params = {names[r]: _values(world, r, [], rng, set()) for r in roles}
        actions[template] = {"description": desc, "verification code": "", "parameters": params}
        have_verbs.add(verb)


def _self_check(template: str, spec: dict[str, Any]) -> None:
    """Drop allowed values for which the pattern would not give the value back (S6)."""
    pattern = compile_pattern(spec["verification code"])
    params: dict[str, list[str]] = spec["parameters"]
    if pattern is None:  # pragma: no cover - build_pattern only writes RE2 syntax
        raise AssertionError(f"bad pattern for {template!r}")
    first = {k: v[0] for k, v in params.items()}
    names = list(params)
    for name in names:
        kept = []
        for value in params[name]:
            vals = dict(first)
            vals[name] = value
            if full_groups(pattern, fill(template, vals)) == [vals[n] for n in names]:
                kept.append(value)
        params[name] = kept if len(kept) >= 1 else params[name]


def _environment(
    world: World,
    persona: str,
    kinds: list[str],
    c: dict[str, str],
    start: str,
    loc1: str,
    loc2: str,
    pwords: list[str],
    rng: random.Random,
) -> dict[str, Any]:
    a = world.article
    others = [x for x in world.locs if x not in (start, loc1, loc2)]
    extra = rng.sample(others, min(len(others), rng.randint(0, 2)))
    locations: dict[str, str] = {
        start: rng.choice(
            (
                f"Where you start. From here you can reach {a}{loc1}.",
                f"Your starting point; {a}{loc1} is next door.",
            )
        ),
        loc1: rng.choice(
            (
                f"{_cap(a)}{c['src']} here holds {a}{c['item']} among other things.",
                f"Contains {a}{c['src']}; {a}{c['item']} should be there.",
            )
        ),
    }
    if "move" in kinds and kinds.count("move") == 2:
        locations[loc2] = f"{_cap(a)}{c['target']} is here, waiting to be dealt with."
    for x in extra:
        locations[x] = rng.choice(
            ("Not needed for this task.", "Quiet at this time of day.", "Usually locked.")
        )
    items = {
        c["item"]: f"on {a}{c['src']} in {a}{loc1}",
        c["tool"]: "carried by the player" if rng.random() < 0.7 else f"in {a}{start}, within reach",
        c["target"]: rng.choice(("needs attention", "not yet checked", "waiting to be handled")),
    }
    who = persona.strip().rstrip(".")
    if who[:2].lower() == "a " or who[:3].lower() == "an ":
        who = who[0].lower() + who[1:]
    docs = {
        c["doc"]: (
            f"{_cap(a)}{c['item']} {_is(c['item'])} kept on {a}{c['src']}. "
            f"Use {a}{c['tool']} on {a}{c['target']}, then log {a}{c['record']} in {a}{c['register']}. "
            f"Written by {_article(persona_role(persona))}."
        )
    }
    for d in rng.sample([x for x in world.docs if x != c["doc"]], min(2, len(world.docs) - 1)):
        docs[d] = rng.choice(
            (
                f"Routine notes; nothing about {a}{c['item']}.",
                "Last updated two weeks ago.",
                f"Contact {a}{c['person']} with questions about {c['topic']}.",
            )
        )
    env: dict[str, Any] = {
        "locations": locations,
        "items": items,
        "documents": docs,
        "player information": (f"You are {who[:300]}. You start in {a}{start} and carry {a}{c['tool']}."),
    }
    if rng.random() < 0.8:
        env["hidden information"] = (
            f"{_cap(a)}{c['item']} {_is(c['item'])} behind other stock on {a}{c['src']}. "
            f"{_cap(a)}{c['target']} only counts as done after {a}{c['tool']} has been used on it. "
            f"{_cap(a)}{c['person']} is waiting for news about {c['topic']}."
        )
    return env


def _goal(
    world: World, kinds: list[str], form_of: dict[str, Form], c: dict[str, str], loc2: str, rng: random.Random
) -> str:
    key = [k for k in kinds if k not in ("move", "read")] or kinds
    key = key[-3:]
    phrases = [_fmt(form_of[k][2], c, world.article) for k in key]
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return _cap(f"{body} {rng.choice(world.purposes)}.")


def _conditions(
    world: World,
    kinds: list[str],
    form_of: dict[str, Form],
    c: dict[str, str],
    move_values: list[str],
    rng: random.Random,
) -> list[str]:
    statements = []
    moves = 0
    for kind in kinds:
        vals = dict(c)
        if kind == "move":
            vals["loc"] = move_values[min(moves, len(move_values) - 1)]
            moves += 1
        statements.append(_fmt(form_of[kind][1], vals, world.article))
    n_groups = min(len(statements), rng.randint(2, 5))
    # split statements into n_groups consecutive runs
    cuts = sorted(rng.sample(range(1, len(statements)), n_groups - 1))
    groups, prev = [], 0
    for cut in [*cuts, len(statements)]:
        groups.append(statements[prev:cut])
        prev = cut
    return [_cap(" and ".join(g)) + "." for g in groups]
