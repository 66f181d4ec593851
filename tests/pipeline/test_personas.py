"""Persona files: JSONL and plain text; malformed lines are reported with file:line. Persona
expansion: a bounded frontier, the same order on every pass."""

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web

from llm import Endpoint, EndpointChain, LLMClient
from pipeline.expansion import PersonaExpander
from pipeline.settings import StageSettings
from pipeline.sources import Malformed, Persona, PersonaInputError, read_persona_file, seed_personas
from service.store import Store, StoreCache
from tests.conftest import FAST_SIM, simulator
from tests.loopback import Loopback, is_expansion, loopback

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


async def expand(
    url: str, db: Path, start_after: int, count: int, frontier_cap: int = 4, concurrency: int = 3
) -> list[Persona]:
    """The first `count` personas the expander yields after `start_after`."""
    store = Store(db)
    client = LLMClient(Endpoint(model="sim-gpt-4o", name="sim", base_url=url), cache=StoreCache(store))
    stage = StageSettings(concurrency=concurrency)
    expander = PersonaExpander(EndpointChain([client]), stage, 5, SEEDS, frontier_cap=frontier_cap)
    out: list[Persona] = []
    async for persona in expander.personas(start_after):
        out.append(persona)
        if len(out) == count:
            break
    await client.aclose()
    store.close()
    return out


def test_expansion_positions_do_not_depend_on_timing_and_a_resume_takes_nothing_twice(
    tmp_path: Path,
) -> None:
    # answers come in any order, so the order of the personas varies; a position always holds
    # the same persona, and every item's cursor has every position below it already yielded
    with simulator({**FAST_SIM, "latency_sigma": 1.0}) as url:
        first = asyncio.run(expand(url, tmp_path / "a", -1, 150))
        again = asyncio.run(expand(url, tmp_path / "b", -1, 150))
        taken = first[:100]
        cursor = max(p.resume_after() for p in taken)  # what the store keeps
        above = {p.position for p in taken if p.position > cursor}  # admission skips these
        resumed = asyncio.run(expand(url, tmp_path / "a", cursor, 60))
    assert [p.text for p in first[:3]] == SEEDS
    by_position = {p.position: p.text for p in first}
    assert all(by_position[p.position] == p.text for p in again + resumed if p.position in by_position)
    for index, item in enumerate(first):
        later = {p.position for p in first[index + 1 :]}
        assert not [p for p in later if p <= item.resume_after()], "an item below the cursor came later"
    fresh = [p for p in resumed if p.position not in above]
    assert fresh and not {p.position for p in fresh} & {p.position for p in taken}
    assert len({p.text for p in first}) > 140  # fresh personas, not one lineage repeated


def test_one_hung_expansion_holds_up_only_its_own_children(tmp_path: Path) -> None:
    hung: list[float] = []

    async def hang_the_first_expansion(server: Loopback, request: web.Request, body: bytes) -> web.Response:
        if is_expansion(body) and not hung:
            hung.append(time.monotonic())
            await asyncio.sleep(3600)
        return await server.forward(request, body, sim)

    with simulator(FAST_SIM) as sim, loopback(hang_the_first_expansion) as server:
        items = asyncio.run(expand(server.url, tmp_path / "db", -1, 200, frontier_cap=4096, concurrency=4))
    assert hung and len(items) == 200  # yielded while the first expansion hung
    first_seed_children = range(len(SEEDS), len(SEEDS) + 5)
    assert not [p for p in items if p.position in first_seed_children]
    assert max(p.resume_after() for p in items) < len(SEEDS)  # a resume would take them up
