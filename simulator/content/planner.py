"""Find a plan of 3-8 valid actions for any script.

Each action is filled with the allowed values that the Completion Conditions (then
the Goal) mention; candidates are ordered by where the conditions mention them, and
a candidate whose mentions are all covered by a better candidate is dropped (so
"inspect saffron" gives way to "take saffron from top shelf"). Scripts whose text
mentions too little are padded with zero-placeholder and default-valued actions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from simulator.content.scriptmodel import Action, Script, fill

MIN_STEPS, MAX_STEPS = 3, 8


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_KIND_VERBS: dict[str, frozenset[str]] = {
    "move": _words("go walk move head enter cd travel climb return goto visit drive sail"),
    "take": _words("take pick grab collect fetch get scp download retrieve borrow pull obtain"),
    "read": _words("read open consult review cat less tail view study check examine inspect look"),
    "put": _words("put place store deliver leave cp mv give hand drop load insert attach hang"),
    "talk": _words("ask tell brief inform call talk page speak email phone notify greet"),
    "record": _words("log record note file append write submit sign enter register report"),
}


def kind_of(template: str) -> str:
    """A rough action kind from the template's verb."""
    verb = template.split()[0].lower() if template.split() else ""
    for kind, verbs in _KIND_VERBS.items():
        if verb in verbs:
            return kind
    return "use"


@dataclass
class Step:
    """One planned action."""

    action: Action
    values: dict[str, str]
    kind: str

    @property
    def command(self) -> str:
        return fill(self.action.template, self.values)


def find_word(text: str, needle: str) -> int | None:
    """Position of `needle` in `text` at word boundaries (both lower-case), or None."""
    if not needle:
        return None
    start = 0
    n = len(needle)
    while True:
        i = text.find(needle, start)
        if i < 0:
            return None
        before = text[i - 1] if i > 0 else " "
        after = text[i + n] if i + n < len(text) else " "
        if not before.isalnum() and not after.isalnum():
            return i
        start = i + 1


@dataclass
class _Cand:
    action: Action
    values: dict[str, str]
    matched: frozenset[int]
    score: float
    stem: str = ""


def _clause(text: str, p: int) -> str:
    """The clause of `text` around position p (between ". " / " and " separators)."""
    a = max(text.rfind(". ", 0, p), text.rfind(" and ", 0, p))
    ends = [e for e in (text.find(". ", p), text.find(" and ", p)) if e >= 0]
    return text[max(0, a) : min(ends) if ends else len(text)]


def _verb_stem(template: str) -> str:
    verb = template.split()[0].lower() if template.split() else ""
    return verb[: max(3, min(5, len(verb) - 1))] if len(verb) > 3 else verb


def plan(script: Script) -> list[Step]:
    """A plan of valid steps (3-8 when the script has enough actions)."""
    conds = " ".join(script.conditions).lower()
    goal = script.goal.lower()
    text = conds + " | " + goal
    offset = len(conds) + 3  # where the goal starts in text
    pos = _mentions(script, text)

    cands: list[_Cand] = []
    for action in script.actions:
        if not action.names:
            p = pos(action.template)
            if p is not None:
                cands.append(_Cand(action, {}, frozenset({p}), 0.5))
            continue
        best: dict[str, tuple[int, str]] = {}
        mentioned: dict[str, list[tuple[int, str]]] = {}
        for name in action.names:
            hits = [(p, v) for v in action.params[name] if (p := pos(v)) is not None]
            hits.sort(key=lambda h: (h[0], -len(h[1])))
            mentioned[name] = hits
            if hits:
                best[name] = hits[0]
        if not best:
            continue
        stem = _verb_stem(action.template)
        bonus = 0.5 if find_word_prefix(conds, stem) else 0.0
        variants = [best]
        if len(action.names) == 1:  # e.g. two different moves
            name = action.names[0]
            variants += [{name: h} for h in mentioned[name][1:]]
        for variant in variants:
            values = {n: variant[n][1] if n in variant else action.params[n][0] for n in action.names}
            matched = frozenset(variant[n][0] for n in variant)
            cands.append(_Cand(action, values, matched, len(matched) + bonus, stem))

    kept = _order([c for c in cands if not _dominated(c, cands, conds)], offset, goal)
    kept = _unique(kept)
    if len(kept) > MAX_STEPS:
        top = sorted(kept, key=lambda c: -c.score)[:MAX_STEPS]
        kept = [c for c in kept if c in top]
    steps = [Step(c.action, c.values, kind_of(c.action.template)) for c in kept]
    return _pad(script, steps)


def _mentions(script: Script, text: str) -> Callable[[str], int | None]:
    """pos(value): first mention of the value that is not part of a longer value's mention."""
    values = {v.lower().strip() for a in script.actions for n in a.names for v in a.params[n]}
    values |= {a.template.lower() for a in script.actions if not a.names}
    occ: dict[str, list[int]] = {}
    spans: list[tuple[int, int]] = []
    for v in values:
        hits = find_all_words(text, v)
        if hits:
            occ[v] = hits
            spans += [(p, p + len(v)) for p in hits]

    def pos(value: str) -> int | None:
        v = value.lower().strip()
        n = len(v)
        for p in occ.get(v, ()):
            if not any(a <= p and p + n <= b and b - a > n for a, b in spans):
                return p
        return None

    return pos


def find_all_words(text: str, needle: str) -> list[int]:
    """All positions of `needle` in `text` at word boundaries."""
    out: list[int] = []
    start = 0
    while needle:
        p = find_word(text[start:], needle) if start else find_word(text, needle)
        if p is None:
            break
        out.append(start + p)
        start = start + p + 1
    return out


def find_word_prefix(text: str, stem: str) -> bool:
    """Whether some word of `text` starts with `stem`."""
    start = 0
    while True:
        i = text.find(stem, start)
        if i < 0:
            return False
        if i == 0 or not text[i - 1].isalnum():
            return True
        start = i + 1


def _order(cands: list[_Cand], offset: int, goal: str) -> list[_Cand]:
    """Order by where the conditions mention a candidate; goal-only ones by the goal's order."""
    in_conds = sorted(
        (c for c in cands if min(c.matched) < offset),
        key=lambda c: (max(p for p in c.matched if p < offset), c.action.index),
    )
    goal_only = sorted(
        (c for c in cands if min(c.matched) >= offset), key=lambda c: (min(c.matched), c.action.index)
    )

    def goal_pos(c: _Cand) -> int | None:
        hits = [p for v in c.values.values() if (p := find_word(goal, v.lower().strip())) is not None]
        return min(hits) if hits else None

    ordered = list(in_conds)
    for g in goal_only:
        gp = min(g.matched) - offset
        at = next(
            (i for i, c in enumerate(ordered) if (p := goal_pos(c)) is not None and p > gp), len(ordered)
        )
        ordered.insert(at, g)
    return ordered


def _local(c: _Cand, positions: frozenset[int], conds: str) -> bool:
    """Whether c's verb appears in the clause of one of these mentions."""
    return bool(c.stem) and any(
        find_word_prefix(_clause(conds, p), c.stem) for p in positions if p < len(conds)
    )


def _dominated(c: _Cand, cands: list[_Cand], conds: str) -> bool:
    for o in cands:
        if o is c or not c.matched <= o.matched:
            continue
        if _local(c, c.matched, conds) and not _local(o, c.matched, conds):
            continue
        if len(c.matched) < len(o.matched):
            return True
        if c.score < o.score or (c.score == o.score and c.action.index > o.action.index):
            return True
    return False


def _unique(cands: list[_Cand]) -> list[_Cand]:
    seen: set[str] = set()
    out = []
    for c in cands:
        cmd = fill(c.action.template, c.values)
        if cmd not in seen:
            seen.add(cmd)
            out.append(c)
    return out


def _pad(script: Script, steps: list[Step]) -> list[Step]:
    usable = [a for a in script.actions if a.accepts(fill(a.template, {n: a.params[n][0] for n in a.names}))]
    steps = [s for s in steps if s.action.accepts(s.command)]
    used = {s.command for s in steps}
    zero = [a for a in usable if not a.names and a.template not in used]
    others = [a for a in usable if a.names and not any(s.action is a for s in steps)]
    while len(steps) < MIN_STEPS and zero:
        a = zero.pop(0)
        steps.insert(0, Step(a, {}, "other"))
    while len(steps) < MIN_STEPS and others:
        a = others.pop(0)
        step = Step(a, {n: a.params[n][0] for n in a.names}, kind_of(a.template))
        steps.insert(max(0, len(steps) - 1), step)
    return steps
