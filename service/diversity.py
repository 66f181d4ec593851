"""How diverse a run's accepted data is, from the embeddings the run already has.

The paper's claim is that diverse environments make agents generalise (its Figures 6 and 7:
a 2-D map of samples, and the similarity of environments). Dedup already embedded every kept
persona and every kept script (Goal + a summary of the Environment, `dedup.scripts`) and stored
the vectors in the store (`dedup_items`); nothing is embedded again here. For the accepted
samples (a sample's last kept script is the one it was accepted with):

- each script's nearest-neighbour cosine among the other accepted scripts: its mean and
  quantiles (low = diverse; dedup drops everything at or above `dedup.script.threshold`);
- the same for the personas;
- the distinct action verbs (the first word of each action template) and the environment
  kinds: groups of scripts whose embedding lies within KIND_COSINE of the group's first
  script (greedy leader clustering, in acceptance order);
- a 2-D map of the scripts: their first two principal components (numpy's SVD).

Above MAX_QUERIES accepted items the nearest neighbours are searched for a fixed random
sample of MAX_QUERIES of them (against all): the mean is an unbiased estimate (its standard
error about 0.001), and the search stays a few seconds at 64k samples. `service.compare`
puts two runs side by side on one map (the PCA fitted on both).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import orjson

from service.store import Store

MAX_QUERIES = 5_000
# scripts this close to a kind's first script are of that kind: with the bundled script
# embedder (MiniLM-L6) on the embedded endpoint's 23 domains, N=200 gave 32 kinds with 90% of
# a kind's scripts from one domain, N=1000 61 kinds with 96% (the count grows slowly with N as
# a domain's goals spread: compare runs of similar size)
KIND_COSINE = 0.4
HISTOGRAM_BINS = 20  # over cosine 0..1
QUANTILES = (0.1, 0.5, 0.9)
_VERB = re.compile(r"[a-z][a-z_-]*")


@dataclass(frozen=True)
class Neighbours:
    """Nearest-neighbour cosine of each accepted item of one kind (over `queries` of them)."""

    items: int
    queries: int
    mean: float
    quantiles: dict[str, float]  # p10, p50, p90
    histogram: list[int]  # counts over HISTOGRAM_BINS equal bins of cosine 0..1
    values: np.ndarray = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "queries": self.queries,
            "mean": round(self.mean, 4),
            **{k: round(v, 4) for k, v in self.quantiles.items()},
            "histogram": self.histogram,
        }


@dataclass(frozen=True)
class Diversity:
    """The diversity figures of one run's accepted samples."""

    accepted: int
    scripts: Neighbours | None
    personas: Neighbours | None
    action_verbs: int
    top_verbs: list[tuple[str, int]]
    environment_kinds: int
    script_vectors: np.ndarray = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "script_nearest_cosine": self.scripts.as_dict() if self.scripts else None,
            "persona_nearest_cosine": self.personas.as_dict() if self.personas else None,
            "action_verbs": self.action_verbs,
            "top_verbs": dict(self.top_verbs),
            "environment_kinds": self.environment_kinds,
            "environment_kind_cosine": KIND_COSINE,
        }


def measure(store: Store) -> Diversity:
    """The diversity figures of the accepted samples of a run's store."""
    accepted: list[str] = []
    verbs: dict[str, int] = {}
    for blob in store.accepted_records(skip=0):
        record = orjson.loads(blob)
        accepted.append(record["id"])
        for verb in action_verbs(record["script"]):
            verbs[verb] = verbs.get(verb, 0) + 1
    scripts = accepted_vectors(store, "script", accepted)
    personas = accepted_vectors(store, "persona", accepted)
    return Diversity(
        accepted=len(accepted),
        scripts=nearest_neighbours(scripts),
        personas=nearest_neighbours(personas),
        action_verbs=len(verbs),
        top_verbs=sorted(verbs.items(), key=lambda kv: (-kv[1], kv[0]))[:10],
        environment_kinds=kinds(scripts),
        script_vectors=scripts,
    )


def action_verbs(script: dict[str, Any]) -> set[str]:
    """The verbs of a script's actions: the first word of each template, lower-cased."""
    found = set()
    for template in script.get("Available Actions", {}):
        match = _VERB.match(str(template).strip().lower())
        if match:
            found.add(match.group())
    return found


def accepted_vectors(store: Store, kind: str, accepted: list[str]) -> np.ndarray:
    """The unit vectors of the accepted samples' items of `kind`, in acceptance order (the
    last one kept per sample: a sample whose trajectories failed got a new script)."""
    last: dict[str, bytes] = {}
    for owner, _, blob in store.dedup_items(kind):
        last[owner] = blob
    rows = [last[sample] for sample in accepted if sample in last]
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = np.frombuffer(b"".join(rows), dtype=np.float32).reshape(len(rows), -1).copy()
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def nearest_neighbours(vectors: np.ndarray, max_queries: int = MAX_QUERIES) -> Neighbours | None:
    """Each item's cosine to its nearest other item (None below two items)."""
    n = len(vectors)
    if n < 2:
        return None
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    rows = np.arange(n)
    if n > max_queries:
        rows = np.sort(np.random.default_rng(0).choice(n, max_queries, replace=False))
    scores, ids = index.search(vectors[rows], 2)
    # the best hit is the item itself, unless an identical vector ranks first: either way the
    # best hit that is not the item is its nearest neighbour
    nearest = np.where(ids[:, 0] == rows, scores[:, 1], scores[:, 0]).clip(-1.0, 1.0)
    histogram, _ = np.histogram(nearest.clip(0.0, 1.0), bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return Neighbours(
        items=n,
        queries=len(rows),
        mean=float(nearest.mean()),
        quantiles={f"p{round(q * 100)}": float(np.quantile(nearest, q)) for q in QUANTILES},
        histogram=[int(c) for c in histogram],
        values=nearest,
    )


def kinds(vectors: np.ndarray, cosine: float = KIND_COSINE, block: int = 1024) -> int:
    """Groups of items, each within `cosine` of its group's first item (greedy, in order). A
    block of items is compared with the groups found before it in one product; only the items
    that join none of them are then taken one by one (against the groups begun in the block)."""
    if not len(vectors):
        return 0
    leaders = np.empty_like(vectors)
    count = 0
    for start in range(0, len(vectors), block):
        rows = vectors[start : start + block]
        before = count
        nearest = (rows @ leaders[:before].T).max(axis=1) if before else np.full(len(rows), -np.inf)
        for row in rows[nearest < cosine]:
            if count == before or float((leaders[before:count] @ row).max()) < cosine:
                leaders[count] = row
                count += 1
    return count


def pca_map(*groups: np.ndarray) -> list[np.ndarray]:
    """The first two principal components of each group, fitted on all of them together."""
    present = [g for g in groups if len(g)]
    if not present:
        return [np.zeros((0, 2)) for _ in groups]
    stacked = np.concatenate(present)
    centre = stacked.mean(axis=0)
    _, _, axes = np.linalg.svd(stacked - centre, full_matrices=False)
    basis = axes[:2].T
    if basis.shape[1] < 2:  # a single item or dimension: pad the second axis
        basis = np.pad(basis, ((0, 0), (0, 2 - basis.shape[1])))
    return [(g - centre) @ basis if len(g) else np.zeros((0, 2)) for g in groups]


def table(runs: list[tuple[str, Diversity]]) -> list[str]:
    """The diversity figures of one or more runs as Markdown table rows, side by side."""

    def neighbours(n: Neighbours | None) -> str:
        if n is None:
            return "-"
        quantiles = " / ".join(f"{v:.3f}" for v in n.quantiles.values())
        sampled = f", {n.queries} sampled" if n.queries < n.items else ""
        return f"{n.mean:.3f} ({quantiles}{sampled})"

    header = "| | " + " | ".join(name for name, _ in runs) + " |"
    rows = [
        ("accepted samples", [str(d.accepted) for _, d in runs]),
        ("script nearest-neighbour cosine: mean (p10 / p50 / p90)", [neighbours(d.scripts) for _, d in runs]),
        (
            "persona nearest-neighbour cosine: mean (p10 / p50 / p90)",
            [neighbours(d.personas) for _, d in runs],
        ),
        ("distinct action verbs", [str(d.action_verbs) for _, d in runs]),
        (
            f"environment kinds (script groups at cosine {KIND_COSINE})",
            [str(d.environment_kinds) for _, d in runs],
        ),
        ("most used verbs", [", ".join(v for v, _ in d.top_verbs[:6]) or "-" for _, d in runs]),
    ]
    return [
        header,
        "|---|" + "---:|" * len(runs),
        *(f"| {label} | " + " | ".join(values) + " |" for label, values in rows),
    ]
