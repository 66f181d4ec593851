"""The run's endpoints: the embedded ones started (`service/embedded.py`), one `LLMClient`
per endpoint a stage uses, each stage's chain of them (primary, then fallbacks), and the
dedup embedder's own client when dedup embeds through an endpoint.

Every client of the run keeps its answers in the run's store (`StoreCache`), clears each
request with the run's `Budget` and hands its events to the run's sinks (the Prometheus
metrics, the request tally, the budget, the log). The embedder's client is a client of its
own, for the embedding model: that model's limits and prices are not the chat model's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import structlog

from llm import Budget, EndpointChain, LLMClient, Sink
from llm.limiter import EndpointLimiter
from metrics.prometheus import RunMetrics
from service.config import LOCAL_EMBEDDER, Config, Endpoint
from service.embedded import EmbeddedEndpoint
from service.store import StoreCache

log = structlog.get_logger()


class EndpointPool:
    def __init__(
        self,
        config: Config,
        out: Path,
        cache: StoreCache,
        sinks: Sequence[Sink],
        budget: Budget,
        metrics: RunMetrics,
    ) -> None:
        self._config = config
        self._out = out
        self._cache = cache
        self._sinks = tuple(sinks)
        self._budget = budget
        self._metrics = metrics
        self._embedded: list[EmbeddedEndpoint] = []
        self._base_urls: dict[str, str] = {}
        self.clients: dict[str, LLMClient] = {}  # by endpoint name: those of the stages
        self._embedding: LLMClient | None = None

    async def start(self) -> None:
        """Start the embedded endpoints in use and make the stages' clients."""
        stage_names: dict[str, list[str]] = {}
        for stage_name, stage in self._config.stages_in_use().items():
            for endpoint in self._config.endpoints_for(stage):
                stage_names.setdefault(endpoint.name, []).append(stage_name)
        for name, endpoint in self._config.endpoints_in_use().items():
            base_url = endpoint.base_url
            if endpoint.embedded is not None:
                embedded = EmbeddedEndpoint(
                    name,
                    endpoint.embedded,
                    self._out / f"endpoint-{name}.log",
                    self._out / f"endpoint-{name}-batches",  # the provider's side of the run's batches
                )
                self._embedded.append(embedded)
                base_url = await embedded.start()
            assert base_url is not None
            self._base_urls[name] = base_url
            if name in stage_names:  # not the endpoint that only serves dedup embeddings
                client = self.clients[name] = self._client(endpoint, base_url)
                self._metrics.add_endpoint(name, endpoint.model, stage_names[name], client.limiter.state)
            log.info("endpoint_ready", endpoint=name, model=endpoint.model, base_url=base_url)

    def chain(self, stage_name: str) -> EndpointChain:
        """The stage's clients: the primary, then its fallbacks."""
        stage = getattr(self._config.stages, stage_name)
        return EndpointChain([self.clients[ep.name] for ep in self._config.endpoints_for(stage)])

    def limiters_of(self, stage_names: Iterable[str]) -> list[EndpointLimiter]:
        """The limiters of these stages' endpoints, each once."""
        limiters = {id(c.limiter): c.limiter for name in stage_names for c in self.chain(name).clients}
        return list(limiters.values())

    def embedding_client(self) -> LLMClient | None:
        """The dedup embedder's client (the embedder owns it: closing the embedder closes it),
        or None when dedup embeds locally."""
        settings = self._config.dedup
        if settings.embedder == LOCAL_EMBEDDER:
            return None
        if self._embedding is None:
            endpoint = self._config.endpoints[settings.embedder]
            endpoint = replace(endpoint, model=settings.model, price=settings.price)
            self._embedding = self._client(endpoint, self._base_urls[settings.embedder])
        return self._embedding

    def stop_sending(self) -> None:
        """Answers already sent finish (and are stored); nothing new is sent."""
        for client in self._all():
            client.stop_sending()

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        for embedded in self._embedded:
            await embedded.stop()

    def _all(self) -> list[LLMClient]:
        return [*self.clients.values(), *([self._embedding] if self._embedding else [])]

    def _client(self, endpoint: Endpoint, base_url: str) -> LLMClient:
        return LLMClient(
            endpoint,
            base_url,
            cache=self._cache,
            sinks=self._sinks,
            budget=self._budget,
            legacy_keys=self._cache.legacy_keys,
        )
