"""The dedup embedder of a cluster's driver: texts go to a worker to be embedded (the CPU-heavy
part of dedup), the vectors come back to the driver, which keeps the run's one index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Embeds(Protocol):
    async def embed(self, kind: str, texts: list[str]) -> np.ndarray: ...


class WorkerEmbedder:
    """An `Embedder` of one dedup kind whose model runs on the workers (`WorkerPool.embed`)."""

    def __init__(self, workers: Embeds, kind: str, name: str) -> None:
        self._workers = workers
        self._kind = kind
        self._name = name

    @property
    def name(self) -> str:
        """The model's own name: its vectors are those it gives in one process."""
        return self._name

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await self._workers.embed(self._kind, list(texts))

    async def aclose(self) -> None:
        """The workers own the models."""
