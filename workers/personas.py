"""Persona expansion (Persona Hub's persona-to-persona step) as an ordered persona source.

Starting from the seed list, each persona is sent with the "who is in close relationship
with this persona?" prompt and its answer adds `count` new personas to the end of the
queue (breadth first). Every persona is yielded, but only `FRONTIER_CAP` of them wait to be
expanded at any time: once the frontier is full, a child is kept for expansion only where
an expansion freed a place (the others are yielded and forgotten), so memory stays flat
however many personas a run asks for (breadth first over the first levels, then about
FRONTIER_CAP lineages side by side). Items come out in a fixed order whatever the timing of
the requests, so a resumed run regenerates the same sequence from cached answers for free.

Expansions in flight start at FIRST_EXPANSIONS and grow by one whenever the run asks for a
persona before the oldest expansion has answered (at most doubling per round trip), so on a
slow provider (a 10 s answer for five personas) the source keeps up with the samples the
endpoints can take; the stage's `concurrency`, when set, caps them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import orjson
import structlog

from service.config import Stage
from service.personas import Persona
from workers.fallback import EndpointChain
from workers.jsontext import strip_fence
from workers.llm import RequestFailed
from workers.prompts import render

log = structlog.get_logger()

FRONTIER_CAP = 4096  # personas waiting to be expanded, at most
FIRST_EXPANSIONS = 4  # expansions in flight at first; one more whenever the run waits for one


class PersonaExpander:
    def __init__(
        self,
        llm: EndpointChain,
        settings: Stage,
        count: int,
        seeds: list[str],
        frontier_cap: int = FRONTIER_CAP,
    ) -> None:
        self._llm = llm
        self._settings = settings
        self._count = count
        self._seeds = seeds
        self._frontier_cap = frontier_cap

    async def personas(self, start_after: int = -1) -> AsyncIterator[Persona]:
        """Seeds first, then their expansions, breadth first; positions from 0."""
        frontier: deque[str] = deque()
        pending: deque[asyncio.Task[list[str]]] = deque()
        ceiling = self._settings.concurrency or self._frontier_cap
        parallel = min(FIRST_EXPANSIONS, ceiling)
        position = 0
        for seed in self._seeds:
            frontier.append(seed)
            if position > start_after:
                yield Persona(position, f"seed:{position}", seed)
            position += 1
        try:
            while frontier or pending:
                while frontier and len(pending) < parallel:
                    pending.append(asyncio.create_task(self._expand(frontier.popleft())))
                oldest = pending.popleft()
                if not oldest.done():  # the run waits for personas: expand more at once
                    parallel = min(ceiling, parallel + 1)
                for text in await oldest:
                    if len(frontier) < self._frontier_cap:
                        frontier.append(text)
                    if position > start_after:
                        yield Persona(position, f"expansion:{position}", text)
                    position += 1
        finally:
            for task in pending:
                task.cancel()

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
    return [" ".join(p.split()) for p in data if isinstance(p, str) and p.strip()]
