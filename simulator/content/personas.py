"""Persona expansion (Persona Hub's persona-to-persona): related people of a persona.

Each new persona keeps the input's field (sometimes a neighbouring one) and varies
the relation to the input, the role, seniority, age or years of experience, city,
speciality and concern, so iterating expansion from a few dozen seeds yields many
thousands of distinct personas with few exact repeats.
"""

from __future__ import annotations

import random

from simulator.content.scripts import choose_world, persona_role
from simulator.content.worlds import CITIES, WORLDS_BY_KEY, World

_ADJ = (
    "",
    "",
    "",
    "junior ",
    "senior ",
    "newly qualified ",
    "semi-retired ",
    "freelance ",
    "volunteer ",
    "part-time ",
    "trainee ",
    "veteran ",
    "self-taught ",
    "bilingual ",
)
_RELATIONS = (
    "works alongside {p}",
    "depends on {p} for help with {topic}",
    "learned the trade from {p}",
    "competes with {p} for the same clients",
    "relies on the work of {p}",
    "trains under {p}",
    "supplies {p}",
    "regularly argues with {p} about {topic}",
    "was mentored by {p} years ago",
    "shares an office with {p}",
    "is the main contact of {p} when {topic} comes up",
    "covers the shifts of {p}",
)


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _one(world: World, source_role: str, rng: random.Random) -> str:
    role = rng.choice(world.people)
    adj = (
        rng.choice(_ADJ) if "'" not in role and role not in ("customer", "patient", "parent", "guest") else ""
    )
    city = rng.choice(CITIES)
    where = city
    rel = rng.choice(_RELATIONS).format(p=_a(source_role), topic=rng.choice(world.topics))
    concern = rng.choice(world.concerns)
    spec = rng.choice(world.specialities)
    form = rng.randrange(5)
    years = rng.randint(1, 4) if adj in ("junior ", "trainee ", "newly qualified ") else rng.randint(3, 35)
    if form == 0:
        text = f"A {rng.randint(19, 72)}-year-old {adj}{role} in {where} who {rel} and {concern}."
    elif form == 1:
        text = f"{_a(adj + role).capitalize()} with {years} years of experience in {where}, who {rel}."
        text += f" The {role} {concern}."
    elif form == 2:
        text = f"{_a(adj + role).capitalize()} in {where} who specialises in {spec.lower()} and {rel}."
    elif form == 3:
        text = f"{_a(adj + role).capitalize()} from {where} who {concern} and {rel}."
    else:
        still = "is still " + concern[3:] if concern.startswith("is ") else "still " + concern
        text = (
            f"{_a(adj + role).capitalize()} in {where}, focused on {spec.lower()}, who {rel}; "
            f"after {years} years in the job this {role} {still}."
        )
    return " ".join(text.split())


def expand(persona: str, count: int, rng: random.Random) -> list[str]:
    """`count` distinct related personas of the input persona."""
    world = choose_world(persona, rng)
    source = persona_role(persona)
    out: list[str] = []
    tries = 0
    while len(out) < count and tries < count * 5:
        tries += 1
        w = world if rng.random() < 0.75 else WORLDS_BY_KEY.get(rng.choice(world.neighbours), world)
        p = _one(w, source, rng)
        if p not in out and p.lower() != persona.strip().lower():
            out.append(p)
    return out
