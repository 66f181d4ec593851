"""Tests for pipeline.rules: one passing and one failing fixture per rule id, plus parsing edge cases."""

import copy
import json
from collections.abc import Callable

import pytest
import re2

from pipeline.rules import (
    CONTINUABLE,
    RULE_IDS,
    Action,
    ScriptVerdict,
    TrajectoryVerdict,
    check_script,
    check_trajectory,
    is_valid_action,
    strip_fence,
)

# --- fixtures ---------------------------------------------------------------------------------


def make_script() -> dict:
    """A valid script with four actions (one without placeholders, one with two)."""
    return {
        "Environment": {
            "locations": {"hall": "connects to office and archive", "office": "", "archive": ""},
            "items": {"ledger": "in the archive", "cabinet": "in the office"},
            "player information": {"location": "hall"},
        },
        "Goal": "Read the ledger.",
        "Completion Conditions": ["The ledger has been read in the archive."],
        "Available Actions": {
            "go to {place}": {
                "description": "walk to a place",
                "verification code": r"^\s*go\s+to\s+(\w+)\s*$",
                "parameters": {"place": ["hall", "office", "archive"]},
            },
            "open {container}": {
                "description": "open a container",
                "verification code": r"^\s*open\s+(\w+)\s*$",
                "parameters": {"container": ["cabinet", "drawer"]},
            },
            "read {document} in {place}": {
                "description": "read a document where it is",
                "verification code": r"^\s*read\s+(\w+)\s+in\s+(\w+)\s*$",
                "parameters": {"document": ["ledger", "memo"], "place": ["office", "archive"]},
            },
            "look around": {
                "description": "describe the surroundings",
                "verification code": r"^\s*look\s+around\s*$",
                "parameters": {},
            },
        },
    }


def actions_of(script: dict) -> tuple[Action, ...]:
    verdict = check_script(json.dumps(script))
    assert verdict.ok, verdict.failure
    return verdict.actions


ACTIONS = actions_of(make_script())


def player(n: int, action: str) -> dict:
    return {"turn": n, "role": "Player", "Thought": f"I should try {action}.", "Action": action}


def dm(n: int, parameter_error: bool = False, place_error: bool = False, logic_error: bool = False) -> dict:
    return {
        "turn": n,
        "role": "DM",
        "Thought": "Judging the action.",
        "Observation": "Something happens.",
        "parameter_error": parameter_error,
        "place_error": place_error,
        "logic_error": logic_error,
    }


def make_trajectory() -> list[dict]:
    """A valid 10-turn trajectory with two error-refine turns (DM turns 2 and 6)."""
    return [
        player(1, "go to garden"),  # "garden" is not an allowed place
        dm(2, parameter_error=True),
        player(3, "go to archive"),
        dm(4),
        player(5, "read ledger in office"),  # valid, but the ledger is in the archive
        dm(6, place_error=True),
        player(7, "look around"),
        dm(8),
        player(9, "read ledger in archive"),
        dm(10),
    ]


def as_text(turns: list) -> str:
    return json.dumps({"trajectory": turns})


def script_verdict(mutate: Callable[[dict], object]) -> ScriptVerdict:
    script = make_script()
    mutate(script)
    return check_script(json.dumps(script))


def trajectory_verdict(mutate: Callable[[list], object]) -> TrajectoryVerdict:
    turns = make_trajectory()
    mutate(turns)
    return check_trajectory(as_text(turns), ACTIONS)


def action(script: dict, template: str) -> dict:
    return script["Available Actions"][template]


def test_rule_ids() -> None:
    ids = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8"]
    assert list(RULE_IDS) == ids
    assert sorted(CONTINUABLE) == ids[7:12]


# --- script: passing ----------------------------------------------------------------------------


def test_valid_script_passes_and_compiles_actions() -> None:
    verdict = check_script(json.dumps(make_script()))
    assert verdict.ok and verdict.failure is None
    assert verdict.script == make_script()
    assert [a.template for a in verdict.actions] == list(make_script()["Available Actions"])
    read = verdict.actions[2]
    assert read.placeholders == ("document", "place")
    assert read.allowed == (frozenset({"ledger", "memo"}), frozenset({"office", "archive"}))
    assert read.accepts("read memo in office")
    assert not read.accepts("read memo in hall")  # matches, but "hall" is not allowed here
    assert verdict.actions[3].accepts("look  around")


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: f"```json\n{s}\n```",
        lambda s: f"```\n{s}\n```",
        lambda s: f"Here is the script:\n\n```JSON\n{s}\n```\nEnjoy the game!",
        lambda s: f"```json {s}```",
        lambda s: f"  \n{s}\n  ",
    ],
    ids=["json-fence", "plain-fence", "prose-around", "one-line", "blank-around"],
)
def test_script_fence_stripping(wrap: Callable[[str], str]) -> None:
    assert check_script(wrap(json.dumps(make_script(), indent=2))).ok


def test_fence_inside_bare_json_string_is_content() -> None:
    script = make_script()
    script["Environment"]["documents"] = {"readme.md": "run:\n```\nmake\n```"}
    assert check_script(json.dumps(script)).ok
    assert check_script(f"```json\n{json.dumps(script, indent=2)}\n```").ok  # fenced as well
    assert strip_fence('{"a": "```x```"}') == '{"a": "```x```"}'


def test_strip_fence_of_truncated_reply_keeps_everything_after_the_opening() -> None:
    assert strip_fence('```json\n{"trajectory": [1, 2') == '{"trajectory": [1, 2'
    assert strip_fence("no json here") == "no json here"


def test_named_groups_in_template_order_pass() -> None:
    script = make_script()
    action(script, "read {document} in {place}")["verification code"] = (
        r"^read\s+(?P<document>\w+)\s+in\s+(?P<place>\w+)$"
    )
    assert check_script(json.dumps(script)).ok


def test_three_and_thirty_actions_pass() -> None:
    def keep_three(s: dict) -> None:
        del s["Available Actions"]["look around"]

    def thirty(s: dict) -> None:
        for n in range(26):
            s["Available Actions"][f"wait {n}"] = {
                "description": "wait",
                "verification code": rf"^wait {n}$",
                "parameters": {},
            }

    assert script_verdict(keep_three).ok
    assert script_verdict(thirty).ok


# --- script: failing, one rule at a time ------------------------------------------------------


def test_s7_size_checked_first_and_huge_replies_never_parsed() -> None:
    script = make_script()
    script["Environment"]["notes"] = "x" * 33_000
    verdict = check_script(json.dumps(script))
    assert [f.rule for f in verdict.failures] == ["S7"]
    # Over the limit and not even JSON: S7 first, then S1.
    assert [f.rule for f in check_script("{" + "[" * 40_000).failures] == ["S7", "S1"]
    # Over 4x the limit: S7 alone, the text is never parsed.
    verdict = check_script("{" + "[" * 140_000)
    assert [f.rule for f in verdict.failures] == ["S7"] and verdict.script is None


def test_s7_exactly_32_kib_passes() -> None:
    script = make_script()
    script["Environment"]["notes"] = ""
    padding = 32 * 1024 - len(json.dumps(script).encode())
    script["Environment"]["notes"] = "x" * padding
    assert len(json.dumps(script).encode()) == 32 * 1024
    assert check_script(json.dumps(script)).ok
    script["Environment"]["notes"] += "x"
    assert check_script(json.dumps(script)).failure.rule == "S7"


def test_s7_counts_utf8_bytes_not_characters() -> None:
    script = make_script()
    script["Environment"]["notes"] = "é" * 17_000  # 17,000 characters, 34,000 bytes
    assert check_script(json.dumps(script, ensure_ascii=False)).failure.rule == "S7"


@pytest.mark.parametrize(
    "text",
    ["{not json", '["a list"]', '"a string"', "", '```json\n{"Goal": \n```', '{"a": 1} trailing'],
    ids=["broken", "list", "string", "empty", "broken-in-fence", "trailing"],
)
def test_s1_not_a_json_object(text: str) -> None:
    verdict = check_script(text)
    assert verdict.failure is not None and verdict.failure.rule == "S1"
    assert verdict.script is None and verdict.actions == ()


S2_MUTATIONS = {
    "no-goal": lambda s: s.pop("Goal"),
    "blank-goal": lambda s: s.update(Goal="   "),
    "environment-list": lambda s: s.update(Environment=["hall"]),
    "conditions-empty": lambda s: s.update({"Completion Conditions": []}),
    "conditions-not-strings": lambda s: s.update({"Completion Conditions": ["done", 3]}),
    "actions-list": lambda s: s.update({"Available Actions": ["go to {place}"]}),
    "action-not-object": lambda s: s["Available Actions"].update({"look around": "look"}),
    "no-description": lambda s: action(s, "open {container}").pop("description"),
}


@pytest.mark.parametrize("mutate", S2_MUTATIONS.values(), ids=S2_MUTATIONS.keys())
def test_s2_keys_and_types(mutate: Callable[[dict], object]) -> None:
    verdict = script_verdict(mutate)
    assert verdict.failure is not None and verdict.failure.rule == "S2"
    assert verdict.script is not None and verdict.actions == ()


def test_s3_too_few_and_too_many_actions() -> None:
    def two(s: dict) -> None:
        for template in ("look around", "open {container}"):
            del s["Available Actions"][template]

    def thirty_one(s: dict) -> None:
        for n in range(27):
            s["Available Actions"][f"wait {n}"] = {
                "description": "",
                "verification code": "x",
                "parameters": {},
            }

    for mutate in (two, thirty_one):
        verdict = script_verdict(mutate)
        assert verdict.failure is not None and verdict.failure.rule == "S3"


S4_MUTATIONS = {
    "keys-mismatch": lambda s: action(s, "go to {place}").update(parameters={"where": ["hall"]}),
    "missing-key": lambda s: action(s, "read {document} in {place}")["parameters"].pop("place"),
    "extra-key": lambda s: action(s, "look around").update(parameters={"x": ["1"]}),
    "no-parameters": lambda s: action(s, "look around").pop("parameters"),
    "parameters-list": lambda s: action(s, "go to {place}").update(parameters=["hall"]),
    "empty-values": lambda s: action(s, "go to {place}")["parameters"].update(place=[]),
    "non-string-value": lambda s: action(s, "go to {place}")["parameters"].update(place=["hall", 2]),
    "51-values": lambda s: action(s, "go to {place}")["parameters"].update(
        place=[f"p{n}" for n in range(51)]
    ),
    "duplicate-placeholder": lambda s: s["Available Actions"].update(
        {"swap {item} {item}": {"description": "", "verification code": "(x)", "parameters": {"item": ["x"]}}}
    ),
}


@pytest.mark.parametrize("mutate", S4_MUTATIONS.values(), ids=S4_MUTATIONS.keys())
def test_s4_placeholders_and_parameters(mutate: Callable[[dict], object]) -> None:
    verdict = script_verdict(mutate)
    assert verdict.failure is not None and verdict.failure.rule == "S4"


def test_s4_fifty_values_pass() -> None:
    def fifty(s: dict) -> None:
        action(s, "go to {place}")["parameters"]["place"] = [f"p{n}" for n in range(50)]

    assert script_verdict(fifty).ok


def set_code(template: str, code: object) -> Callable[[dict], None]:
    return lambda s: action(s, template).update({"verification code": code})


S5_MUTATIONS = {
    "missing": lambda s: action(s, "go to {place}").pop("verification code"),
    "not-a-string": set_code("go to {place}", 42),
    "too-long": set_code("go to {place}", "^go to (\\w+)" + "\\s*" * 1000 + "$"),
    "backreference": set_code("go to {place}", r"^go to (\w+) \1$"),
    "lookahead": set_code("go to {place}", r"^go to (?=\w)(\w+)$"),
    "lookbehind": set_code("go to {place}", r"^go to (?<=o )(\w+)$"),
    "python-only-escape": set_code("go to {place}", r"^go to (\w+)\Z"),
    "unbalanced": set_code("go to {place}", r"^go to (\w+$"),
    "no-group": set_code("go to {place}", r"^go to \w+$"),
    "extra-group": set_code("go to {place}", r"^(go) to (\w+)$"),
    "misnamed-groups": set_code("read {document} in {place}", r"^read (?P<place>\w+) in (?P<document>\w+)$"),
}


@pytest.mark.parametrize("mutate", S5_MUTATIONS.values(), ids=S5_MUTATIONS.keys())
def test_s5_verification_code(mutate: Callable[[dict], object]) -> None:
    verdict = script_verdict(mutate)
    assert verdict.failure is not None and verdict.failure.rule == "S5"


def test_s5_compile_error_is_reported_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    verdict = script_verdict(set_code("go to {place}", r"^go to (\w+) \1$"))
    assert "invalid escape sequence" in verdict.failure.message
    assert "\n" not in verdict.failure.message
    assert capfd.readouterr().err == ""  # RE2 logging is off


S6_MUTATIONS = {
    # "hall"/"office"/"archive" are words, but a value with a space does not fit (\w+).
    "value-not-matched": lambda s: action(s, "go to {place}")["parameters"].update(
        place=["hall", "main hall"]
    ),
    # Captures only the first letter: the pattern matches but gives "h" back instead of "hall".
    "wrong-capture": set_code("go to {place}", r"^go to (\w)\w*$"),
    # The pattern does not match the template's own wording.
    "template-mismatch": set_code("look around", r"^look$"),
}


@pytest.mark.parametrize("mutate", S6_MUTATIONS.values(), ids=S6_MUTATIONS.keys())
def test_s6_self_consistency(mutate: Callable[[dict], object]) -> None:
    verdict = script_verdict(mutate)
    assert verdict.failure is not None and verdict.failure.rule == "S6"


def test_s6_message_names_action_and_filled_command() -> None:
    verdict = script_verdict(S6_MUTATIONS["value-not-matched"])
    assert '"go to {place}"' in verdict.failure.message
    assert '"go to main hall"' in verdict.failure.message


def test_first_failing_action_in_key_order_wins() -> None:
    def break_two(s: dict) -> None:
        action(s, "open {container}")["parameters"] = {}  # S4 on the second action
        action(s, "go to {place}")["verification code"] = r"(?=x)"  # S5 on the first action

    assert script_verdict(break_two).failure.rule == "S5"


# --- pathological patterns ----------------------------------------------------------------------


def test_catastrophic_backtracking_pattern_is_compiled_by_re2_and_rejects_evil_input() -> None:
    """RE2 (linear time, no backtracking) is what bounds the check; a backtracking engine would
    not return from these inputs. Timings belong in `make bench`, not here."""
    script = make_script()
    script["Available Actions"]["{word}"] = {
        "description": "say a word",
        "verification code": r"^(a+)+$",
        "parameters": {"word": ["a", "aa", "aaa"]},
    }
    actions = actions_of(script)
    assert is_valid_action("aa", actions)
    assert all(isinstance(action.pattern, re2._Regexp) for action in actions)
    evil = "a" * 100_000 + "b"
    assert not is_valid_action(evil, actions)
    # Inside a trajectory, a 4,000-character version of it is an invalid action (T4 when unflagged).
    turns = make_trajectory()
    turns[6]["Action"] = "a" * 4000 + "b"
    verdict = check_trajectory(as_text(turns), actions)
    assert (verdict.failure.rule, verdict.failure.turn) == ("T4", 7)


# --- trajectory: passing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "render",
    [as_text, json.dumps, lambda turns: f"```json\n{json.dumps({'trajectory': turns}, indent=2)}\n```"],
    ids=["object", "bare-list", "fenced"],
)
def test_valid_trajectory_passes(render: Callable[[list], str]) -> None:
    verdict = check_trajectory(render(make_trajectory()), ACTIONS)
    assert verdict.ok and not verdict.continuable
    assert verdict.turns == make_trajectory()
    assert verdict.verified_prefix == make_trajectory()
    assert verdict.error_refine_turns == 2


def test_is_valid_action() -> None:
    assert is_valid_action("read ledger in archive", ACTIONS)
    assert is_valid_action("  go   to office ", ACTIONS)  # the pattern allows the blanks
    assert not is_valid_action("go to garden", ACTIONS)  # value not allowed
    assert not is_valid_action("fly to office", ACTIONS)  # no pattern matches
    assert not is_valid_action("go to office", ())


# --- trajectory: failing, one rule at a time -----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["this is not json", '"just a string"', '{"turns": []}', '{"trajectory": {"turn": 1}}', ""],
    ids=["prose", "string", "wrong-key", "not-a-list", "empty"],
)
def test_t1_not_a_trajectory(text: str) -> None:
    verdict = check_trajectory(text, ACTIONS)
    assert verdict.failure is not None
    assert (verdict.failure.rule, verdict.failure.turn) == ("T1", 1)
    assert verdict.verified_prefix == [] and not verdict.continuable


def cut_inside_turn(turns: list, position: int) -> str:
    """The trajectory text cut off halfway through the turn at ``position``."""
    text = as_text(turns)
    start = text.index(json.dumps(turns[position - 1]))
    return text[: start + 25]


def test_t1_truncated_inside_player_turn_salvages_prefix() -> None:
    turns = make_trajectory()
    verdict = check_trajectory(cut_inside_turn(turns, 7), ACTIONS)
    assert (verdict.failure.rule, verdict.failure.turn) == ("T1", 7)
    assert verdict.turns == turns[:6]
    assert verdict.verified_prefix == turns[:6]
    assert verdict.continuable
    assert verdict.error_refine_turns == 1  # DM turn 2 was refined by turn 4; turn 6 not yet


def test_t1_truncated_inside_dm_turn_drops_the_unanswered_player_turn() -> None:
    turns = make_trajectory()
    verdict = check_trajectory("```json\n" + cut_inside_turn(turns, 8), ACTIONS)
    assert (verdict.failure.rule, verdict.failure.turn) == ("T1", 8)
    assert verdict.turns == turns[:7]
    assert verdict.verified_prefix == turns[:6]
    assert verdict.continuable


def test_t1_broken_turn_in_a_bare_list() -> None:
    turns = make_trajectory()
    text = json.dumps(turns[:4])[:-1] + ', {"turn": 5, "role": "Player", "Thought": "oops "quoted""}]'
    verdict = check_trajectory(text, ACTIONS)
    assert (verdict.failure.rule, verdict.failure.turn) == ("T1", 5)
    assert verdict.verified_prefix == turns[:4] and verdict.continuable


def test_t1_complete_list_with_trailing_garbage() -> None:
    turns = make_trajectory()
    verdict = check_trajectory(as_text(turns)[:-1], ACTIONS)  # the closing brace is missing
    assert (verdict.failure.rule, verdict.failure.turn) == ("T1", 11)
    assert verdict.verified_prefix == turns


def test_earlier_turn_failure_beats_t1() -> None:
    turns = make_trajectory()
    turns[1]["parameter_error"] = False  # T4 at turn 1 ...
    text = cut_inside_turn(turns, 7)  # ... before the break at turn 7
    assert check_trajectory(text, ACTIONS).failure.rule == "T4"


T2_MUTATIONS = {  # id: (mutation, position of the failing turn)
    "not-an-object": (lambda t: t.__setitem__(4, "read ledger in office"), 5),
    "bad-role": (lambda t: t[4].update(role="Narrator"), 5),
    "missing-key": (lambda t: t[5].pop("logic_error"), 6),
    "extra-key": (lambda t: t[4].update(Observation="x"), 5),
    "turn-as-string": (lambda t: t[4].update(turn="5"), 5),
    "turn-as-bool": (lambda t: t[0].update(turn=True), 1),
    "flag-as-string": (lambda t: t[5].update(place_error="true"), 6),
    "thought-not-string": (lambda t: t[4].update(Thought=None), 5),
    "action-not-string": (lambda t: t[4].update(Action=["read", "ledger"]), 5),
}


@pytest.mark.parametrize(("mutate", "position"), T2_MUTATIONS.values(), ids=T2_MUTATIONS.keys())
def test_t2_keys_and_types(mutate: Callable[[list], object], position: int) -> None:
    verdict = trajectory_verdict(mutate)
    assert verdict.failure is not None
    assert (verdict.failure.rule, verdict.failure.turn) == ("T2", position)
    assert verdict.verified_prefix == make_trajectory()[: (position - 1) // 2 * 2]


def test_t2_at_dm_turn_6_is_continuable_from_turn_4() -> None:
    verdict = trajectory_verdict(T2_MUTATIONS["missing-key"][0])
    assert verdict.verified_prefix == make_trajectory()[:4]
    assert verdict.continuable
    assert '"logic_error"' in verdict.failure.message


def test_t3_roles_must_alternate() -> None:
    def two_players(turns: list) -> None:
        turns[5] = player(6, "look around")

    verdict = trajectory_verdict(two_players)
    assert (verdict.failure.rule, verdict.failure.turn) == ("T3", 6)
    assert verdict.verified_prefix == make_trajectory()[:4]


def test_t3_numbering() -> None:
    verdict = trajectory_verdict(lambda t: t[4].update(turn=6))
    assert (verdict.failure.rule, verdict.failure.turn) == ("T3", 5)
    assert verdict.continuable


def test_t3_last_turn_is_player_is_continuable() -> None:
    turns = make_trajectory()
    verdict = check_trajectory(as_text(turns[:9]), ACTIONS)
    assert (verdict.failure.rule, verdict.failure.turn) == ("T3", 9)
    assert verdict.verified_prefix == turns[:8]
    assert verdict.continuable


def test_t3_empty_trajectory() -> None:
    verdict = check_trajectory('{"trajectory": []}', ACTIONS)
    assert (verdict.failure.rule, verdict.failure.turn) == ("T3", 1)
    assert not verdict.continuable


def test_t4_invalid_action_not_flagged() -> None:
    def unflagged(turns: list) -> None:
        turns[6]["Action"] = "open safe"  # "safe" is not an allowed container

    verdict = trajectory_verdict(unflagged)
    assert (verdict.failure.rule, verdict.failure.turn) == ("T4", 7)
    assert verdict.verified_prefix == make_trajectory()[:6]
    assert verdict.continuable
    message = verdict.failure.message
    assert '"open safe"' in message and "DM turn 8" in message and '"safe"' in message
    assert not message.startswith("T4")


def test_t4_action_matching_no_template() -> None:
    verdict = trajectory_verdict(lambda t: t[6].update(Action="fly away"))
    assert (verdict.failure.rule, verdict.failure.turn) == ("T4", 7)
    assert "matches no available action" in verdict.failure.message
    # The same invalid action answered with parameter_error: true is fine (as turn 1 already is).
    assert trajectory_verdict(lambda t: t[0].update(Action="fly away")).ok


def test_t5_valid_action_flagged_as_parameter_error() -> None:
    verdict = trajectory_verdict(lambda t: t[5].update(parameter_error=True, place_error=False))
    assert (verdict.failure.rule, verdict.failure.turn) == ("T5", 5)
    assert verdict.verified_prefix == make_trajectory()[:4]
    assert verdict.continuable
    assert '"read ledger in office"' in verdict.failure.message


def test_t4_and_t5_first_pair_without_prefix_is_not_continuable() -> None:
    verdict = trajectory_verdict(lambda t: t[1].update(parameter_error=False))
    assert (verdict.failure.rule, verdict.failure.turn) == ("T4", 1)
    assert verdict.verified_prefix == [] and not verdict.continuable


def test_t6_one_error_refine_turn_is_not_enough() -> None:
    verdict = trajectory_verdict(lambda t: t[5].update(place_error=False))
    assert verdict.failure.rule == "T6"
    assert verdict.error_refine_turns == 1
    assert not verdict.continuable
    assert verdict.verified_prefix == verdict.turns


def test_t6_error_without_later_clean_dm_turn_does_not_count() -> None:
    def last_error_unrefined(turns: list) -> None:
        turns[5]["place_error"] = False  # DM 6 clean: only DM 2 is refined (by DM 4) ...
        turns[9]["logic_error"] = True  # ... and DM 10's error is never refined

    verdict = trajectory_verdict(last_error_unrefined)
    assert verdict.failure.rule == "T6"  # checked before T7
    assert verdict.error_refine_turns == 1


def test_t6_consecutive_errors_each_count() -> None:
    verdict = trajectory_verdict(lambda t: t[3].update(logic_error=True))  # DMs 2, 4, 6 before a clean 8
    assert verdict.ok
    assert verdict.error_refine_turns == 3


def test_t7_last_dm_turn_flagged() -> None:
    verdict = trajectory_verdict(lambda t: t[9].update(logic_error=True))
    assert (verdict.failure.rule, verdict.failure.turn) == ("T7", 10)
    assert not verdict.continuable and verdict.verified_prefix == verdict.turns


def test_t7_last_action_invalid() -> None:
    def end_invalid(turns: list) -> None:
        turns[8]["Action"] = "read ledger in hall"
        turns[9]["parameter_error"] = True  # consistent flag, so T4/T5 pass

    verdict = trajectory_verdict(end_invalid)
    assert (verdict.failure.rule, verdict.failure.turn) == ("T7", 9)


def test_t8_text_field_over_4_kib() -> None:
    verdict = trajectory_verdict(lambda t: t[3].update(Observation="é" * 2049))  # 4,098 bytes
    assert (verdict.failure.rule, verdict.failure.turn) == ("T8", 4)
    assert "4098 bytes" in verdict.failure.message
    assert not verdict.continuable
    assert trajectory_verdict(lambda t: t[3].update(Observation="é" * 2048)).ok  # exactly 4,096 bytes


def with_length(n_turns: int) -> list[dict]:
    """The valid trajectory stretched to ``n_turns`` turns with "look around" pairs before the end."""
    turns = make_trajectory()
    filler = [turn for n in range((n_turns - len(turns)) // 2) for turn in (player(0, "look around"), dm(0))]
    turns[-2:-2] = filler
    for n, turn in enumerate(turns, start=1):
        turn["turn"] = n
    return turns


def test_t8_more_than_60_turns() -> None:
    verdict = check_trajectory(as_text(with_length(62)), ACTIONS)
    assert len(verdict.turns) == 62
    assert (verdict.failure.rule, verdict.failure.turn) == ("T8", 61)
    assert not verdict.continuable
    assert check_trajectory(as_text(with_length(60)), ACTIONS).ok


# --- continuation -------------------------------------------------------------------------------


def test_continuation_numbered_after_prefix() -> None:
    turns = make_trajectory()
    verdict = check_trajectory(as_text(turns[6:]), ACTIONS, prefix=turns[:6])
    assert verdict.ok
    assert verdict.turns == turns
    assert verdict.error_refine_turns == 2


def test_continuation_that_resends_the_whole_trajectory() -> None:
    turns = make_trajectory()
    verdict = check_trajectory(as_text(turns), ACTIONS, prefix=turns[:6])
    assert verdict.ok
    assert verdict.turns == turns  # not prefix + everything again


def test_continuation_with_nothing_new() -> None:
    turns = make_trajectory()
    verdict = check_trajectory("[]", ACTIONS, prefix=turns)
    assert verdict.ok and verdict.turns == turns


def test_continuation_with_wrong_numbering_is_t3_after_the_prefix() -> None:
    turns = make_trajectory()
    renumbered = copy.deepcopy(turns[6:])
    for turn in renumbered:
        turn["turn"] += 2
    verdict = check_trajectory(as_text(renumbered), ACTIONS, prefix=turns[:6])
    assert (verdict.failure.rule, verdict.failure.turn) == ("T3", 7)
    assert verdict.verified_prefix == turns[:6] and verdict.continuable


def test_continuation_truncated_again() -> None:
    turns = make_trajectory()
    verdict = check_trajectory(cut_inside_turn(turns[4:], 4), ACTIONS, prefix=turns[:4])
    assert (verdict.failure.rule, verdict.failure.turn) == ("T1", 8)
    assert verdict.verified_prefix == turns[:6]
    assert verdict.continuable


def test_continuation_unparsable_reports_t1_after_the_prefix() -> None:
    turns = make_trajectory()
    verdict = check_trajectory("Sorry, I cannot continue.", ACTIONS, prefix=turns[:6])
    assert (verdict.failure.rule, verdict.failure.turn) == ("T1", 7)
    assert verdict.verified_prefix == turns[:6] and verdict.continuable


def test_prefix_is_checked_again() -> None:
    turns = make_trajectory()
    bad_prefix = copy.deepcopy(turns[:6])
    bad_prefix[3]["parameter_error"] = "no"
    verdict = check_trajectory(as_text(turns[6:]), ACTIONS, prefix=bad_prefix)
    assert (verdict.failure.rule, verdict.failure.turn) == ("T2", 4)


# --- messages -----------------------------------------------------------------------------------


def test_messages_are_single_short_lines() -> None:
    long_action = "go to\n" + "x" * 3000
    verdict = trajectory_verdict(lambda t: t[6].update(Action=long_action))
    message = verdict.failure.message
    assert verdict.failure.rule == "T4"
    assert "\n" not in message and len(message) < 600  # values are clipped to 120 characters
    assert "…" in message
