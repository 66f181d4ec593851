"""A caller's endpoints in order of preference: the primary, then its fallbacks.

`EndpointChain.complete` turns (messages, generation parameters) into a `Completion`. It
first looks for a cached answer from any endpoint of the chain: a resumed run replays what
a fallback answered before the crash instead of asking the primary again (each answer stays
keyed by the body that endpoint received, model included). Otherwise it asks the endpoints
in order: one that gives up on the request (`RequestFailed`: retries spent, or rate limited
for too long) hands it to the next, and one cooling down after a 429 for longer than
`SKIP_COOLDOWN_S` is passed over while a later endpoint is left. A refused configuration
(`FatalEndpointError`) still stops the run: a fallback must not hide a wrong key.
"""

from __future__ import annotations

import structlog

from llm.client import Completion, Generation, LLMClient, RequestFailed

SKIP_COOLDOWN_S = 30.0

log = structlog.get_logger()


class EndpointChain:
    def __init__(self, clients: list[LLMClient]) -> None:
        if not clients:
            raise ValueError("an endpoint chain needs at least one endpoint")
        self.clients = clients

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
        seed: int,
        stage: str,
        json_mode: bool = True,
    ) -> Completion:
        """One answer for `stage` (the events' label and what max_tokens is sized by);
        `max_tokens` is the caller's cap."""
        generation = Generation(temperature, max_tokens, seed, json_mode)
        requests = [client.prepare(messages, generation, stage) for client in self.clients]
        for client, request in zip(self.clients, requests, strict=True):
            cached = client.cached(request, stage)
            if cached is not None:
                return await client.complete(request, stage, cached)
        last = len(self.clients) - 1
        failure: RequestFailed | None = None
        for i, (client, request) in enumerate(zip(self.clients, requests, strict=True)):
            if i < last and client.limiter.cooldown_left() > SKIP_COOLDOWN_S:
                continue
            try:
                return await client.complete(request, stage)
            except RequestFailed as exc:
                failure = exc
                if i < last:
                    log.warning("endpoint_fallback", failed=client.endpoint.name, error=str(exc))
        assert failure is not None  # the last endpoint is never skipped
        raise failure
