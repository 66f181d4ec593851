"""Persona expansion (Persona Hub's persona-to-persona step) as a persona source.

Starting from the seed list, each persona is sent with the "who is in close relationship
with this persona?" prompt and its answer gives up to `count` new personas, which are
yielded and in turn expanded. Several expansions are in flight at once (the personas
stage's concurrency) and each answer is yielded as soon as it comes, so one slow or hung
request holds up only its own children, never the run.

Positions do not depend on timing: the seeds are 0..S-1 and child i of the persona at
position p is at S + p*count + i (its slot in a count-ary tree), so a persona's position
and text are the same on every pass (answers are cached by request). Items come out of
order, so each carries `cursor`: the highest position below which every item has already
been yielded. The store keeps that as the resume cursor; a resumed pass skips what lies at
or below it, and admission skips the few personas above it that were already taken (see
`service.admission`).

Only `FRONTIER_CAP` personas wait to be expanded at any time, lowest position first; once
the frontier is full, children are yielded without being kept for expansion, so memory
stays flat however many personas a run asks for. A persona whose children would lie past
MAX_POSITION (a model that keeps answering with one persona makes a very deep tree) is not
expanded.

Expansions in flight start at FIRST_EXPANSIONS and grow by one whenever the run asks for a
persona while none has answered (at most doubling per round trip), so on a slow provider (a
10 s answer for five personas) the source keeps up with the samples the endpoints can take;
the stage's `concurrency`, when set, caps them.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator

import orjson
import structlog

from llm import EndpointChain, RequestFailed
from pipeline.jsontext import strip_fence
from pipeline.prompts import render
from pipeline.settings import StageSettings
from pipeline.sources import Persona, clean_persona

log = structlog.get_logger()

FRONTIER_CAP = 4096  # personas waiting to be expanded, at most
FIRST_EXPANSIONS = 4  # expansions in flight at first; one more whenever the run waits for one
MAX_POSITION = 2**62  # positions are SQLite integers
SLOT_SCHEME = "slots-1"  # how positions are numbered; a resume checks it is unchanged


class PersonaExpander:
    def __init__(
        self,
        llm: EndpointChain,
        settings: StageSettings,
        count: int,
        seeds: list[str],
        frontier_cap: int = FRONTIER_CAP,
    ) -> None:
        self._llm = llm
        self._settings = settings
        self._count = count
        self._seeds = seeds
        self._frontier_cap = frontier_cap

    def _first_child(self, position: int) -> int:
        return len(self._seeds) + position * self._count

    async def personas(self, start_after: int = -1) -> AsyncIterator[Persona]:
        """The seeds, then expansions as they are answered; skips positions <= start_after."""
        frontier: list[tuple[int, str]] = []  # heap of (position, text) waiting to be expanded
        pending: dict[asyncio.Task[list[str]], int] = {}  # expansion -> its persona's position
        ceiling = self._settings.concurrency or self._frontier_cap
        parallel = min(FIRST_EXPANSIONS, ceiling)
        for position, seed in enumerate(self._seeds):
            heapq.heappush(frontier, (position, seed))
            if position > start_after:
                yield Persona(position, f"seed:{position}", seed, cursor=position)
        try:
            while True:
                while frontier and len(pending) < parallel:
                    position, text = heapq.heappop(frontier)
                    if self._first_child(position) + self._count <= MAX_POSITION:
                        pending[asyncio.create_task(self._expand(text))] = position
                if not pending:
                    return
                done = {task for task in pending if task.done()}
                if not done:  # the run waits for personas: expand more at once
                    parallel = min(ceiling, parallel + 1)
                    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=pending.__getitem__):
                    first = self._first_child(pending[task])
                    children = task.result()[: self._count]
                    for i, text in enumerate(children):
                        position = first + i
                        if len(frontier) < self._frontier_cap:
                            heapq.heappush(frontier, (position, text))
                        if position > start_after:
                            last = i == len(children) - 1
                            cursor = self._cursor(frontier, pending, task, None if last else position + 1)
                            yield Persona(position, f"expansion:{position}", text, cursor=cursor)
                    del pending[task]
        finally:
            for task in pending:
                task.cancel()

    def _cursor(
        self,
        frontier: list[tuple[int, str]],
        pending: dict[asyncio.Task[list[str]], int],
        current: asyncio.Task[list[str]],
        next_sibling: int | None,
    ) -> int:
        """The highest position below which every item has been yielded: one below the lowest
        position any item still to come can have (the rest of this answer's children, the
        children of expansions not yet handled and of personas waiting in the frontier)."""
        lowest = [self._first_child(p) for task, p in pending.items() if task is not current]
        if frontier:
            lowest.append(self._first_child(frontier[0][0]))
        if next_sibling is not None:
            lowest.append(next_sibling)
        return min(lowest) - 1 if lowest else MAX_POSITION

    async def _expand(self, persona: str) -> list[str]:
        messages = [
            {"role": "system", "content": render("persona_system")},
            {"role": "user", "content": render("persona_user", persona=persona, count=self._count)},
        ]
        try:
            completion = await self._llm.complete(
                messages,
                temperature=self._settings.temperature,
                max_tokens=self._settings.max_tokens,
                seed=0,
                stage="personas",
            )
        except RequestFailed as exc:
            log.warning("persona_expansion_failed", error=str(exc))
            return []
        return parse_personas(completion.content)


def parse_personas(content: str) -> list[str]:
    """The persona strings of an expansion answer (`{"personas": [...]}` or a bare list)."""
    try:
        data = orjson.loads(strip_fence(content))
    except orjson.JSONDecodeError:
        return []
    if isinstance(data, dict):
        data = data.get("personas")
    if not isinstance(data, list):
        return []
    cleaned = (clean_persona(p) for p in data if isinstance(p, str))
    return [p for p in cleaned if p]
