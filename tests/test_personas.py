"""Persona files: JSONL and plain text; malformed lines are reported with file:line. Persona
expansion: a bounded frontier, the same order on every pass."""

import asyncio
from pathlib import Path

import pytest

from metrics.stats import RunStats
from service.config import Endpoint, Stage
from service.personas import Malformed, Persona, PersonaInputError, read_persona_file, seed_personas
from service.store import Store
from tests.conftest import FAST_SIM, simulator
from workers.fallback import EndpointChain
from workers.llm import LLMClient
from workers.personas import PersonaExpander

SEEDS = ["A night-shift nurse", "A retired ferry captain", "A beekeeper with forty hives"]


def test_jsonl_keeps_metadata_and_reports_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        b'{"persona": "A baker", "lang": "en"}\n'
        b"\n"
        b"{not json\n"
        b'{"name": "no persona key"}\n'
        b'["a list"]\n'
        b'{"persona": "  A   chef  "}\n'
        b"\xff\xfe binary\n"
    )
    items = list(read_persona_file(path))
    personas = [i for i in items if isinstance(i, Persona)]
    bad = [i for i in items if isinstance(i, Malformed)]
    assert [(p.position, p.text, p.meta) for p in personas] == [
        (1, "A baker", {"lang": "en"}),
        (6, "A chef", {}),
    ]
    assert [b.source for b in bad] == [f"{path}:3", f"{path}:4", f"{path}:5", f"{path}:7"]
    assert bad[0].reason.startswith("invalid JSON")
    assert "persona" in bad[1].reason
    assert "UTF-8" in bad[3].reason


def test_plain_text_and_resume_cursor(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("first persona\nsecond persona\nthird persona\n")
    assert [p.text for p in read_persona_file(path, start_after=1)] == ["second persona", "third persona"]


def test_overlong_line_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("ok persona\n" + "x" * 70_000 + "\n")
    items = list(read_persona_file(path))
    assert isinstance(items[1], Malformed) and "bytes" in items[1].reason


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(PersonaInputError, match=r"nope.jsonl: cannot open persona file"):
        list(read_persona_file(tmp_path / "nope.jsonl"))


def test_seed_list_is_distinct() -> None:
    seeds = seed_personas()
    assert len(seeds) >= 40 and len(set(seeds)) == len(seeds)


def test_expansion_with_a_full_frontier_goes_on_in_the_same_order(tmp_path: Path) -> None:
    # a frontier of 4 fills after the first expansion: from then on each expansion keeps one
    # child for expanding and yields the rest; the order is the same on every (resumed) pass
    async def take(url: str, start_after: int, count: int) -> list[Persona]:
        store = Store(tmp_path / "db")
        client = LLMClient(Endpoint(model="sim-gpt-4o", name="sim", base_url=url), url, store, RunStats(1))
        expander = PersonaExpander(EndpointChain([client]), Stage(concurrency=3), 5, SEEDS, frontier_cap=4)
        out: list[Persona] = []
        async for persona in expander.personas(start_after):
            out.append(persona)
            if len(out) == count:
                break
        await client.aclose()
        store.close()
        return out

    with simulator(FAST_SIM) as url:
        first = asyncio.run(take(url, -1, 150))
        resumed = asyncio.run(take(url, 99, 50))
    assert [p.position for p in first] == list(range(150))
    assert [p.text for p in first[:3]] == SEEDS
    assert resumed == first[100:]
    assert len({p.text for p in first}) > 140  # fresh personas, not one lineage repeated
