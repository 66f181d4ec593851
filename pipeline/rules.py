"""Verification rules for LLM-written scripts (SPEC §3, S1-S7) and trajectories (SPEC §4, T1-T8).

Pure functions, no I/O. ``check_script`` turns the raw script reply into a parsed script plus its
compiled ``Action`` list; ``check_trajectory`` checks a raw trajectory reply against those actions,
optionally as the continuation of an already verified prefix. Each verdict carries every
independent ``Failure`` it found (at most ``MAX_FAILURES``), each a one-line message naming the
offending keys and values, so that one regeneration can fix them all (``feedback`` lists them).
The first failure's rule id is the one counted in metrics and stored in reject records.

Order of the checks. Script: S7 (size; a reply over 4x the limit is not parsed), S1, S2 (every
shape problem), S3, then for each action in key order its S4 and S5 problems, or S6 once both
pass. Trajectory: T1 (parse), then turn by turn T2, T3, T8 (text size, before any pattern sees
the text), T4/T5 (on each DM turn, about the Player action before it); then, over the whole
trajectory, T8 (turn count), T3 (ends with a DM turn), T6, T7. The first failure is the one at
the earliest turn; the turns before it, up to the last DM turn among them, are the *verified
prefix* that a continuation starts from. T6 and T7 judge the trajectory as a whole, so when they
come first, and when all rules pass, the prefix is the whole trajectory.

T4 versus T5. SPEC's T5 ("after an invalid action the DM turn has ``parameter_error: true``; after
a valid one it has ``parameter_error: false``") covers both directions of one comparison. We
report the first direction as T4 and the second as T5 so that each rule id names one distinct
fault: T4 (the action check) fails when an *invalid* action gets through, i.e. the DM does not
flag it with ``parameter_error``; T5 (flag consistency) fails when a *valid* action is flagged
with ``parameter_error``. Both are reported at the Player turn, so the pair is dropped as a whole.

Every pattern is compiled with RE2 (linear time, bounded memory, no logging), so an LLM-written
verification code can never hang or flood the service. ``strip_fence`` (from ``pipeline.jsontext``)
is re-exported for the other stages that read JSON out of LLM replies.
"""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import re2

from pipeline.jsontext import JSONDecodeError, loads, salvage_list, strip_fence, utf8_len

__all__ = [
    "CONTINUABLE",
    "RULE_IDS",
    "SCRIPT_RULES",
    "TRAJECTORY_RULES",
    "Action",
    "Failure",
    "ScriptVerdict",
    "TrajectoryVerdict",
    "check_script",
    "check_trajectory",
    "feedback",
    "is_valid_action",
    "strip_fence",
]

SCRIPT_RULES: tuple[str, ...] = tuple(f"S{n}" for n in range(1, 8))
"""The script checks (SPEC §3), in the order they are reported."""
TRAJECTORY_RULES: tuple[str, ...] = tuple(f"T{n}" for n in range(1, 9))
"""The trajectory checks (SPEC §4)."""
RULE_IDS: tuple[str, ...] = SCRIPT_RULES + TRAJECTORY_RULES
CONTINUABLE = frozenset({"T1", "T2", "T3", "T4", "T5"})
"""Trajectory rules whose failure keeps the verified prefix and asks the LLM to continue from it."""

MAX_SCRIPT_BYTES = 32 * 1024
MAX_PARSE_BYTES = 4 * MAX_SCRIPT_BYTES  # a larger reply is not parsed: S7 alone
MIN_ACTIONS = 3
MAX_ACTIONS = 30
MAX_VALUES = 50
MAX_PATTERN_CHARS = 2000
RE2_MAX_MEM = 8 << 20
MAX_TURNS = 60
MAX_TEXT_BYTES = 4096
MIN_ERROR_REFINE_TURNS = 2
MAX_FAILURES = 20  # problems reported for one answer (the feedback stays short)

SCRIPT_KEYS = ("Environment", "Goal", "Completion Conditions", "Available Actions")
FLAGS = ("parameter_error", "place_error", "logic_error")
TEXT_FIELDS = ("Thought", "Action", "Observation")
ROLE_KEYS = {
    "Player": frozenset({"turn", "role", "Thought", "Action"}),
    "DM": frozenset({"turn", "role", "Thought", "Observation", *FLAGS}),
}

KEY_ALIASES = {
    "verification code": ("regex", "pattern", "verify", "verification", "validation"),
    "parameters": ("params", "args", "arguments", "values"),
    "description": ("desc", "summary"),
}
"""Keys that real models write for the script's keys, named in the feedback."""
_COMMAND_SPLIT = re.compile(r"\s*(?:;|&&|\n|,? and then |,? then |,? and )\s*")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_SHOW_CHARS = 120


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = RE2_MAX_MEM
    return options


_RE2_OPTIONS = _re2_options()


@dataclass(frozen=True)
class Failure:
    """The first rule that failed. ``turn``: 1-based position in the whole trajectory (T rules)."""

    rule: str
    message: str
    turn: int | None = None


@dataclass(frozen=True)
class Action:
    """One compiled entry of a script's "Available Actions"."""

    template: str
    placeholders: tuple[str, ...]
    pattern: re2._Regexp
    allowed: tuple[frozenset[str], ...]

    def accepts(self, command: str) -> bool:
        """True when the pattern fully matches ``command`` and every capture is an allowed value."""
        groups = _full_groups(self.pattern, command)
        return groups is not None and all(
            value in allowed for value, allowed in zip(groups, self.allowed, strict=True)
        )


class _Checked:
    """What every verdict answers: its failures, the earliest first."""

    failures: tuple[Failure, ...]

    @property
    def failure(self) -> Failure | None:
        """The earliest failure: its rule id is the one counted (for a trajectory, its turn
        bounds the verified prefix)."""
        return self.failures[0] if self.failures else None

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class ScriptVerdict(_Checked):
    """``script`` is the parsed object (None unless S1 passed); ``actions`` are set only when ok.
    ``failures``: every independent problem found, the first one first (its rule id is the one
    counted in metrics and rejects)."""

    script: dict | None
    actions: tuple[Action, ...]
    failures: tuple[Failure, ...] = ()


@dataclass(frozen=True)
class TrajectoryVerdict(_Checked):
    """Outcome of ``check_trajectory``; ``turns`` is the whole trajectory (prefix + new turns)."""

    turns: list[dict]
    failures: tuple[Failure, ...]
    verified_prefix: list[dict]
    error_refine_turns: int

    @property
    def continuable(self) -> bool:
        """True when the next attempt should continue from ``verified_prefix`` (T1-T5, >= 2 turns)."""
        return (
            self.failure is not None and self.failure.rule in CONTINUABLE and len(self.verified_prefix) >= 2
        )


# --- messages ---------------------------------------------------------------------------------


def _show(value: object) -> str:
    """A short, single-line rendering of a JSON value for a failure message."""
    if isinstance(value, str):
        clipped = value if len(value) <= _SHOW_CHARS else value[:_SHOW_CHARS] + "…"
        text = json.dumps(clipped, ensure_ascii=False)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value)


def _detail(text: str) -> str:
    """An error text from a parser or RE2, unquoted, on one short line."""
    line = " ".join(text.split())
    return line if len(line) <= _SHOW_CHARS else line[:_SHOW_CHARS] + "…"


def _show_json(value: object) -> str:
    """A value as compact JSON on one short line (lists and objects shown, not named)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS] + "…"


def _show_all(values: Sequence[object]) -> str:
    return "[" + ", ".join(_show(value) for value in values) + "]"


def _type_name(value: object) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return _show(value)


def _full_groups(pattern: re2._Regexp, text: str) -> tuple[str | None, ...] | None:
    """The capture groups when ``pattern`` fully matches ``text``, else None.

    RE2 matches UTF-8 bytes either way; given bytes, google-re2's wrapper skips turning byte
    offsets back into character offsets, which made up about half of each match's cost."""
    match = pattern.fullmatch(text.encode())
    if match is None:
        return None
    return tuple(group.decode() if group is not None else None for group in match.groups())


def _re2_error(error: re2.error) -> str:
    detail = error.args[0] if error.args else ""
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


def feedback(failures: Sequence[Failure]) -> str:
    """Every failure of an answer as one line each: "- S4: ...", for the regeneration prompt."""
    return "\n".join(f"- {failure.rule}: {failure.message}" for failure in failures)


# --- script (S1-S7) ---------------------------------------------------------------------------


def check_script(text: str) -> ScriptVerdict:
    """Check a raw script reply against S1-S7 (SPEC §3); compile its actions when it passes.

    Every independent problem is reported: S7 with the rest (a reply over ``MAX_PARSE_BYTES``
    is not parsed at all), each S2 shape problem, S3, and for each action its S4 and S5
    problems, or its S6 problem once S4 and S5 pass.
    """
    body = strip_fence(text)
    size = utf8_len(body)
    failures: list[Failure] = []
    if size > MAX_SCRIPT_BYTES:
        failures.append(
            Failure("S7", f"script is {size} bytes of JSON; at most {MAX_SCRIPT_BYTES}: shorten it")
        )
        if size > MAX_PARSE_BYTES:
            return ScriptVerdict(None, (), tuple(failures))
    try:
        script = loads(body)
    except JSONDecodeError as error:
        failures.append(Failure("S1", f"script is not valid JSON ({_detail(str(error))})"))
        return ScriptVerdict(None, (), tuple(failures))
    if not isinstance(script, dict):
        failures.append(Failure("S1", f"script is {_type_name(script)}, expected a JSON object"))
        return ScriptVerdict(None, (), tuple(failures))
    failures += [Failure("S2", problem) for problem in _shape_problems(script)]
    specs = script.get("Available Actions")
    if not isinstance(specs, dict):
        return ScriptVerdict(script, (), tuple(failures))
    if not MIN_ACTIONS <= len(specs) <= MAX_ACTIONS:
        failures.append(
            Failure(
                "S3", f'"Available Actions" has {len(specs)} actions; {MIN_ACTIONS} to {MAX_ACTIONS} required'
            )
        )
    actions = []
    for template, spec in list(specs.items())[:MAX_ACTIONS]:
        if isinstance(spec, dict):
            action = _compile_action(template, spec)
            if isinstance(action, Action):
                actions.append(action)
            else:
                failures += action
    if failures:
        return ScriptVerdict(script, (), tuple(failures[:MAX_FAILURES]))
    return ScriptVerdict(script, tuple(actions), ())


def _near_key(spec: dict, wanted: str) -> str | None:
    """A key of ``spec`` that is ``wanted`` misspelt (case, spacing, underscores) or a known alias."""
    target = _squash(wanted)
    for key in spec:
        if (
            isinstance(key, str)
            and key != wanted
            and (_squash(key) == target or key in KEY_ALIASES.get(wanted, ()))
        ):
            return key
    return None


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _missing_key(where: str, spec: dict, wanted: str, what: str) -> str:
    """The message for a missing key, naming the misspelt key the answer used instead, if any."""
    near = _near_key(spec, wanted)
    if near is not None:
        return f'{where} has key {_show(near)} where {_show(wanted)} is expected: write it exactly "{wanted}"'
    return f'{where} needs a "{wanted}" {what}'


def _shape_problems(script: dict) -> list[str]:
    """S2: the four keys with their types, and a "description" string on every action."""
    expected = {
        "Environment": (dict, "an object"),
        "Goal": (str, "a non-empty string"),
        "Completion Conditions": (list, "a non-empty list of strings"),
        "Available Actions": (dict, "an object"),
    }
    problems = []
    for key in SCRIPT_KEYS:
        kind, wanted = expected[key]
        if key not in script:
            problems.append(_missing_key("the script", script, key, f"key ({wanted})"))
        elif not isinstance(script[key], kind):
            problems.append(f'"{key}" must be {wanted}, got {_type_name(script[key])}')
    if isinstance(script.get("Goal"), str) and not script["Goal"].strip():
        problems.append('"Goal" must be a non-empty string')
    conditions = script.get("Completion Conditions")
    if isinstance(conditions, list) and not (
        conditions and all(isinstance(item, str) for item in conditions)
    ):
        problems.append('"Completion Conditions" must be a non-empty list of strings')
    specs = script.get("Available Actions")
    for template, spec in specs.items() if isinstance(specs, dict) else ():
        name = f"action {_show(template)}"
        if not isinstance(spec, dict):
            problems.append(f"{name} must be an object, got {_type_name(spec)}")
        elif not isinstance(spec.get("description"), str):
            problems.append(_missing_key(name, spec, "description", "string"))
    return problems


def _compile_action(template: str, spec: dict) -> Action | list[Failure]:
    """S4 and S5 for one action, then S6 when both pass; the compiled ``Action``, or its failures."""
    name = _show(template)
    placeholders = tuple(_PLACEHOLDER.findall(template))
    failures = [Failure("S4", problem) for problem in _parameter_problems(name, placeholders, spec)]
    pattern = _compile_pattern(name, spec, placeholders)
    if isinstance(pattern, Failure):
        failures.append(pattern)
    if failures:
        return failures
    assert not isinstance(pattern, Failure)
    value_lists = [spec["parameters"][p] for p in placeholders]
    problem = _consistency_problem(template, pattern, placeholders, value_lists)
    if problem is not None:
        return [Failure("S6", f"action {name}: {problem}")]
    return Action(template, placeholders, pattern, tuple(frozenset(v) for v in value_lists))


def _parameter_problems(name: str, placeholders: tuple[str, ...], spec: dict) -> list[str]:
    """S4: placeholders used once, parameter keys = placeholders, each a list of allowed strings."""
    problems = []
    duplicates = sorted({p for p in placeholders if placeholders.count(p) > 1})
    if duplicates:
        problems.append(f"action {name} uses placeholder(s) {_show_all(duplicates)} more than once")
    parameters = spec.get("parameters")
    if not isinstance(parameters, dict):
        if "parameters" in spec:
            return [
                *problems,
                f'action {name}: "parameters" must be an object mapping each placeholder to values',
            ]
        return [
            *problems,
            _missing_key(f"action {name}", spec, "parameters", "object (placeholder -> values)"),
        ]
    if set(parameters) != set(placeholders):
        problems.append(
            f'action {name}: "parameters" keys {_show_all(list(parameters))} '
            f"must be exactly its placeholders {_show_all(placeholders)}"
        )
    for placeholder in placeholders:
        values = parameters.get(placeholder)
        if values is None:
            continue
        if not (isinstance(values, list) and values and all(isinstance(v, str) for v in values)):
            problems.append(
                f"action {name}: {_show(placeholder)} must be a non-empty list of the allowed values as "
                f"strings, got {_show_json(values)}" + _type_spec_hint(values)
            )
        elif len(values) > MAX_VALUES:
            problems.append(
                f"action {name}: {_show(placeholder)} has {len(values)} values; at most {MAX_VALUES}"
            )
    return problems


_TYPE_NAMES = frozenset(
    {"string", "str", "int", "integer", "number", "float", "bool", "boolean", "text", "any"}
)


def _type_spec_hint(values: object) -> str:
    """A hint when a value list describes a type (``["string", 1]``) instead of listing values."""
    items = values if isinstance(values, list) else [values]
    if any(isinstance(v, str) and v.lower() in _TYPE_NAMES for v in items):
        return (
            " (a type description, not values: list the exact values a player may type, "
            'e.g. ["kitchen", "hall"])'
        )
    return ""


def _compile_pattern(name: str, spec: dict, placeholders: tuple[str, ...]) -> re2._Regexp | Failure:
    """S5: an RE2 pattern of bounded size with one capture group per placeholder, in order."""
    code = spec.get("verification code")
    if not isinstance(code, str):
        return Failure(
            "S5", _missing_key(f"action {name}", spec, "verification code", "string (a regular expression)")
        )
    if len(code) > MAX_PATTERN_CHARS:
        return Failure(
            "S5", f"action {name}: verification code is {len(code)} characters; at most {MAX_PATTERN_CHARS}"
        )
    try:
        pattern = re2.compile(code, _RE2_OPTIONS)
    except re2.error as error:
        return Failure(
            "S5",
            f"action {name}: RE2 rejects verification code {_show(code)} ({_detail(_re2_error(error))}); "
            "use RE2 syntax: no backreferences, no lookahead or lookbehind",
        )
    if pattern.groups != len(placeholders):
        return Failure(
            "S5",
            f"action {name}: verification code has {pattern.groups} capture groups but the template has "
            f"{len(placeholders)} placeholder(s); use one group per placeholder and (?:...) elsewhere",
        )
    for group, index in sorted(pattern.groupindex.items(), key=lambda item: item[1]):
        if group != placeholders[index - 1]:
            return Failure(
                "S5",
                f"action {name}: capture group {index} is named {_show(group)} but placeholder {index} "
                f"of the template is {_show(placeholders[index - 1])}",
            )
    return pattern


def _fill(template: str, values: dict[str, str]) -> str:
    """The command that ``template`` gives with each ``{placeholder}`` replaced by its value."""
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def _consistency_problem(
    template: str, pattern: re2._Regexp, placeholders: tuple[str, ...], value_lists: list[list[str]]
) -> str | None:
    """S6: each allowed value, filled into the template (others at their first value), round-trips."""
    fills = [[values[0] for values in value_lists]]  # covers an action without placeholders too
    for position, values in enumerate(value_lists):
        for value in values[1:]:
            fill = list(fills[0])
            fill[position] = value
            fills.append(fill)
    for fill in fills:
        command = _fill(template, dict(zip(placeholders, fill, strict=True)))
        groups = _full_groups(pattern, command)
        if groups is None:
            return f"its verification code does not match the filled-in command {_show(command)}"
        if list(groups) != fill:
            return (
                f"on the filled-in command {_show(command)} its verification code captures "
                f"{_show_all(groups)} instead of {_show_all(fill)}"
            )
    return None


# --- trajectory (T1-T8) -----------------------------------------------------------------------


def is_valid_action(command: str, actions: Sequence[Action]) -> bool:
    """T4: some action's pattern fully matches ``command`` and every capture is an allowed value."""
    return any(action.accepts(command) for action in actions)


def _invalid_reason(command: str, actions: Sequence[Action]) -> str:
    """Why an invalid command is invalid, for feedback."""
    parts = [part.strip() for part in _COMMAND_SPLIT.split(command) if part.strip()]
    if len(parts) > 1 and any(is_valid_action(part, actions) for part in parts):
        return f"it is {len(parts)} actions in one ({_show_all(parts)}); one action per Player turn"
    for action in actions:
        groups = _full_groups(action.pattern, command)
        if groups is None:
            continue
        for placeholder, value, allowed in zip(action.placeholders, groups, action.allowed, strict=True):
            if value not in allowed:
                return (
                    f"it matches {_show(action.template)} but {_show(value)} is not an allowed value "
                    f"of {_show(placeholder)}"
                )
    return "it matches no available action"


def check_trajectory(
    text: str, actions: Sequence[Action], prefix: Sequence[dict] = (), refinement: bool = True
) -> TrajectoryVerdict:
    """Check a raw trajectory reply against T1-T8 (SPEC §4).

    With ``prefix`` (a continuation), the new turns are joined to it: appended when they are
    numbered from ``len(prefix) + 1`` (or there are none), taken as they are when the reply re-sends
    the whole trajectory (starts at turn 1 and repeats the prefix), appended otherwise (T3 then
    reports the numbering). Every check runs on the whole joined trajectory. Every independent
    problem is reported, the earliest first: each turn's own problem (turn checks stop at a
    T3 problem, after which roles and numbers no longer line up), a T1 parse problem, then the
    whole-trajectory rules T3 (last turn), T6 and T7 unless the turns are out of order or cut.
    ``refinement=False`` is the paper's "w/o refinement data" ablation: T6 inverted, no turn
    may carry an error flag.
    """
    new, parse_problem = _parse_turns(text)
    turns = _join(list(prefix), new)
    failures = _turn_failures(turns, actions)
    if parse_problem is not None:
        failures.append(Failure("T1", parse_problem, len(turns) + 1))
    if not any(f.rule in {"T1", "T3"} for f in failures):
        failures += _whole_failures(turns, actions, {f.turn for f in failures if f.rule == "T2"}, refinement)
    failures = failures[:MAX_FAILURES]
    failure = failures[0] if failures else None
    if failure is not None and failure.rule not in {"T6", "T7"}:
        verified = turns[: failure.turn - 1]
        if verified and verified[-1].get("role") == "Player":
            verified = verified[:-1]
    else:
        verified = list(turns)
    return TrajectoryVerdict(turns, tuple(failures), verified, len(_error_refine_positions(turns)))


def _parse_turns(text: str) -> tuple[list, str | None]:
    """T1: the reply's list of turns and, when it is not a complete valid reply, why.

    On a parse error the complete turns before the break are kept (truncated replies).
    """
    body = strip_fence(text)
    try:
        data = loads(body)
    except JSONDecodeError as error:
        turns = salvage_list(body, "trajectory")
        where = f"after {len(turns)} complete turn(s) of this reply" if turns else "at its start"
        return turns, f"reply is not valid JSON {where} ({_detail(str(error))})"
    if isinstance(data, dict) and isinstance(data.get("trajectory"), list):
        return data["trajectory"], None
    if isinstance(data, list):
        return data, None
    return [], f'reply is {_type_name(data)}; expected {{"trajectory": [...]}} or a list of turns'


def _turn_number(turn: object) -> int | None:
    if isinstance(turn, dict):
        number = turn.get("turn")
        if isinstance(number, int) and not isinstance(number, bool):
            return number
    return None


def _join(prefix: list, new: list) -> list:
    """The whole trajectory: prefix + new turns, or the new list when it re-sends the prefix."""
    if prefix and new and _turn_number(new[0]) == 1 and new[: len(prefix)] == prefix:
        return new
    return prefix + new


def _turn_failures(turns: list, actions: Sequence[Action]) -> list[Failure]:
    """T2, T3, T8 (text size) on each turn and T4/T5 on each Player/DM pair, in turn order.

    A turn with a T2 problem is skipped (and so is the T4/T5 check of its pair); a T3 problem
    ends the turn checks. Stops after MAX_TURNS turns (T8) so that an overlong reply costs
    bounded work.
    """
    failures: list[Failure] = []
    broken: set[int] = set()
    for position, turn in enumerate(turns[:MAX_TURNS], start=1):
        problem = _turn_problem(position, turn)
        if problem is not None:
            rule, message = problem
            failures.append(Failure(rule, message, position))
            if rule == "T3":
                return failures
            if rule == "T2":
                broken.add(position)
                continue
        if turn["role"] == "DM" and position - 1 not in broken:
            failure = _flag_failure(position, turns[position - 2], turn, actions)
            if failure is not None:
                failures.append(failure)
    if len(turns) > MAX_TURNS:
        failures.append(
            Failure(
                "T8", f"trajectory has {len(turns)} turns; at most {MAX_TURNS}: finish sooner", MAX_TURNS + 1
            )
        )
    return failures


def _turn_problem(position: int, turn: object) -> tuple[str, str] | None:
    """T2 (keys and types), T3 (role order and numbering), T8 (text size) for one turn."""
    here = f"turn {position}"
    if not isinstance(turn, dict):
        return "T2", f"{here} is {_type_name(turn)}, expected an object"
    role = turn.get("role")
    if not isinstance(role, str) or role not in ROLE_KEYS:
        return "T2", f'{here} has role {_show(role)}; expected "Player" or "DM"'
    missing = sorted(ROLE_KEYS[role] - turn.keys())
    extra = sorted(turn.keys() - ROLE_KEYS[role])
    if missing or extra:
        wrong = f"lacks {_show_all(missing)}" if missing else f"has unexpected {_show_all(extra)}"
        return (
            "T2",
            f"{here} ({role}) {wrong}; a {role} turn has exactly {_show_all(sorted(ROLE_KEYS[role]))}",
        )
    if _turn_number(turn) is None:
        return "T2", f'{here} "turn" must be an integer, got {_type_name(turn["turn"])}'
    for key in sorted(turn.keys() & set(TEXT_FIELDS)):
        if not isinstance(turn[key], str):
            return "T2", f"{here} {_show(key)} must be a string, got {_type_name(turn[key])}"
    for key in sorted(turn.keys() & set(FLAGS)):
        if not isinstance(turn[key], bool):
            return "T2", f"{here} {_show(key)} must be true or false, got {_type_name(turn[key])}"
    expected_role = "Player" if position % 2 else "DM"
    if role != expected_role:
        return "T3", (
            f"{here} has role {_show(role)} but must be {_show(expected_role)}: "
            "roles alternate Player, DM, starting with Player"
        )
    if turn["turn"] != position:
        return "T3", f'{here} has "turn": {turn["turn"]}; turns are numbered 1, 2, 3, ... in order'
    for key in TEXT_FIELDS:
        if key in turn and (size := utf8_len(turn[key])) > MAX_TEXT_BYTES:
            return "T8", f"{here} {_show(key)} is {size} bytes; at most {MAX_TEXT_BYTES}"
    return None


def _flag_failure(position: int, player: dict, dm: dict, actions: Sequence[Action]) -> Failure | None:
    """T4/T5 on the DM turn at ``position`` about the Player action before it, reported at the Player turn."""
    command = player["Action"]
    flagged = dm["parameter_error"]
    if is_valid_action(command, actions):
        if flagged:
            return Failure(
                "T5",
                f"turn {position - 1} action {_show(command)} is a valid action but DM turn {position} "
                "sets parameter_error true; it must be false "
                "(place_error or logic_error cover other mistakes)",
                position - 1,
            )
    elif not flagged:
        return Failure(
            "T4",
            f"turn {position - 1} action {_show(command)} is invalid ({_invalid_reason(command, actions)}), "
            f"yet DM turn {position} sets parameter_error false; it must be true",
            position - 1,
        )
    return None


def _whole_failures(
    turns: list[dict], actions: Sequence[Action], broken: set[int | None], refinement: bool = True
) -> list[Failure]:
    """T3 (ends with a DM turn), T6 (error-refine turns), T7 (ends in success), over turns in order."""
    if not turns:
        return [
            Failure("T3", "trajectory has no turns; it starts with a Player turn and ends with a DM turn", 1)
        ]
    failures = []
    ends_on_player = len(turns) not in broken and turns[-1]["role"] != "DM"
    if ends_on_player:
        failures.append(
            Failure(
                "T3",
                f"the last turn ({len(turns)}) is a Player turn; the trajectory must end with the DM's reply "
                "reporting success",
                len(turns),
            )
        )
    refined = _error_refine_positions(turns)
    if refinement and len(refined) < MIN_ERROR_REFINE_TURNS:
        failures.append(Failure("T6", _t6_message(refined)))
    errors = [n for n, turn in enumerate(turns, 1) if _is_error_turn(turn)]
    if not refinement and errors:
        failures.append(
            Failure(
                "T6",
                f"DM turn(s) {errors} set an error flag; in this mode the Player makes no mistakes: "
                "every action is correct and no DM turn sets a flag",
            )
        )
    if ends_on_player or len(turns) < 2 or {len(turns) - 1, len(turns)} & broken:
        return failures
    last_player, last_dm = turns[-2], turns[-1]
    if not is_valid_action(last_player["Action"], actions):
        failures.append(
            Failure(
                "T7",
                f"the last Player action (turn {len(turns) - 1}) {_show(last_player['Action'])} is not "
                "a valid action; the trajectory must end in success",
                len(turns) - 1,
            )
        )
    raised = [flag for flag in FLAGS if last_dm[flag]]
    if raised:
        failures.append(
            Failure(
                "T7",
                f"the last DM turn ({len(turns)}) sets {', '.join(raised)}; "
                "the trajectory must end in success with no flag",
                len(turns),
            )
        )
    return failures


def _t6_message(refined: list[int]) -> str:
    return (
        f"{len(refined)} error-refine turn(s) (flagged DM turns {refined} followed by an unflagged one); "
        f"at least {MIN_ERROR_REFINE_TURNS} required: "
        "the Player must make at least two mistakes that the DM flags and then recover from them"
    )


def _is_error_turn(turn: object) -> bool:
    """A DM turn with any flag true."""
    return isinstance(turn, dict) and turn.get("role") == "DM" and any(turn.get(f) is True for f in FLAGS)


def _error_refine_positions(turns: list) -> list[int]:
    """Positions of error turns (DM, any flag true) that a later DM turn without flags follows."""
    refined: list[int] = []
    pending: list[int] = []
    for position, turn in enumerate(turns, start=1):
        if not (isinstance(turn, dict) and turn.get("role") == "DM"):
            continue
        if _is_error_turn(turn):
            pending.append(position)
        else:
            refined.extend(pending)
            pending.clear()
    return refined
