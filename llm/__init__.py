"""An LLM client for OpenAI-compatible endpoints that stands on its own.

One `LLMClient` per endpoint: chat completions and embeddings with client-side limits
learned from the provider (RPM/TPM/concurrency), retries with backoff, a circuit breaker,
a budget check, charge-aware max_tokens, token usage and cost; `EndpointChain` falls back
from one endpoint to the next. Answers are kept in an `AnswerCache` (any object with
`get`/`put`); what happened to every request goes to a list of sinks as one `RequestEvent`.

    client = LLMClient(Endpoint(model="gpt-4o", name="openai", base_url=..., api_key_env=...),
                       cache=MemoryCache(), sinks=[tally, log_failures], budget=Budget(5.0))
    chain = EndpointChain([client])
    completion = await chain.complete(messages, temperature=0.7, max_tokens=4096, seed=1, stage="x")
"""

from llm.batch import BatchCollector, BatchJournal, BatchRecord, NoBatchApi
from llm.breaker import EndpointDown
from llm.budget import Budget, BudgetExhausted
from llm.cache import Answer, AnswerCache, MemoryCache
from llm.client import (
    BatchUnanswered,
    Completion,
    FatalEndpointError,
    Generation,
    LLMClient,
    PreparedRequest,
    RequestFailed,
    SendingStopped,
)
from llm.config import BatchSettings, Breaker, Endpoint, Limits, Price
from llm.events import RequestEvent, RequestTally, Sink, log_failures
from llm.fallback import EndpointChain
from llm.limiter import LimiterState
from llm.transport import Reply, Transport, TransportError
from llm.usage import Charge, Usage, cost_usd, parse_usage

__all__ = [
    "Answer",
    "AnswerCache",
    "BatchCollector",
    "BatchJournal",
    "BatchRecord",
    "BatchSettings",
    "BatchUnanswered",
    "Breaker",
    "Budget",
    "BudgetExhausted",
    "Charge",
    "Completion",
    "Endpoint",
    "EndpointChain",
    "EndpointDown",
    "FatalEndpointError",
    "Generation",
    "LLMClient",
    "LimiterState",
    "Limits",
    "MemoryCache",
    "NoBatchApi",
    "PreparedRequest",
    "Price",
    "Reply",
    "RequestEvent",
    "RequestFailed",
    "RequestTally",
    "SendingStopped",
    "Sink",
    "Transport",
    "TransportError",
    "Usage",
    "cost_usd",
    "log_failures",
    "parse_usage",
]
