"""Real models' typical mistakes (seen with a small instruct model and in DeepSeek/GPT-4o
answers): renamed keys, type specs instead of value lists, two actions in one Action, a pattern
that does not match its own filled template, a trajectory that ends on a Player turn. Each
answer's feedback names every problem at once, with the offending keys and values, so one
regeneration can fix them all; the first problem's rule id is the one counted."""

from __future__ import annotations

import copy
import json
from typing import Any

from pipeline.prompts import example
from pipeline.rules import check_script, check_trajectory, feedback
from pipeline.script import script_messages
from pipeline.trajectory import Game, continue_messages, fresh_messages

SCRIPT: dict[str, Any] = json.loads(example("script"))
TRAJECTORY: list[dict[str, Any]] = json.loads(example("trajectory"))["trajectory"]
ACTIONS = check_script(example("script")).actions


def script_with(change: Any) -> dict[str, Any]:
    script = copy.deepcopy(SCRIPT)
    change(script)
    return script


def problems(script: dict[str, Any]) -> tuple[list[str], str]:
    verdict = check_script(json.dumps(script))
    assert not verdict.ok
    return [f.rule for f in verdict.failures], feedback(verdict.failures)


def test_renamed_keys_are_named_with_the_right_spelling() -> None:
    def rename(script: dict[str, Any]) -> None:
        script["completion_conditions"] = script.pop("Completion Conditions")
        for spec in script["Available Actions"].values():
            spec["verificationCode"] = spec.pop("verification code")

    rules, text = problems(script_with(rename))
    assert rules == ["S2", "S5", "S5", "S5", "S5"]
    assert '"completion_conditions" where "Completion Conditions" is expected' in text
    for template in SCRIPT["Available Actions"]:
        assert f'action "{template}" has key "verificationCode" where "verification code" is expected' in text


def test_type_specs_instead_of_value_lists() -> None:
    def typed(script: dict[str, Any]) -> None:
        for spec in script["Available Actions"].values():
            spec["parameters"] = {name: ["string", 1] for name in spec["parameters"]}

    rules, text = problems(script_with(typed))
    assert rules == ["S4"] * 5  # one per placeholder: place, container, item, container, item
    for template, spec in SCRIPT["Available Actions"].items():
        for name in spec["parameters"]:
            assert f'action "{template}": "{name}" must be a non-empty list of the allowed values' in text
    assert text.count('got ["string", 1] (a type description, not values') == 5
    # numbers are not a type spec: the message asks for strings without the type hint
    numbers = script_with(
        lambda s: s["Available Actions"]["go to {place}"]["parameters"].update(place=[1, 2])
    )
    rules, text = problems(numbers)
    assert rules == ["S4"] and "got [1, 2]" in text and "type description" not in text


def test_several_problems_of_one_script_are_all_named() -> None:
    def break_three(script: dict[str, Any]) -> None:
        actions = script["Available Actions"]
        actions["go to {place}"]["verificationCode"] = actions["go to {place}"].pop("verification code")
        actions["search {container}"]["parameters"]["container"] = ["string", 1]
        actions["record {item}"]["verification code"] = r"^\s*write\s+(.+?)\s*$"  # not its own verb
        script["Goal"] = ""

    verdict = check_script(json.dumps(script_with(break_three)))
    assert [f.rule for f in verdict.failures] == ["S2", "S5", "S4", "S6"]
    assert verdict.failure.rule == "S2"  # the one counted in metrics and rejects
    text = feedback(verdict.failures)
    assert text.splitlines()[0] == '- S2: "Goal" must be a non-empty string'
    assert '"verificationCode" where "verification code" is expected' in text
    assert 'got ["string", 1] (a type description' in text
    assert 'action "record {item}": its verification code does not match the filled-in command ' in text
    assert '"record Elm Street permit"' in text
    # the regeneration request carries every line
    request = script_messages("p", ("{...}", verdict.failures))
    assert all(line in request[-1]["content"] for line in text.splitlines())


def test_pattern_that_does_not_match_its_own_template() -> None:
    def wrong(script: dict[str, Any]) -> None:
        script["Available Actions"]["take {item} from {container}"]["verification code"] = (
            r"^\s*take\s+(.+?)\s+out of\s+(.+?)\s*$"
        )

    rules, text = problems(script_with(wrong))
    assert rules == ["S6"]
    assert '"take Elm Street permit from box 12"' in text


def turns_with(change: Any) -> str:
    turns = copy.deepcopy(TRAJECTORY)
    change(turns)
    return json.dumps({"trajectory": turns})


def test_two_actions_in_one_and_an_end_on_a_player_turn() -> None:
    def spoil(turns: list[dict[str, Any]]) -> None:
        turns[8]["Action"] = "take Elm Street permit from box 12 and go to front desk"  # unflagged
        del turns[-1]  # ends on the Player's last action
        for dm in turns[11:12]:
            dm["place_error"] = False  # the place error at turn 12 is gone: one error-refine turn

    verdict = check_trajectory(turns_with(spoil), ACTIONS)
    assert [(f.rule, f.turn) for f in verdict.failures] == [("T4", 9), ("T3", 15), ("T6", None)]
    text = feedback(verdict.failures)
    assert (
        'turn 9 action "take Elm Street permit from box 12 and go to front desk" is invalid (it is 2 actions '
        'in one (["take Elm Street permit from box 12", "go to front desk"]); one action per Player turn)'
    ) in text
    assert "the last turn (15) is a Player turn" in text
    assert "1 error-refine turn(s)" in text
    # continued from the verified prefix (turns 1-8), with every problem named
    request = continue_messages(Game(SCRIPT, True), verdict.verified_prefix, verdict.failures)
    assert len(verdict.verified_prefix) == 8
    assert all(line in request[-1]["content"] for line in text.splitlines())


def test_a_trajectory_ending_on_a_player_turn_alone() -> None:
    verdict = check_trajectory(turns_with(lambda turns: turns.pop()), ACTIONS)
    assert [f.rule for f in verdict.failures] == ["T3"]
    request = fresh_messages(Game(SCRIPT, True), ("[...]", verdict.failures))
    assert "- T3: the last turn (15) is a Player turn" in request[-1]["content"]


def test_independent_turn_problems_are_all_named() -> None:
    def spoil(turns: list[dict[str, Any]]) -> None:
        turns[2]["Inventory"] = []  # T2 at turn 3 (its pair is not judged)
        turns[9]["parameter_error"] = True  # T5: a valid action flagged at turn 10
        turns[13]["Observation"] = "x" * 5000  # T8 at turn 14

    verdict = check_trajectory(turns_with(spoil), ACTIONS)
    assert [(f.rule, f.turn) for f in verdict.failures] == [("T2", 3), ("T5", 9), ("T8", 14)]
    assert len(verdict.verified_prefix) == 2  # the prefix still ends before the first problem
