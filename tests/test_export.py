"""SPEC §5 conversion: roles, masking of erroneous assistant turns, hidden state not shown."""

from service.export import to_messages, to_sharegpt


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


def test_masks_exactly_the_erroneous_assistant_turns() -> None:
    turns = turn_pair(1, "opn door", "parameter_error") + turn_pair(3, "open window", "logic_error")
    turns += turn_pair(5, "open door", None)
    messages = to_messages(SCRIPT, turns)
    assert [m["role"] for m in messages] == ["system", "user"] + ["assistant", "user"] * 3
    assert [m["train"] for m in messages if m["role"] == "assistant"] == [False, False, True]
    assert messages[2]["content"] == "Thought: thought 1\nAction: opn door"
    assert messages[3]["content"] == "Observation: obs 2"
    assert "under mat" not in messages[0]["content"]
    assert "open {thing}: open something" in messages[0]["content"]
    assert "verification code" not in messages[0]["content"]


def test_sharegpt_variant_carries_loss_flags() -> None:
    messages = to_messages(SCRIPT, turn_pair(1, "x", "place_error") + turn_pair(3, "open door", None))
    conv = to_sharegpt(messages)
    assert [c["from"] for c in conv] == ["system", "human", "gpt", "human", "gpt", "human"]
    assert [c["loss"] for c in conv if c["from"] == "gpt"] == [False, True]
