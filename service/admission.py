"""Admission: which personas become samples.

Unfinished samples of an earlier run come first (their answers are cached, so replaying
them costs nothing). Then the persona source continues after the stored cursor, in batches
of what it has ready (`service.batches`), so the embedder works on many personas at once.
Each batch is screened by persona dedup (exact hash, then embedding similarity to every
persona admitted so far and to earlier ones of the batch) and then handled in source order,
one persona at a time, as the job queue asks for work: a malformed line is rejected with its
file:line reason (or stops the run in strict mode), a duplicate is rejected naming the
sample it duplicates and the similarity, and every other persona is admitted as a new sample
(its embedding stored in the same transaction). The stored cursor therefore only ever passes
personas whose outcome is stored. A source whose items come out of order (persona expansion)
may have taken some personas above the cursor before a crash: a resumed run skips those.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable

import structlog

from dedup.exact import text_hash
from dedup.near import Candidate
from dedup.screen import Deduplicator
from pipeline.job import SampleJob
from pipeline.sources import Malformed, Persona, PersonaInputError, SourceItem
from service.batches import ready_batches
from service.recorder import Recorder
from service.store import Store

log = structlog.get_logger()


def sample_id(run_seed: int, norm_hash: str) -> str:
    return "s" + hashlib.sha256(f"{run_seed}:{norm_hash}".encode()).hexdigest()[:15]


class Admission:
    def __init__(
        self,
        store: Store,
        recorder: Recorder,
        run_seed: int,
        strict: bool,
        dedup: Deduplicator,
        batch_size: int,
    ) -> None:
        self._store = store
        self._recorder = recorder
        self._seed = run_seed
        self._strict = strict
        self._dedup = dedup
        self._batch_size = batch_size

    async def jobs(self, source: Callable[[int], AsyncIterator[SourceItem]]) -> AsyncIterator[SampleJob]:
        """Pending samples, then new ones from `source(start_after=cursor)`."""
        for pending in self._store.pending():
            yield SampleJob(
                pending.id, pending.position, pending.source, pending.persona, pending.persona_meta
            )
        cursor = self._store.cursor()
        taken = self._store.consumed_after(cursor)
        batches = ready_batches(source(cursor), self._batch_size)
        async with contextlib.aclosing(batches):
            async for ready in batches:
                batch = [item for item in ready if item.position not in taken]
                candidates = [self._candidate(item) for item in batch if isinstance(item, Persona)]
                screened = iter(zip(candidates, await self._dedup.screen(candidates), strict=True))
                for item in batch:
                    if isinstance(item, Malformed):
                        self._malformed(item)
                        continue
                    candidate, verdict = next(screened)
                    if verdict.duplicate_of is not None:
                        self._duplicate(item, verdict.duplicate_of, verdict.similarity)
                        continue
                    assert verdict.vector is not None
                    self._store.admit(
                        candidate.id,
                        item.position,
                        item.source,
                        item.text,
                        item.meta,
                        candidate.digest,
                        verdict.vector.tobytes(),
                        item.resume_after(),
                    )
                    self._dedup.keep(candidate, verdict)
                    yield SampleJob(candidate.id, item.position, item.source, item.text, item.meta)

    def _candidate(self, persona: Persona) -> Candidate:
        digest = text_hash(persona.text)
        return Candidate(sample_id(self._seed, digest), digest, persona.text)

    def _malformed(self, item: Malformed) -> None:
        if self._strict:
            raise PersonaInputError(f"{item.source}: {item.reason}")
        log.warning("persona_line_skipped", where=item.source, reason=item.reason)
        record = {"kind": "malformed", "rule": "malformed", "source": item.source, "message": item.reason}
        self._recorder.input_rejected(item.position, "malformed", "malformed", record, item.resume_after())

    def _duplicate(self, item: Persona, duplicate_of: str, similarity: float) -> None:
        record = {
            "kind": "duplicate",
            "rule": "persona_duplicate",
            "source": item.source,
            "persona": item.text,
            "duplicate_of": duplicate_of,
            "similarity": round(similarity, 4),
        }
        self._recorder.input_rejected(
            item.position, "duplicate", "persona_duplicate", record, item.resume_after()
        )
