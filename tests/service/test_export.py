"""SPEC §5 conversion and the trainer formats: roles, the loss masks of the paper and of its
ablations, the final assistant turn last, hidden state not shown, one row per trained turn
where a trainer has no per-turn flag."""

import pytest

from service.export import MASKS, to_messages, to_sharegpt, train_flags, training_record
from service.formats import rows


def turn_pair(n: int, action: str, flag: str | None) -> list[dict]:
    flags = {"parameter_error": False, "place_error": False, "logic_error": False}
    if flag:
        flags[flag] = True
    return [
        {"turn": n, "role": "Player", "Thought": f"thought {n}", "Action": action},
        {"turn": n + 1, "role": "DM", "Thought": "dm", "Observation": f"obs {n + 1}", **flags},
    ]


SCRIPT = {
    "Environment": {"locations": ["hall"], "hidden information": {"key": "under mat"}},
    "Goal": "Open the door.",
    "Completion Conditions": ["door open"],
    "Available Actions": {"open {thing}": {"description": "open something"}},
}
# ok, error, refinement, error, error, refinement, ok (final)
FLAGS = [None, "parameter_error", None, "logic_error", "place_error", None, None]
TURNS = [t for i, flag in enumerate(FLAGS) for t in turn_pair(2 * i + 1, f"act {i}", flag)]
RECORD = {"id": "s1", "persona": "p", "script": SCRIPT, "trajectory": TURNS}


def test_masks_exactly_the_erroneous_assistant_turns() -> None:
    turns = turn_pair(1, "opn door", "parameter_error") + turn_pair(3, "open window", "logic_error")
    turns += turn_pair(5, "open door", None)
    messages = to_messages(SCRIPT, turns)
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert [m["train"] for m in messages] == [False, False, False, False, False, False, True]
    assert messages[2]["content"] == "Thought: thought 1\nAction: opn door"
    assert messages[3]["content"] == "Observation: obs 2"
    assert messages[-1]["content"] == "Thought: thought 5\nAction: open door"  # the final observation is not
    assert "obs 6" not in str(messages)
    assert "under mat" not in messages[0]["content"]
    assert "open {thing}: open something" in messages[0]["content"]
    assert "verification code" not in messages[0]["content"]


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        ("paper", [True, False, True, False, False, True, True]),
        ("no-refinement-loss", [True, False, False, False, False, False, True]),
        ("erroneous-loss", [True] * 7),
    ],
)
def test_ablation_masks(mask: str, expected: list[bool]) -> None:
    assert train_flags(TURNS, mask) == expected
    messages = to_messages(SCRIPT, TURNS, mask)
    assert [m["train"] for m in messages if m["role"] == "assistant"] == expected
    assert not any(m["train"] for m in messages if m["role"] != "assistant")


def test_training_record_has_one_fixed_schema() -> None:
    line = training_record(RECORD)
    assert list(line) == ["id", "persona", "messages"]
    assert all(list(m) == ["role", "content", "train"] for m in line["messages"])


def test_sharegpt_variant_carries_loss_flags() -> None:
    messages = to_messages(SCRIPT, turn_pair(1, "x", "place_error") + turn_pair(3, "open door", None))
    conv = to_sharegpt(messages)
    assert [c["from"] for c in conv] == ["system", "human", "gpt", "human", "gpt"]
    assert [c["loss"] for c in conv if c["from"] == "gpt"] == [False, True]


@pytest.mark.parametrize("mask", MASKS)
def test_trl_rows_complete_exactly_the_trained_turns(mask: str) -> None:
    messages = to_messages(SCRIPT, TURNS, mask)
    trained = [m["content"] for m in messages if m["train"]]
    made = rows(RECORD, "trl", mask)
    assert [r["completion"] for r in made] == [[{"role": "assistant", "content": c}] for c in trained]
    for row in made:  # the prompt is the whole history before the turn, erroneous turns included
        n = len(row["prompt"])
        assert row["prompt"] == [{"role": m["role"], "content": m["content"]} for m in messages[:n]]
        assert row["prompt"][-1]["role"] == "user"


@pytest.mark.parametrize("mask", MASKS)
def test_llamafactory_rows_end_on_each_trained_turn_and_pair_up(mask: str) -> None:
    messages = to_messages(SCRIPT, TURNS, mask)
    made = rows(RECORD, "llamafactory", mask)
    assert [r["conversations"][-1]["value"] for r in made] == [m["content"] for m in messages if m["train"]]
    for row in made:
        after_system = row["conversations"][1:]
        assert len(after_system) % 2 == 0  # LLaMA-Factory drops a row whose turns do not pair up
        assert [t["from"] for t in after_system] == ["human", "gpt"] * (len(after_system) // 2)
