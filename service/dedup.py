"""The run's dedup, wired from `config.yaml`'s `dedup:` section: the embedder of each kind, one
`DedupSet` per kind rebuilt from the store (the index and the store always agree: every
kept item is stored in the transaction that keeps it), the persona screen used by admission
and the script check used by the script stage."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from threadpoolctl import threadpool_limits

from dedup.embedder import Embedder
from dedup.exact import text_hash
from dedup.index import FlatIndex, HNSWIndex, IVFIndex, VectorIndex
from dedup.minilm import MODEL_FOR_KIND, MiniLMEmbedder
from dedup.near import Candidate, DedupSet, Verdict
from dedup.remote import EndpointEmbedder
from dedup.screen import CoalescingScreen, Deduplicator
from dedup.scripts import script_key
from llm import LLMClient
from pipeline.job import SampleJob
from service.config import Config, ConfigError
from service.store import Store


def build_embedders(
    config: Config, client: LLMClient | None, kinds: Iterable[str] = tuple(MODEL_FOR_KIND)
) -> dict[str, Embedder]:
    """The embedder of each dedup kind (of `kinds`): locally, each kind's bundled model; an
    endpoint (its `client`, for the embedding model) serves both."""
    settings = config.dedup
    if client is None:
        return {kind: MiniLMEmbedder(MODEL_FOR_KIND[kind], settings.threads) for kind in kinds}
    return dict.fromkeys(kinds, EndpointEmbedder(client))


class RunDedup:
    def __init__(self, config: Config, store: Store, embedders: dict[str, Embedder]) -> None:
        names = " + ".join(dict.fromkeys(embedders[kind].name for kind in ("persona", "script")))
        used = store.get_meta("dedup_embedder")
        if used is not None and used != names:
            raise ConfigError(
                f"dedup.embedder: this run directory was deduplicated with {used}, not {names}; "
                "keep its embedder or start a new run directory"
            )
        store.set_meta("dedup_embedder", names)
        # BLAS on one thread: OpenBLAS's second thread busy-waits after every product, and the
        # dedup's products (at most 64 queries against the index) gained nothing from it: it was
        # ~13% of the service's CPU on two cores
        threadpool_limits(1, user_api="blas")
        self._store = store
        settings = config.dedup
        self.personas = Deduplicator(
            self._load("persona", settings.persona.threshold, 1, config), embedders["persona"]
        )
        # a sample holds at most one script per attempt: one more neighbour always finds another sample
        scripts = self._load("script", settings.script.threshold, config.stages.script.attempts + 1, config)
        self._scripts = CoalescingScreen(
            Deduplicator(scripts, embedders["script"]), self._keep_script, settings.batch_size
        )

    async def script_duplicate(self, job: SampleJob) -> Verdict | None:
        """The verdict naming the sample whose script this job's script repeats, or None."""
        return await self.screen_script(script_candidate(job))

    async def screen_script(self, candidate: Candidate) -> Verdict | None:
        """`script_duplicate` for a candidate made elsewhere (a cluster worker's, with its vector)."""
        verdict = await self._scripts.check(candidate)
        return verdict if verdict.duplicate_of is not None else None

    async def aclose(self) -> None:
        """Stop the script check (the embedders belong to the caller)."""
        await self._scripts.aclose()

    def _keep_script(self, candidate: Candidate, verdict: Verdict) -> None:
        assert verdict.vector is not None
        self._store.keep_for_dedup("script", candidate.id, candidate.digest, verdict.vector.tobytes())
        self._scripts.deduplicator.keep(candidate, verdict)

    def _load(self, kind: str, threshold: float, k: int, config: Config) -> DedupSet:
        dedup_set = DedupSet(kind, _index(config), threshold, k)
        owners, digests, blobs = [], [], []
        for owner, digest, blob in self._store.dedup_items(kind):
            owners.append(owner)
            digests.append(digest)
            blobs.append(blob)
        if owners:
            vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(owners), -1)
            dedup_set.add_many(owners, digests, vectors)
        return dedup_set


def script_candidate(job: SampleJob) -> Candidate:
    """What the script dedup compares of a sample: its script's key text and that text's digest."""
    assert job.script is not None
    key = script_key(job.script)
    return Candidate(job.id, text_hash(key), key, own=True)


def _index(config: Config) -> VectorIndex:
    settings = config.dedup
    if settings.index == "ivf":
        return IVFIndex(settings.ivf.nlist, settings.ivf.nprobe, settings.ivf.train_after)
    if settings.index == "hnsw":
        return HNSWIndex(settings.hnsw.m, settings.hnsw.ef_construction, settings.hnsw.ef_search)
    return FlatIndex()
