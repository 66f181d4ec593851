"""`make bench SECTIONS=dedup`: figures of the inline dedup on this machine.

1. Embedding throughput of the local model (texts/s, and texts per CPU-second, which the
   other engineers' load on a shared machine does not distort) for persona-length (~35 words)
   and task-length (~105 words) texts, in the service's batches of 64.
2. Recall / distinct kept / precision on the labelled persona and script sets around the
   default thresholds.
3. Search+add cost per item: a 64k stream through the exact index (planted duplicates),
   faiss IndexFlatIP against ours at 64k (ratio), then exact and IVF indexes filled to 1M
   probed with near copies and new vectors (duplicates found vs exact); HNSW too when
   BENCH_DEDUP_HNSW=1 (building it takes minutes); index memory.
4. Event-loop lag (p50/p99/max of a 10 ms ticker) and LLM requests/s while the LLM client
   talks to the embedded endpoint, without and with the embedder working beside it.

`--quick` (the test suite runs it): the same figures on small sizes (128/64 texts, a 4k
stream, a 16k fill, 1 s lag phases); seconds instead of minutes, not comparable.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from dedup.calibrate import load_labelled, score
from dedup.index import FlatIndex, HNSWIndex, IVFIndex, VectorIndex
from dedup.minilm import MODEL_FOR_KIND, MiniLMEmbedder
from dedup.near import Candidate, DedupSet
from llm import Endpoint, EndpointChain, Limits, LLMClient
from service.config import Dedup
from service.embedded import EmbeddedEndpoint
from typedconfig import from_plain

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "data" / "dedup_personas.jsonl"
LABELLED_SCRIPTS = ROOT / "tests" / "data" / "dedup_scripts.jsonl"
DIM = 384
BATCH = 64
LAG_TICK_S = 0.01
LAG_PHASE_S = 8.0
REQUESTERS = 8  # concurrent requests at 50 ms latency: ~100 requests/s, about what a default run sends


def texts_of(words: int, count: int, seed: int) -> list[str]:
    """Natural-looking texts of about `words` words, stitched from the labelled personas."""
    pool = [item["text"] for item in load_labelled(LABELLED)]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        stitched: list[str] = []
        while len(stitched) < words:
            stitched.extend(rng.choice(pool).split())
        out.append(" ".join(stitched[:words]))
    return out


@dataclass(frozen=True)
class Sizes:
    persona_texts: int = 1024
    task_texts: int = 256
    stream: int = 65_536
    fill: int = 1_000_000
    lag_phase_s: float = LAG_PHASE_S


QUICK = Sizes(persona_texts=128, task_texts=64, stream=4096, fill=16_384, lag_phase_s=1.0)


def embedding_throughput(embedder: MiniLMEmbedder, sizes: Sizes) -> None:
    async def embed_all(texts: list[str]) -> None:
        for start in range(0, len(texts), BATCH):
            await embedder.embed(texts[start : start + BATCH])

    for label, words, count in (("persona", 35, sizes.persona_texts), ("task", 105, sizes.task_texts)):
        texts = texts_of(words, count, seed=words)
        asyncio.run(embed_all(texts[:BATCH]))  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        asyncio.run(embed_all(texts))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        mean_words = statistics.mean(len(t.split()) for t in texts)
        print(
            f"embed {label:7s} (~{mean_words:.0f} words): {count / wall:6.0f} texts/s wall, "
            f"{count / cpu:6.0f} texts per CPU-second ({cpu / wall:.2f} cores busy)"
        )


def labelled_scores(embedders: dict[str, MiniLMEmbedder]) -> None:
    defaults = Dedup()
    for kind, path, default in (
        ("persona", LABELLED, defaults.persona.threshold),
        ("script", LABELLED_SCRIPTS, defaults.script.threshold),
    ):
        items = load_labelled(path)
        vectors = embedders[kind].embed_now([item["text"] for item in items])
        for threshold in sorted({0.85, default, 0.95}):
            print(f"labelled {kind} ({len(items)}): {score(items, vectors, threshold).line()}")


def synthetic_stream(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in n/100 clusters; 15% are near copies (cosine ~0.7-1) of an earlier one."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), DIM), dtype=np.float32)
    rows = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM), dtype=np.float32)
    copies = rng.choice(np.arange(1, n), size=int(0.15 * n), replace=False)
    sources = (rng.random(len(copies)) * copies).astype(np.int64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    noise = rng.standard_normal((len(copies), DIM), dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    rows[copies] = rows[sources] + rng.uniform(0.0, 1.0, (len(copies), 1)).astype(np.float32) * noise
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def stream(dedup_set: DedupSet, vectors: np.ndarray, offset: int = 0) -> tuple[float, float, int]:
    """Search+add of every row in batches of 64, as admission does: (wall s, CPU s, duplicates).
    CPU time counts every thread of this process (BLAS and faiss use both cores)."""
    duplicates = 0
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(vectors), BATCH):
        rows = vectors[start : start + BATCH]
        batch = [Candidate(f"i{offset + start + i}", f"d{offset + start + i}", "") for i in range(len(rows))]
        for candidate, verdict in zip(batch, dedup_set.screen(batch, rows), strict=True):
            if verdict.duplicate_of is None:
                dedup_set.add(candidate.id, candidate.digest, verdict.vector)
            else:
                duplicates += 1
    return time.perf_counter() - started, time.process_time() - cpu, duplicates


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def index_costs(sizes: Sizes) -> None:
    threshold = Dedup().persona.threshold
    data = synthetic_stream(sizes.stream)
    indexes: list[tuple[str, VectorIndex]] = [("exact (flat)", FlatIndex())]
    if os.environ.get("BENCH_DEDUP_HNSW") == "1":
        indexes.append(("hnsw m32 efs128", _hnsw()))
    for label, index in indexes:
        before = rss_mb()
        seconds, cpu, dups = stream(DedupSet("bench", index, threshold), data)
        print(
            f"{_count(len(data))} stream, {label}: {seconds / len(data) * 1e6:6.0f} us/item search+add "
            f"({cpu / len(data) * 1e6:.0f} us CPU), {dups} duplicates, index +{rss_mb() - before:.0f} MB RSS"
        )
    probe_faiss_flat(data)
    del data
    fill = synthetic_stream(sizes.fill, seed=1)
    probe = near_copies(fill, 4 * BATCH)
    ivf = Dedup().ivf
    large: list[tuple[str, VectorIndex]] = [
        ("exact (flat)", FlatIndex()),
        (f"ivf nlist {ivf.nlist} nprobe {ivf.nprobe}", IVFIndex(ivf.nlist, ivf.nprobe, ivf.train_after)),
    ]
    if os.environ.get("BENCH_DEDUP_HNSW") == "1":
        large.append(("hnsw m32 efs128", _hnsw()))
    exact_dups = None
    for label, index in large:
        per_item, cpu, dups, built, memory = fill_and_probe(index, fill, probe, threshold)
        exact_dups = exact_dups or dups
        print(
            f"{_count(len(fill))} fill, {label}: {per_item:6.0f} us/item search+add ({cpu:.0f} us CPU) "
            f"at {_count(len(fill))} items; "
            f"found {dups}/{exact_dups} of the duplicates exact search finds; built in {built:.0f} s, "
            f"index {memory:.0f} MB RSS"
        )
    if os.environ.get("BENCH_DEDUP_HNSW") != "1":
        print("(HNSW skipped: set BENCH_DEDUP_HNSW=1; building it to 1M takes ~12 min here)")


def _count(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1024}k"


def _hnsw() -> HNSWIndex:
    settings = Dedup().hnsw
    return HNSWIndex(settings.m, settings.ef_construction, settings.ef_search)


def near_copies(rows: np.ndarray, n: int) -> np.ndarray:
    """`n` probe vectors: half near copies (cosine ~0.85-1) of random `rows`, half new ones."""
    rng = np.random.default_rng(2)
    copies = rows[rng.integers(0, len(rows), n // 2)]
    noise = rng.standard_normal(copies.shape, dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = copies + rng.uniform(0.0, 0.6, (len(copies), 1)).astype(np.float32) * noise
    probe = np.concatenate([copies, synthetic_stream(n - len(copies), seed=3)])
    return probe / np.linalg.norm(probe, axis=1, keepdims=True)


def probe_faiss_flat(data: np.ndarray) -> None:
    """One batch of 64 queries against 64k rows: faiss IndexFlatIP against our exact index."""
    ours = FlatIndex()
    ours.add(data)
    theirs = faiss.IndexFlatIP(DIM)
    theirs.add(data)
    queries = data[:BATCH]
    timings = {}
    for label, search in (
        ("ours", lambda: ours.search(queries, 1)),
        ("faiss", lambda: theirs.search(queries, 1)),
    ):
        started = time.perf_counter()
        for _ in range(5):
            search()
        timings[label] = (time.perf_counter() - started) / 5 / BATCH * 1e6
    print(
        f"exact search at {_count(len(data))} rows: ours {timings['ours']:.0f} us/item, faiss IndexFlatIP "
        f"{timings['faiss']:.0f} us/item ({timings['faiss'] / timings['ours']:.1f}x slower)"
    )


def fill_and_probe(
    index: VectorIndex, fill: np.ndarray, probe: np.ndarray, threshold: float
) -> tuple[float, float, int, float, float]:
    """Fill `index` with `fill`, then stream `probe` through it:
    (wall us/item, CPU us/item, duplicates, build s, MB)."""
    before = rss_mb()
    dedup_set = DedupSet("bench", index, threshold)
    started = time.perf_counter()
    for start in range(0, len(fill), 65_536):
        ids = [f"f{start + i}" for i in range(len(fill[start : start + 65_536]))]
        dedup_set.add_many(ids, ids, fill[start : start + 65_536])
    index.search(fill[:1], 1)  # IVF trains on first search
    built, memory = time.perf_counter() - started, rss_mb() - before
    seconds, cpu, dups = stream(dedup_set, probe, offset=len(fill))
    return seconds / len(probe) * 1e6, cpu / len(probe) * 1e6, dups, built, memory


async def loop_lag(embedder: MiniLMEmbedder, workdir: Path, phase_s: float) -> None:
    settings = from_plain({"latency_median_s": 0.05, "latency_sigma": 0.3, "seed": 3}, "bench")
    sim = EmbeddedEndpoint("bench", settings, workdir / "sim.log")
    base_url = await sim.start()
    client = LLMClient(
        Endpoint(model="sim-gpt-4o", name="bench", limits=Limits(max_concurrency=32)), base_url
    )
    chain = EndpointChain([client])
    personas = texts_of(35, 4096, seed=9)
    counter = iter(range(10**9))
    try:
        for label, embedding in (("requests only", False), ("requests + embedding", True)):
            lags: list[float] = []
            done = [0, 0]  # LLM requests, texts embedded
            stop = asyncio.Event()

            async def ticker(lags: list[float] = lags, stop: asyncio.Event = stop) -> None:
                while not stop.is_set():
                    started = time.perf_counter()
                    await asyncio.sleep(LAG_TICK_S)
                    lags.append(time.perf_counter() - started - LAG_TICK_S)

            async def requester(done: list[int] = done, stop: asyncio.Event = stop) -> None:
                while not stop.is_set():
                    messages = [{"role": "user", "content": "Say hello."}]
                    await chain.complete(
                        messages, temperature=0.0, max_tokens=64, seed=next(counter), stage="bench"
                    )
                    done[0] += 1

            async def embedding_load(done: list[int] = done, stop: asyncio.Event = stop) -> None:
                start = 0
                while not stop.is_set():
                    await embedder.embed(personas[start : start + BATCH])
                    start = (start + BATCH) % len(personas)
                    done[1] += BATCH

            tasks = [asyncio.create_task(ticker())] + [
                asyncio.create_task(requester()) for _ in range(REQUESTERS)
            ]
            if embedding:
                tasks.append(asyncio.create_task(embedding_load()))
            await asyncio.sleep(phase_s)
            stop.set()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, Exception):
                    raise outcome  # a broken phase must not print figures
            lag_ms = np.array(lags) * 1000
            print(
                f"event loop, {label:20s}: lag p50 {np.percentile(lag_ms, 50):5.1f} ms, "
                f"p99 {np.percentile(lag_ms, 99):5.1f} ms, max {lag_ms.max():6.1f} ms; "
                f"{done[0] / phase_s:4.0f} LLM requests/s, "
                f"{done[1] / phase_s:4.0f} personas embedded/s"
            )
    finally:
        await client.aclose()
        await sim.stop()


def main(argv: list[str]) -> int:
    sizes = QUICK if "--quick" in argv else Sizes()
    started = time.perf_counter()
    embedders = {kind: MiniLMEmbedder(model) for kind, model in MODEL_FOR_KIND.items()}
    print(f"local embedders loaded in {time.perf_counter() - started:.2f} s")
    for kind, embedder in embedders.items():
        print(f"{kind} embedder: {embedder.name}")
        embedding_throughput(embedder, sizes)
    labelled_scores(embedders)
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(loop_lag(embedders["persona"], Path(workdir), sizes.lag_phase_s))
    index_costs(sizes)
    for embedder in embedders.values():
        embedder.close()
    return 0
