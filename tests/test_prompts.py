"""Every prompt file renders with the values its stage gives it (a stray `$` would not)."""

from workers.prompts import PROMPT_DIR, render

VALUES = {
    "persona": "p",
    "count": 5,
    "rule": "T4",
    "message": "m",
    "script": "{}",
    "prefix": "[]",
    "last_turn": 2,
    "next_turn": 3,
    "environment": "{}",
    "goal": "g",
    "actions": "- a",
}


def test_every_prompt_file_renders() -> None:
    names = sorted(p.stem for p in PROMPT_DIR.glob("*.md"))
    assert len(names) >= 11
    for name in names:
        text = render(name, **VALUES)
        assert "$" not in text.replace("$;", ""), name
    assert "^ and $;" in render("script_system")
