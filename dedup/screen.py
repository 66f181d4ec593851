"""Async dedup of one kind: embed what the exact check cannot decide, then decide, both off
the event loop.

`Deduplicator.screen` takes a whole batch (the persona admission batches its source).
`CoalescingScreen.check` takes one candidate at a time from many concurrent callers (script
workers) and screens whatever has queued up together, in arrival order, so embedding still
runs in batches; `on_kept` records each new item before its caller hears the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import numpy as np

from dedup.embedder import Embedder
from dedup.near import Candidate, DedupSet, Verdict


class Deduplicator:
    def __init__(self, dedup_set: DedupSet, embedder: Embedder) -> None:
        self.set = dedup_set
        self._embedder = embedder

    async def screen(self, batch: Sequence[Candidate]) -> list[Verdict]:
        """Verdicts in batch order; the caller `keep`s the new items it admits. A candidate that
        carries its vector (embedded by a cluster worker) is not embedded again."""
        positions = self.set.needs_vector(batch)
        if not positions:
            return await asyncio.to_thread(self.set.screen, batch, np.zeros((0, 0), dtype=np.float32))
        to_embed = [i for i in positions if batch[i].vector is None]  # the rest came embedded
        embedded = iter(await self._embedder.embed([batch[i].text for i in to_embed]) if to_embed else ())
        vectors = np.stack(
            [next(embedded) if batch[i].vector is None else batch[i].vector for i in positions]
        )
        return await asyncio.to_thread(self.set.screen, batch, vectors)

    def keep(self, candidate: Candidate, verdict: Verdict) -> None:
        assert verdict.vector is not None
        self.set.add(candidate.id, candidate.digest, verdict.vector)


class CoalescingScreen:
    def __init__(
        self,
        deduplicator: Deduplicator,
        on_kept: Callable[[Candidate, Verdict], None],
        max_batch: int,
    ) -> None:
        self.deduplicator = deduplicator
        self._on_kept = on_kept
        self._max_batch = max_batch
        self._waiting: list[tuple[Candidate, asyncio.Future[Verdict]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def check(self, candidate: Candidate) -> Verdict:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"dedup-{self.deduplicator.set.kind}")
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._waiting.append((candidate, future))
        self._wake.set()
        return await future

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
                try:
                    verdicts = await self.deduplicator.screen([candidate for candidate, _ in batch])
                except Exception as exc:  # every waiting caller hears of it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (candidate, future), verdict in zip(batch, verdicts, strict=True):
                    if verdict.duplicate_of is None and not verdict.replay:
                        self._on_kept(candidate, verdict)
                    if not future.done():
                        future.set_result(verdict)
