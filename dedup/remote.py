"""The endpoint embedder: `/v1/embeddings` of a configured OpenAI-compatible endpoint
(OpenAI's text-embedding-3-small, as Persona Hub used; the embedded endpoint serves the
route too). The SDK retries 429s (honouring retry-after), 5xx and connection errors with
the endpoint's `max_retries`; inputs go in requests of at most `MAX_INPUTS` texts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openai

from dedup.embedder import normalise
from service.config import Endpoint

MAX_INPUTS = 256


class EndpointEmbedder:
    def __init__(self, endpoint: Endpoint, base_url: str, model: str) -> None:
        self._endpoint = endpoint
        self._model = model
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=endpoint.api_key(),
            max_retries=endpoint.max_retries,
            timeout=endpoint.timeout_s,
            http_client=openai.DefaultAioHttpClient(),
        )

    @property
    def name(self) -> str:
        return f"endpoint:{self._endpoint.name}:{self._model}"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), MAX_INPUTS):
            response = await self._client.embeddings.create(
                model=self._model, input=list(texts[start : start + MAX_INPUTS]), encoding_format="float"
            )
            rows.extend(item.embedding for item in sorted(response.data, key=lambda item: item.index))
        return normalise(np.array(rows, dtype=np.float32))

    async def aclose(self) -> None:
        await self._client.close()
