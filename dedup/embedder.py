"""The embedder interface: texts in, L2-normalised float32 vectors out (one row per text).

Two implementations: `dedup.minilm.MiniLMEmbedder` (local, bundled weights, the default)
and `dedup.remote.EndpointEmbedder` (an endpoint's `/v1/embeddings`). Inner products of
the rows are cosine similarities, which is what the dedup index compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Turns texts into unit vectors; `embed` never blocks the event loop."""

    @property
    def name(self) -> str:
        """Identifies the vectors (model and size): vectors of different names do not compare."""
        ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dim) whose rows have norm 1."""
        ...

    async def aclose(self) -> None: ...


def normalise(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as contiguous float32 (a zero row stays zero)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.ascontiguousarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)
