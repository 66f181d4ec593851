"""Admission: which personas become samples.

Unfinished samples of an earlier run come first (their answers are cached, so replaying
them costs nothing). Then the persona source continues after the stored cursor: a
malformed line is rejected with its file:line reason (or stops the run in strict mode),
an exact duplicate of an admitted persona is rejected naming the sample it duplicates,
and every other persona is admitted as a new sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable

import structlog

from dedup.exact import ExactDedup, text_hash
from metrics.stats import RunStats
from service.personas import Malformed, Persona, PersonaInputError, SourceItem
from service.store import Store
from workers.sample import SampleJob

log = structlog.get_logger()


def sample_id(run_seed: int, norm_hash: str) -> str:
    return "s" + hashlib.sha256(f"{run_seed}:{norm_hash}".encode()).hexdigest()[:15]


class Admission:
    def __init__(
        self,
        store: Store,
        stats: RunStats,
        run_seed: int,
        strict: bool,
        on_reject: Callable[[dict[str, object]], None],
    ) -> None:
        self._store = store
        self._stats = stats
        self._seed = run_seed
        self._strict = strict
        self._on_reject = on_reject
        self._dedup = ExactDedup(store.known_hashes())

    async def jobs(self, source: Callable[[int], AsyncIterator[SourceItem]]) -> AsyncIterator[SampleJob]:
        """Pending samples, then new ones from `source(start_after=cursor)`."""
        for pending in self._store.pending():
            yield SampleJob(
                pending.id, pending.position, pending.source, pending.persona, pending.persona_meta
            )
        async for item in source(self._store.cursor()):
            if isinstance(item, Malformed):
                self._malformed(item)
                continue
            job = self._admit(item)
            if job is not None:
                yield job

    def _malformed(self, item: Malformed) -> None:
        if self._strict:
            raise PersonaInputError(f"{item.source}: {item.reason}")
        log.warning("persona_line_skipped", where=item.source, reason=item.reason)
        record = {"kind": "malformed", "rule": "malformed", "source": item.source, "message": item.reason}
        self._store.reject_input(item.position, "malformed", record)
        self._stats.malformed += 1
        self._on_reject(record)

    def _admit(self, item: Persona) -> SampleJob | None:
        digest = text_hash(item.text)
        first = self._dedup.first(digest)
        if first is not None:
            record = {
                "kind": "duplicate",
                "rule": "duplicate",
                "source": item.source,
                "persona": item.text,
                "duplicate_of": first,
                "similarity": 1.0,
            }
            self._store.reject_input(item.position, "duplicate", record)
            self._stats.duplicates += 1
            self._on_reject(record)
            return None
        sid = sample_id(self._seed, digest)
        self._store.admit(sid, item.position, item.source, item.text, item.meta, digest)
        self._dedup.add(digest, sid)
        return SampleJob(sid, item.position, item.source, item.text, item.meta)
