"""Dedup decisions: the exact index agrees with faiss, a batch is decided as if its items came
one at a time (first kept), an owner never duplicates itself, HNSW finds what flat finds on
easy data."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from dedup.index import FlatIndex, HNSWIndex, IVFIndex
from dedup.near import Candidate, DedupSet


def unit_rows(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def near(vector: np.ndarray, noise: float, seed: int = 1) -> np.ndarray:
    moved = vector + noise * np.random.default_rng(seed).standard_normal(vector.shape).astype(np.float32)
    return (moved / np.linalg.norm(moved)).astype(np.float32)


def test_flat_index_answers_like_faiss_flat_ip() -> None:
    data, queries = unit_rows(40_000), unit_rows(37, seed=3)
    flat = FlatIndex(capacity=16)
    for start in range(0, len(data), 9_999):  # grows several times
        flat.add(data[start : start + 9_999])
    reference = faiss.IndexFlatIP(data.shape[1])
    reference.add(data)
    sims, rows = flat.search(queries, 3)
    expected_sims, expected_rows = reference.search(queries, 3)
    assert np.array_equal(rows, expected_rows)
    assert np.allclose(sims, expected_sims, atol=1e-5)


@pytest.mark.parametrize(
    "index", [FlatIndex(), IVFIndex(4, 2, 1), HNSWIndex(16, 40, 64)], ids=["flat", "ivf", "hnsw"]
)
def test_empty_index_and_fewer_rows_than_k(index: FlatIndex | IVFIndex | HNSWIndex) -> None:
    sims, rows = index.search(unit_rows(2), 3)
    assert rows.tolist() == [[-1, -1, -1]] * 2 and np.isneginf(sims).all()
    index.add(unit_rows(1))
    sims, rows = index.search(unit_rows(1), 3)
    assert rows.tolist() == [[0, -1, -1]]


@pytest.mark.parametrize(
    "approximate", [IVFIndex(16, 16, 2_000), HNSWIndex(32, 64, 128)], ids=["ivf", "hnsw"]
)
def test_approximate_indexes_find_the_planted_duplicates_that_flat_finds(
    approximate: IVFIndex | HNSWIndex,
) -> None:
    data = unit_rows(3_000, seed=4)
    queries = np.stack([near(data[i], 0.05, seed=i) for i in range(0, 3_000, 30)])
    flat = FlatIndex()
    flat.add(data)
    approximate.add(data[:2_500])
    approximate.search(queries[:1], 1)  # IVF: trained here on its 2 500 rows (probing all cells)
    approximate.add(data[2_500:])  # rows keep their insertion numbers after the switch
    assert len(approximate) == 3_000
    assert np.array_equal(approximate.search(queries, 1)[1], flat.search(queries, 1)[1])


def screen(dedup_set: DedupSet, batch: list[Candidate], vectors: dict[str, np.ndarray]) -> list:
    needed = dedup_set.needs_vector(batch)
    rows = np.stack([vectors[batch[i].text] for i in needed]) if needed else np.zeros((0, 0), np.float32)
    return dedup_set.screen(batch, rows)


def test_a_batch_is_decided_in_arrival_order() -> None:
    a, b = unit_rows(2, seed=7)
    vectors = {"a": a, "a-near": near(a, 0.02), "b": b, "b-near": near(b, 0.02), "c": unit_rows(1, seed=9)[0]}
    dedup_set = DedupSet("persona", FlatIndex(), threshold=0.9)
    dedup_set.add("A", "digest-a", a)
    batch = [
        Candidate("B", "digest-b", "b"),
        Candidate("A2", "digest-a-near", "a-near"),  # near a kept persona
        Candidate("B2", "digest-b-near", "b-near"),  # near B, earlier in this batch
        Candidate("B3", "digest-b", "b"),  # B's exact text again
        Candidate("A3", "digest-a", "a"),  # a kept persona's exact text
        Candidate("C", "digest-c", "c"),
    ]
    verdicts = screen(dedup_set, batch, vectors)
    assert [v.duplicate_of for v in verdicts] == [None, "A", "B", "B", "A", None]
    assert verdicts[1].similarity == pytest.approx(float(a @ vectors["a-near"]))
    assert verdicts[3].similarity == verdicts[4].similarity == 1.0
    assert verdicts[0].vector is not None and verdicts[5].vector is not None
    assert dedup_set.needs_vector(batch) == [0, 1, 2, 5]  # exact repeats are never embedded


def test_an_exact_repeat_of_a_rejected_item_names_what_that_item_duplicated() -> None:
    a = unit_rows(1, seed=11)[0]
    vectors = {"a": a, "a-near": near(a, 0.02)}
    dedup_set = DedupSet("persona", FlatIndex(), threshold=0.9)
    dedup_set.add("A", "digest-a", a)
    batch = [Candidate("X", "digest-x", "a-near"), Candidate("Y", "digest-x", "a-near")]
    assert [v.duplicate_of for v in screen(dedup_set, batch, vectors)] == ["A", "A"]


def test_a_sample_never_duplicates_its_own_scripts() -> None:
    first, other = unit_rows(2, seed=13)
    second = near(first, 0.02)
    vectors = {"first": first, "second": second, "other": other, "copy": near(first, 0.03, seed=5)}
    dedup_set = DedupSet("script", FlatIndex(), threshold=0.9, k=3)
    dedup_set.add("S1", "digest-first", first)
    dedup_set.add("S2", "digest-other", other)

    replay, new_script = screen(
        dedup_set, [Candidate("S1", "digest-first", "first", own=True)], vectors
    ) + screen(dedup_set, [Candidate("S1", "digest-second", "second", own=True)], vectors)
    assert replay.duplicate_of is None and replay.replay
    assert new_script.duplicate_of is None and not new_script.replay
    dedup_set.add("S1", "digest-second", second)

    (copy,) = screen(dedup_set, [Candidate("S3", "digest-copy", "copy", own=True)], vectors)
    assert copy.duplicate_of == "S1"
