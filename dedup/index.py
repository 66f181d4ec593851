"""Vector indexes for dedup: nearest kept vectors by inner product (= cosine on unit vectors).

- `FlatIndex` (default): exact search. A growing float32 matrix searched with BLAS matrix
  products in row chunks; the answers are those of `faiss.IndexFlatIP`, which is several
  times slower on this 2-core CPU for the small query batches dedup sends (docs/decisions.md).
- `IVFIndex`: for very large runs, where exact search costs more than 1 ms an item (about
  100k items and up on this CPU). Exact until `train_after` vectors, then a faiss inverted-file
  index (`IndexIVFFlat`) trained on them, searching the `nprobe` nearest of `nlist` cells.
- `HNSWIndex`: `faiss.IndexHNSWFlat`, the other approximate option; on this 2-core CPU its
  adds cost ~0.7 ms each at 1M, so IVF is the better choice here (docs/decisions.md).

The approximate ones can miss a duplicate, never invent one (`nprobe` / `ef_search` trade
speed for recall).

Both take their dimension from the first vectors added, return for each query the `k` best
(similarity, row) pairs, best first; rows are numbered in insertion order and a missing
answer is (-inf, -1).
"""

from __future__ import annotations

from typing import Protocol

import faiss
import numpy as np

CHUNK_ROWS = 16384  # rows per matrix product: bounds the temporary score matrix


class VectorIndex(Protocol):
    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class FlatIndex:
    """Exact inner-product search over all added vectors."""

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._rows = np.empty((0, 0), dtype=np.float32)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, vectors: np.ndarray) -> None:
        needed = self._n + len(vectors)
        if needed > len(self._rows):
            size = max(needed, 2 * len(self._rows), self._capacity)
            grown = np.empty((size, vectors.shape[1]), dtype=np.float32)
            if self._n:
                grown[: self._n] = self._rows[: self._n]
            self._rows = grown
        self._rows[self._n : needed] = vectors
        self._n = needed

    def rows(self) -> np.ndarray:
        return self._rows[: self._n]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, rows = _nothing(len(queries), k)
        for start in range(0, self._n, CHUNK_ROWS):
            scores = queries @ self._rows[start : min(self._n, start + CHUNK_ROWS)].T
            take = min(k, scores.shape[1])
            top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
            sims, rows = _best(
                np.concatenate([sims, np.take_along_axis(scores, top, axis=1)], axis=1),
                np.concatenate([rows, top + start], axis=1),
                k,
            )
        return sims, rows


class IVFIndex:
    """Exact search until `train_after` vectors, then an inverted-file index trained on them.

    The switch happens in `search` (which dedup runs off the event loop), not in `add`."""

    def __init__(self, nlist: int, nprobe: int, train_after: int) -> None:
        self._nlist = nlist
        self._nprobe = nprobe
        self._train_after = max(train_after, nlist)
        self._flat: FlatIndex | None = FlatIndex()
        self._ivf: faiss.IndexIVFFlat | None = None
        self._quantizer: faiss.IndexFlatIP | None = None  # the cells' centres, used by the IVF index

    def __len__(self) -> int:
        return len(self._flat) if self._flat is not None else int(self._ivf.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        if self._flat is not None:
            self._flat.add(vectors)
        else:
            self._ivf.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._flat is not None and len(self._flat) >= self._train_after:
            self._train(self._flat.rows())
        if self._flat is not None:
            return self._flat.search(queries, k)
        sims, rows = self._ivf.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        sims[rows < 0] = -np.inf
        return sims, rows

    def _train(self, rows: np.ndarray) -> None:
        quantizer = faiss.IndexFlatIP(rows.shape[1])
        ivf = faiss.IndexIVFFlat(quantizer, rows.shape[1], self._nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(rows)
        ivf.add(rows)  # ids continue 0..n-1 in insertion order, like the flat rows
        ivf.nprobe = self._nprobe
        self._ivf, self._quantizer, self._flat = ivf, quantizer, None


class HNSWIndex:
    """Approximate inner-product search (faiss HNSW graph, single-threaded adds)."""

    def __init__(self, m: int, ef_construction: int, ef_search: int) -> None:
        self._m = m
        self._ef_construction = ef_construction
        self._ef_search = ef_search
        self._index: faiss.IndexHNSWFlat | None = None

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        if self._index is None:
            faiss.omp_set_num_threads(1)  # on 2 cores, OpenMP makes HNSW adds slower, not faster
            self._index = faiss.IndexHNSWFlat(vectors.shape[1], self._m, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = self._ef_construction
            self._index.hnsw.efSearch = self._ef_search
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            return _nothing(len(queries), k)
        sims, rows = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        sims[rows < 0] = -np.inf
        return sims, rows


def _nothing(queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((queries, k), -np.inf, dtype=np.float32), np.full((queries, k), -1, dtype=np.int64)


def _best(sims: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(rows, order, axis=1)
