"""One dedup kind's memory and its decisions: exact hash first, then cosine similarity.

A `DedupSet` holds the kept items of one kind (personas, or scripts): their normalized-text
digests, their vectors in a `VectorIndex`, and the id that owns each (a sample id). `screen`
decides a batch in arrival order, as if the items had come one at a time:

1. the digest of a kept item, or of an earlier item of the batch: a duplicate (similarity 1);
2. otherwise the most similar kept item, or earlier *kept* item of the same batch, at or above
   the threshold: a duplicate of that item;
3. otherwise the item is new; the caller keeps it with `add` once it is admitted.

Each candidate carries the id it is kept under (a sample id). With `own=True` (a sample checking
its script) entries of that id belong to the candidate itself: they are never its duplicates,
and its own digest is a replay (after a resume), not news.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dedup.index import VectorIndex


@dataclass(frozen=True)
class Candidate:
    """`vector`: the text's embedding when it was embedded where the candidate was made (a
    cluster worker embeds its scripts; the run's one index screens them)."""

    id: str
    digest: str
    text: str
    own: bool = False
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Verdict:
    """`duplicate_of` names the kept item this one repeats (None: new or replayed)."""

    duplicate_of: str | None
    similarity: float
    vector: np.ndarray | None = None
    replay: bool = False


class DedupSet:
    def __init__(self, kind: str, index: VectorIndex, threshold: float, k: int = 1) -> None:
        self.kind = kind
        self.threshold = threshold
        self._index = index
        self._k = k  # neighbours searched: more than the entries one owner can hold
        self._digests: dict[str, str] = {}
        self._owners: list[str] = []  # index row -> owner

    def __len__(self) -> int:
        return len(self._owners)

    def add(self, owner: str, digest: str, vector: np.ndarray) -> None:
        self._digests.setdefault(digest, owner)
        self._owners.append(owner)
        self._index.add(vector.reshape(1, -1))

    def add_many(self, owners: Sequence[str], digests: Sequence[str], vectors: np.ndarray) -> None:
        """Rebuild from stored entries (in their original order)."""
        for owner, digest in zip(owners, digests, strict=True):
            self._digests.setdefault(digest, owner)
        self._owners.extend(owners)
        if len(owners):
            self._index.add(vectors)

    def needs_vector(self, batch: Sequence[Candidate]) -> list[int]:
        """Positions of the candidates that the exact check cannot decide (to be embedded)."""
        seen: set[str] = set()
        out = []
        for i, candidate in enumerate(batch):
            if candidate.digest not in self._digests and candidate.digest not in seen:
                out.append(i)
            seen.add(candidate.digest)
        return out

    def screen(self, batch: Sequence[Candidate], vectors: np.ndarray) -> list[Verdict]:
        """Decide `batch` in order; `vectors` holds one row per `needs_vector` position."""
        positions = self.needs_vector(batch)
        row_of = {pos: row for row, pos in enumerate(positions)}
        sims, hits = self._index.search(vectors, self._k) if len(positions) else (None, None)
        gram = vectors @ vectors.T
        kept: list[tuple[int, str]] = []  # (row of `vectors`, id) kept so far in this batch
        by_digest: dict[str, tuple[str, Verdict]] = {}  # first of each digest in the batch
        verdicts: list[Verdict] = []
        for pos, candidate in enumerate(batch):
            verdict = self._exact(candidate, by_digest)
            if verdict is None:
                row = row_of[pos]
                verdict = self._nearest(candidate, sims[row], hits[row])  # type: ignore[index]
                for other, other_id in kept:
                    similarity = float(gram[row, other])
                    if similarity > verdict.similarity and not (candidate.own and other_id == candidate.id):
                        verdict = Verdict(other_id, similarity)
                if verdict.similarity < self.threshold:
                    verdict = Verdict(None, verdict.similarity, vectors[row])
                    kept.append((row, candidate.id))
            by_digest.setdefault(candidate.digest, (candidate.id, verdict))
            verdicts.append(verdict)
        return verdicts

    def _exact(self, candidate: Candidate, by_digest: dict[str, tuple[str, Verdict]]) -> Verdict | None:
        owner = self._digests.get(candidate.digest)
        if owner is not None:
            replay = candidate.own and owner == candidate.id
            return Verdict(None if replay else owner, 1.0, replay=replay)
        if candidate.digest not in by_digest:
            return None
        first_id, first = by_digest[candidate.digest]
        return first if first.duplicate_of is not None else Verdict(first_id, 1.0)

    def _nearest(self, candidate: Candidate, sims: np.ndarray, hits: np.ndarray) -> Verdict:
        for similarity, row in zip(sims, hits, strict=True):
            if row < 0:
                break
            owner = self._owners[row]
            if not (candidate.own and owner == candidate.id):
                return Verdict(owner, float(similarity))
        return Verdict(None, -1.0)
