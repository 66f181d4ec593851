"""The prompt files: every one renders with the values its stage gives it; the worked example
of each stage passes every rule it shows (S1–S7, T1–T8, and the inverted T6 of the no-mistakes
mode); the Player is shown what the trained agent sees, not the DM's script."""

import re

import orjson

from pipeline.prompts import PROMPT_DIR, agent_view, example, render
from pipeline.rules import check_script, check_trajectory
from pipeline.script import script_messages
from pipeline.trajectory import Game, fresh_messages
from service.config import load_config
from tests.conftest import ROOT
from tests.service.test_export import SCRIPT

VALUES = {
    "persona": "p",
    "count": 5,
    "problems": "- T4: m",
    "script": "{}",
    "player_view": "v",
    "prefix": "[]",
    "last_turn": 2,
    "next_turn": 3,
    "environment": "{}",
    "goal": "g",
    "actions": "- a",
    "mistakes_policy": "m",
    "example_script": "{}",
    "example_trajectory": "{}",
}
PLACEHOLDER = re.compile(r"\$\{?[A-Za-z_]")


def test_every_prompt_file_renders() -> None:
    names = sorted(p.stem for p in PROMPT_DIR.glob("*.md"))
    assert len(names) >= 13
    for name in names:
        text = render(name, **VALUES)
        assert not PLACEHOLDER.search(text), name
    assert "anchor with ^ and $." in render("script_system", example_script="{}")


def test_the_worked_examples_pass_every_rule() -> None:
    script = check_script(example("script"))
    assert script.ok, script.failures
    assert 3 <= len(script.actions) <= 30 and "hidden information" in script.script["Environment"]
    trajectory = check_trajectory(example("trajectory"), script.actions)
    assert trajectory.ok, trajectory.failures
    assert trajectory.error_refine_turns >= 2
    clean = check_trajectory(example("trajectory_clean"), script.actions, refinement=False)
    assert clean.ok, clean.failures
    # each mode's example fails the other mode's T6
    assert [f.rule for f in check_trajectory(example("trajectory_clean"), script.actions).failures] == ["T6"]
    wrong = check_trajectory(example("trajectory"), script.actions, refinement=False)
    assert [f.rule for f in wrong.failures] == ["T6"] and "[6, 12]" in wrong.failures[0].message


def test_the_prompts_show_the_examples() -> None:
    system = script_messages("p", None)[0]["content"]
    assert example("script") in system and "verificationCode" not in system
    messages = fresh_messages(Game(SCRIPT, True), None)
    assert example("trajectory") in messages[0]["content"]
    clean = fresh_messages(Game(SCRIPT, False), None)
    assert example("trajectory_clean") in clean[0]["content"] and "no mistakes" in clean[0]["content"]
    assert "at least two realistic mistakes" not in clean[0]["content"]


def test_the_player_view_is_what_the_trained_agent_sees() -> None:
    user = fresh_messages(Game(SCRIPT, True), None)[1]["content"]
    view = user[user.index("<player_view>") + 14 : user.index("</player_view>") - 1]
    assert view == agent_view(SCRIPT)
    assert "under mat" not in view and "verification code" not in view
    assert orjson.dumps(SCRIPT, option=orjson.OPT_INDENT_2).decode() in user  # the DM's whole script


def test_stated_size_budgets_fit_the_token_caps() -> None:
    """The prompts' limits fit the shipped max_tokens at 3 characters a token (dense JSON)."""
    stages = load_config(ROOT / "config.yaml", []).stages
    assert "at most 32 KiB" in render("script_system", example_script="{}")
    assert stages.script.max_tokens >= 32 * 1024 / 3
    assert "at most 30 turns, each Thought and Observation under 500 characters" in render(
        "trajectory_system", **VALUES
    )
    overhead = 160  # keys, flags, turn numbers and the Action line of one turn, in characters
    assert 30 * (500 + overhead) / 3 <= stages.trajectory.max_tokens
