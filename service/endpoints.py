"""The run's endpoints: the embedded ones started (`service/embedded.py`), one `LLMClient`
per endpoint a stage uses, each stage's chain of them (primary, then fallbacks), and the
dedup embedder's own client when dedup embeds through an endpoint.

Every client of the run keeps its answers in the run's store (`StoreCache`), clears each
request with the run's `Budget` and hands its events to the run's sinks (the Prometheus
metrics, the request tally, the budget, the log). The embedder's client is a client of its
own, for the embedding model: that model's limits and prices are not the chat model's.
In batch mode (`run.mode: batch`) each endpoint of the sample stages also has a
`BatchCollector`, and the sample stages ask through a client that answers through it; the
persona expansion stays online (it feeds admission, which a batch round would stall).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import structlog

from llm import (
    AnswerCache,
    BatchCollector,
    BatchJournal,
    Budget,
    EndpointChain,
    LLMClient,
    NoBatchApi,
    RequestEvent,
    Sink,
)
from llm.limiter import EndpointLimiter
from metrics.prometheus import RunMetrics
from pipeline import registry
from service.config import LOCAL_EMBEDDER, Config, ConfigError, Endpoint
from service.embedded import EmbeddedEndpoint

log = structlog.get_logger()


class EndpointPool:
    def __init__(
        self,
        config: Config,
        out: Path,
        cache: AnswerCache,
        sinks: Sequence[Sink],
        budget: Budget,
        metrics: RunMetrics | None,
        journal: BatchJournal | None = None,
        *,
        legacy_keys: bool = False,
        started: Mapping[str, str] | None = None,
        limit_share: float = 1.0,
    ) -> None:
        """`journal` (the store) turns batch mode on for the sample stages (`run.mode: batch`).
        A cluster worker's pool (`service/cluster`) is given the base URLs of the endpoints the
        driver `started` (it starts none itself), no metrics (its events reach the driver's),
        and its `limit_share` of each endpoint's limits."""
        self._legacy_keys = legacy_keys
        self._started = started
        self._limit_share = limit_share
        self._config = config
        self._out = out
        self._cache = cache
        self._sinks = tuple(sinks)
        self._budget = budget
        self._metrics = metrics
        self._journal = journal
        self._batched = {stage.name for stage in registry.sample_stages()} if journal is not None else set()
        self._embedded: list[EmbeddedEndpoint] = []
        self._base_urls: dict[str, str] = {}
        self.clients: dict[str, LLMClient] = {}  # by endpoint name: those of the stages
        # batch mode: the sample stages' clients answer through the Batch API (llm/batch.py)
        self.batch_clients: dict[str, LLMClient] = {}
        self.collectors: dict[str, BatchCollector] = {}
        self._embedding: LLMClient | None = None

    async def start(self) -> None:
        """Start the embedded endpoints in use and make the stages' clients."""
        stage_names = self._config.stages_by_endpoint()
        for name, endpoint in self._config.endpoints_in_use().items():
            base_url = endpoint.base_url
            if self._started is not None:
                base_url = self._started[name]
            elif endpoint.embedded is not None:
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
                if self._metrics is not None:
                    self._metrics.add_endpoint(name, endpoint.model, stage_names[name], client.limiter.state)
                if self._journal is not None and set(stage_names[name]) & self._batched:
                    await self._start_batches(name, endpoint, base_url)
            log.info("endpoint_ready", endpoint=name, model=endpoint.model, base_url=base_url)

    async def _start_batches(self, name: str, endpoint: Endpoint, base_url: str) -> None:
        """Batch mode for this endpoint: its collector (resuming the batches the store holds) and
        the client the sample stages ask through it."""
        assert self._journal is not None
        collector = BatchCollector(
            endpoint,
            base_url,
            endpoint.api_key(),
            self._config.batch,
            self._journal,
            self._cache,
            self._emit,
            self._budget,
        )
        try:
            await collector.start()
        except NoBatchApi as exc:
            await collector.aclose()
            raise ConfigError(f"run.mode=batch: {exc}") from None
        self.collectors[name] = collector
        self.batch_clients[name] = LLMClient(
            endpoint, base_url, cache=self._cache, sinks=self._sinks, budget=self._budget, batch=collector
        )

    def _emit(self, event: RequestEvent) -> None:
        for sink in self._sinks:
            sink(event)

    def chain(self, stage_name: str) -> EndpointChain:
        """The stage's clients: the primary, then its fallbacks (batch clients in batch mode)."""
        stage = getattr(self._config.stages, stage_name)
        clients = self.batch_clients if stage_name in self._batched else self.clients
        return EndpointChain(
            [clients.get(ep.name) or self.clients[ep.name] for ep in self._config.endpoints_for(stage)]
        )

    @property
    def base_urls(self) -> dict[str, str]:
        """Where each endpoint in use answers (an embedded one: where it was started)."""
        return dict(self._base_urls)

    def leased_limiters(self, stage_names: Iterable[str] | None = None) -> dict[str, EndpointLimiter]:
        """The limiters that hold a lease of a key shared with other processes (a cluster run):
        those of the stages' endpoints (of `stage_names`, else all), and the dedup embedder's."""
        names = self._config.stages_by_endpoint(stage_names)
        limiters = {name: client.limiter for name, client in self.clients.items() if name in names}
        if self._embedding is not None:
            limiters[f"{self._embedding.endpoint.name} embeddings"] = self._embedding.limiter
        return limiters

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
        for collector in self.collectors.values():
            collector.stop_sending()

    async def cancel_running_batches(self) -> int:
        """The target is reached: cancel every batch still running (batch mode)."""
        return sum([await collector.cancel_running() for collector in self.collectors.values()])

    async def aclose(self) -> None:
        for collector in self.collectors.values():
            await collector.aclose()
        for client in [*self.clients.values(), *self.batch_clients.values()]:
            await client.aclose()
        for embedded in self._embedded:
            await embedded.stop()

    def _all(self) -> list[LLMClient]:
        return [
            *self.clients.values(),
            *self.batch_clients.values(),
            *([self._embedding] if self._embedding else []),
        ]

    def _client(self, endpoint: Endpoint, base_url: str) -> LLMClient:
        return LLMClient(
            endpoint,
            base_url,
            cache=self._cache,
            sinks=self._sinks,
            budget=self._budget,
            legacy_keys=self._legacy_keys,
            limit_share=self._limit_share,
        )
