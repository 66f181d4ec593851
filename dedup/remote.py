"""The endpoint embedder: `/v1/embeddings` of a configured OpenAI-compatible endpoint
(OpenAI's text-embedding-3-small, as Persona Hub used; the embedded endpoint serves the
route too), asked through an `LLMClient`, so embedding requests share the client's limiter,
retries, breaker, budget and cost accounting; inputs go in requests of at most
`MAX_INPUTS` texts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dedup.embedder import normalise
from llm import LLMClient

MAX_INPUTS = 256
STAGE = "dedup"  # the label of its requests in the client's events


class EndpointEmbedder:
    def __init__(self, client: LLMClient) -> None:
        """`client`: the embedding endpoint, with the embedding model as its model."""
        self._client = client

    @property
    def name(self) -> str:
        endpoint = self._client.endpoint
        return f"endpoint:{endpoint.name}:{endpoint.model}"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), MAX_INPUTS):
            rows.extend(await self._client.embed(texts[start : start + MAX_INPUTS], STAGE))
        return normalise(np.array(rows, dtype=np.float32))

    async def aclose(self) -> None:
        await self._client.aclose()
