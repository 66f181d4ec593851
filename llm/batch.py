"""Batch mode: the requests of one endpoint answered through the provider's Batch API.

The stages ask exactly as online (`LLMClient.complete`); in batch mode the client hands each
request that is not cached to its `BatchCollector` instead of sending it. The collector
gathers the requests of the samples in flight into a *round*: once no new request has come
for `gather_s` (every sample in flight is waiting for an answer), the round closes. Its
requests are written to batch input files (JSONL, one line per request with its
`custom_id`; at most `max_requests` lines and `max_file_bytes` per file), each is uploaded
(`/v1/files`) and becomes a batch (`/v1/batches`, completion window 24h), polled with
backoff. When a batch ends, its output and error files are read, each answer is matched to
its request by `custom_id`, priced at the batch price, put into the `AnswerCache` under the
request's own key (the same key as online: a resume, or a switch to online, replays it) and
reported as a `RequestEvent`; then the waiting stages go on and ask for the next round.

**Resumable at any moment.** The `BatchJournal` (the run's store) holds each input file's id
and every request's `custom_id` and key *before* its batch is created, and the batch id as
soon as it is. A new process first reads the journal: batches not finished are polled again
(a stage asking one of their questions waits for that batch instead of sending it again), and
a file recorded without a batch id (killed between the two) is looked up among the provider's
batches by its input file, so no request ever gets a second batch while its first one lives.

Requests of a batch that failed, expired or was cancelled, and requests answered with an
error, go to the next round (`BatchUnanswered` after `max_tries` rounds, or at once with
`on_failure: online`, when the client sends them online). The money a created batch may
cost (its prompts and the stages' typical answer length, at the batch price) is committed
to the `Budget` until its answers are paid.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson
import structlog

from llm.answers import parse_answer
from llm.cache import Answer, AnswerCache
from llm.client import BatchUnanswered, SendingStopped
from llm.config import BatchSettings, Endpoint
from llm.events import RequestEvent
from llm.sizing import CompletionSizes
from llm.usage import cost_usd, parse_usage

log = structlog.get_logger()
TERMINAL = frozenset(("completed", "failed", "expired", "cancelled"))
STREAM_KEYS = ("stream", "stream_options")


class NoBatchApi(Exception):
    """The endpoint has no files/batches API (DeepSeek, vLLM)."""


@dataclass(frozen=True)
class BatchRecord:
    """One input file of the journal, its batch (None: not created, or not known to be), and
    its requests (custom_id -> request key)."""

    endpoint: str
    file_id: str
    batch_id: str | None
    round: int
    status: str
    requests: dict[str, str]
    committed_usd: float = 0.0


class BatchJournal(Protocol):
    """Where the collector notes its batches, so that a new process resumes them."""

    def open_batches(self, endpoint: str) -> list[BatchRecord]: ...

    def last_round(self, endpoint: str) -> int: ...

    def file_uploaded(self, record: BatchRecord, stages: dict[str, str]) -> None: ...

    def batch_created(self, file_id: str, batch_id: str) -> None: ...

    def batch_status(self, file_id: str, status: str, counts: dict[str, int] | None = None) -> None: ...


class Commitments(Protocol):
    """The money created batches may still cost (a `Budget`)."""

    def commit(self, tag: str, usd: float) -> None: ...

    def release(self, tag: str) -> None: ...

    def check(self) -> None: ...


@dataclass
class _Asked:
    key: str
    body: dict[str, Any]  # the chat request as a batch line carries it
    stage: str
    max_tokens: int
    cap: int
    estimate: int  # prompt estimate + max_tokens
    context: contextvars.Context  # the asker's (the cache notes the sample being worked on)
    waiters: list[asyncio.Future[Answer]] = field(default_factory=list)
    tries: int = 0


class BatchCollector:
    """Answers one endpoint's requests round by round through its Batch API."""

    def __init__(
        self,
        endpoint: Endpoint,
        base_url: str,
        api_key: str,
        settings: BatchSettings,
        journal: BatchJournal,
        cache: AnswerCache | None,
        emit: Callable[[RequestEvent], None],
        budget: Commitments | None = None,
    ) -> None:
        from openai import AsyncOpenAI  # the SDK speaks the files and batches API

        self.endpoint = endpoint
        self.settings = settings
        self.online_fallback = settings.on_failure == "online"
        self._journal = journal
        self._cache = cache
        self._emit = emit
        self._budget = budget
        # the stages' answer lengths, from the batches' own answers: what a request commits
        self._sizes: defaultdict[str, CompletionSizes] = defaultdict(CompletionSizes)
        self._api = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=endpoint.max_retries)
        self._gathering: dict[str, _Asked] = {}  # the round being gathered, by key
        self._open: dict[str, _Asked] = {}  # requests in created batches, by key
        self._results: dict[str, Answer] = {}  # answers nobody has asked for yet (resumed batches)
        self._arrived = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._round_task: asyncio.Task[None] | None = None
        self._sending = True
        self.round = 0
        self.batches_created = 0
        self._running: dict[str, str] = {}  # file id -> batch id, of the batches followed now

    async def start(self) -> None:
        """Check the endpoint has a batch API, then resume the batches the journal holds."""
        from openai import NotFoundError

        try:
            await self._api.batches.list(limit=1)
        except NotFoundError:
            raise NoBatchApi(
                f"endpoint {self.endpoint.name} ({self.endpoint.model}) has no batch API (DeepSeek and "
                "vLLM have none): use run.mode=online for it"
            ) from None
        self.round = self._journal.last_round(self.endpoint.name)
        records = self._journal.open_batches(self.endpoint.name)
        unknown = [r for r in records if r.batch_id is None]
        found = await self._batches_of({r.file_id for r in unknown}) if unknown else {}
        for record in records:
            batch_id = record.batch_id or found.get(record.file_id)
            if batch_id is None:  # killed before the batch was created: its requests are asked again
                self._journal.batch_status(record.file_id, "not_created")
                continue
            if record.batch_id is None:
                self._journal.batch_created(record.file_id, batch_id)
            asked = {}
            for custom_id, key in record.requests.items():
                item = self._open[key] = _Asked(key, {}, "", 0, 0, 0, contextvars.Context())
                asked[custom_id] = item
            if self._budget is not None:
                self._budget.commit(record.file_id, record.committed_usd)
            self._spawn(self._follow(record.file_id, batch_id, asked))
            log.info("batch_resumed", endpoint=self.endpoint.name, batch_id=batch_id, requests=len(asked))
        self._round_task = asyncio.create_task(self._rounds(), name=f"batch-rounds-{self.endpoint.name}")

    async def aclose(self) -> None:
        tasks = [t for t in (self._round_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._api.close()

    def stop_sending(self) -> None:
        """No new batch is created; batches already created are still followed."""
        self._sending = False
        self._arrived.set()

    @property
    def waiting(self) -> int:
        """Requests gathered for the next round or in created batches."""
        return len(self._gathering) + len(self._open)

    async def ask(
        self, key: str, payload: bytes, stage: str, max_tokens: int, cap: int, estimate: int
    ) -> Answer:
        """The answer to one request: from a created batch, or from the next round's."""
        while True:
            if key in self._results:
                return self._results.pop(key)
            future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            item = self._open.get(key) or self._gathering.get(key)
            if item is None:
                if not self._sending:
                    raise SendingStopped(f"endpoint {self.endpoint.name}: stopping, request not batched")
                if self._budget is not None:
                    self._budget.check()
                body = orjson.loads(payload)
                for name in STREAM_KEYS:
                    body.pop(name, None)
                item = _Asked(key, body, stage, max_tokens, cap, estimate, contextvars.copy_context())
                self._gathering[key] = item
                self._arrived.set()
            elif not item.body:  # a resumed batch's request: now we know what it is
                item.stage, item.max_tokens, item.cap = stage, max_tokens, cap
                item.context = contextvars.copy_context()
            item.waiters.append(future)
            try:
                return await future
            except _TryAgain:
                continue

    # -- rounds -----------------------------------------------------------------------

    async def _rounds(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            if not self._sending:
                self._fail_gathered(SendingStopped(f"endpoint {self.endpoint.name}: stopping, not batched"))
                continue
            started = time.monotonic()
            while time.monotonic() - started < self.settings.gather_max_s:  # until the samples all wait
                try:
                    await asyncio.wait_for(self._arrived.wait(), self.settings.gather_s)
                except TimeoutError:
                    break
                self._arrived.clear()
            if not self._gathering:
                continue
            taken = list(self._gathering.values())
            self._gathering.clear()
            self.round += 1
            log.info("batch_round", endpoint=self.endpoint.name, round=self.round, requests=len(taken))
            for chunk in self._files(taken):
                try:
                    await self._submit(chunk)
                except Exception as exc:  # the upload or the creation failed: next round
                    log.warning("batch_not_created", endpoint=self.endpoint.name, error=str(exc))
                    for item in chunk:
                        self._open.pop(item.key, None)
                        self._retry(item, f"batch not created: {exc}")

    def _files(self, items: list[_Asked]) -> list[list[_Asked]]:
        """The round's requests cut into input files within the API's limits."""
        files: list[list[_Asked]] = [[]]
        size = 0
        for item in items:
            line = len(self._line(item))
            if files[-1] and (
                len(files[-1]) >= self.settings.max_requests or size + line > self.settings.max_file_bytes
            ):
                files.append([])
                size = 0
            files[-1].append(item)
            size += line
        return files

    def _line(self, item: _Asked) -> bytes:
        line = {"custom_id": item.key, "method": "POST", "url": "/v1/chat/completions", "body": item.body}
        return orjson.dumps(line) + b"\n"

    async def _submit(self, items: list[_Asked]) -> None:
        """Upload one input file, journal it and its requests, then create its batch."""
        for item in items:
            self._open[item.key] = item
        data = b"".join(self._line(item) for item in items)
        name = f"agentrefine-{self.endpoint.name}-round{self.round}.jsonl"
        uploaded = await self._api.files.create(file=(name, data), purpose="batch")
        committed = sum(self._commitment(item) for item in items)
        record = BatchRecord(
            self.endpoint.name,
            uploaded.id,
            None,
            self.round,
            "uploaded",
            {i.key: i.key for i in items},
            committed,
        )
        self._journal.file_uploaded(record, {item.key: item.stage for item in items})
        batch = await self._api.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"agentrefine_round": str(self.round)},
        )
        self._journal.batch_created(uploaded.id, batch.id)
        self.batches_created += 1
        if self._budget is not None:
            self._budget.commit(uploaded.id, committed)
        log.info("batch_created", endpoint=self.endpoint.name, batch_id=batch.id, requests=len(items))
        self._spawn(self._follow(uploaded.id, batch.id, {item.key: item for item in items}))

    def _commitment(self, item: _Asked) -> float:
        """What a request may cost at the batch price: its prompt and a long answer of its
        stage (at or above the 90th percentile of the batches' answers so far; the cap until
        enough are seen)."""
        completion = self._sizes[item.stage].max_tokens(item.cap)
        return cost_usd(
            parse_usage({"prompt_tokens": item.estimate - item.max_tokens, "completion_tokens": completion}),
            self.endpoint.batch_prices(),
        )

    # -- following a batch ------------------------------------------------------------

    async def _follow(self, file_id: str, batch_id: str, asked: dict[str, _Asked]) -> None:
        """Poll the batch with backoff until it ends, then hand out its answers."""
        delay = self.settings.poll_s
        status = ""
        self._running[file_id] = batch_id
        while True:
            try:
                batch = await self._api.batches.retrieve(batch_id)
            except Exception as exc:  # the SDK has retried; keep polling
                log.warning("batch_poll_failed", batch_id=batch_id, error=str(exc))
            else:
                if batch.status != status:
                    status = batch.status
                    counts = batch.request_counts.model_dump() if batch.request_counts else None
                    self._journal.batch_status(file_id, status, counts)
                    log.info("batch_status", batch_id=batch_id, status=status, counts=counts)
                if status in TERMINAL:
                    break
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(self.settings.poll_max_s, delay * 1.5)
        answered: dict[str, Answer] = {}
        errors: dict[str, str] = {}
        if batch.output_file_id:
            await self._read(batch.output_file_id, asked, answered, errors)
        if batch.error_file_id:
            await self._read(batch.error_file_id, asked, answered, errors)
        failure = _batch_errors(batch) or f"batch {status}"
        for key, item in asked.items():
            self._open.pop(key, None)
            if key in answered:
                self._deliver(item, answered[key])
            else:
                self._retry(item, errors.get(key, failure))
        if self._budget is not None:
            self._budget.release(file_id)
        self._running.pop(file_id, None)
        self._journal.batch_status(file_id, "done:" + status)

    async def cancel_running(self) -> int:
        """Cancel the batches still running once the run's target is reached: their answers
        would be paid for and never used. Returns how many were cancelled. (A later run with
        a larger N resumes them: it polls them until cancelled and keeps what they answered.)"""
        cancelled = 0
        for file_id, batch_id in list(self._running.items()):
            try:
                await self._api.batches.cancel(batch_id)
            except Exception as exc:  # the SDK has retried; it may have ended meanwhile
                log.warning("batch_cancel_failed", batch_id=batch_id, error=str(exc))
                continue
            self._journal.batch_status(file_id, "cancelling")
            cancelled += 1
        if cancelled:
            log.info("batches_cancelled_at_target", endpoint=self.endpoint.name, batches=cancelled)
        return cancelled

    async def _read(
        self, file_id: str, asked: dict[str, _Asked], answered: dict[str, Answer], errors: dict[str, str]
    ) -> None:
        content = await self._api.files.content(file_id)
        for raw in content.read().splitlines():
            if not raw.strip():
                continue
            line = orjson.loads(raw)
            key = line.get("custom_id")
            if key not in asked:
                continue
            response = line.get("response") or {}
            if response.get("status_code") == 200:
                try:
                    answered[key] = self._answer(asked[key], response["body"])
                    continue
                except (ValueError, KeyError, TypeError) as exc:
                    errors[key] = f"bad answer: {exc}"
                    continue
            error = line.get("error") or (response.get("body") or {}).get("error") or {}
            errors[key] = (
                f"{response.get('status_code', '')} {error.get('code') or ''}: {error.get('message', '')}"
            )

    def _answer(self, item: _Asked, body: dict[str, Any]) -> Answer:
        """One answer as the cache keeps it, priced at the batch price; cached and reported."""
        ep = self.endpoint
        answer = parse_answer(orjson.dumps(body), ep.name, ep.model)
        usage = parse_usage(answer.usage)
        self._sizes[item.stage].observe(usage.prompt, usage.completion)
        cost, listed = cost_usd(usage, ep.batch_prices()), cost_usd(usage, ep.price)
        answer = replace(
            answer,
            cost_usd=cost,
            list_cost_usd=listed,
            stage=item.stage or "batch",
            max_tokens=item.max_tokens or None,
            max_tokens_cap=item.cap or None,
        )
        if self._cache is not None:
            item.context.run(self._cache.put, item.key, answer)
        event = RequestEvent(
            ep.name,
            ep.model,
            item.stage or "batch",
            "ok",
            0.0,
            usage,
            cost,
            item.max_tokens,
            saved_usd=listed - cost,
        )
        self._emit(event)
        return answer

    def _deliver(self, item: _Asked, answer: Answer) -> None:
        if not item.waiters:
            self._results[item.key] = answer
        for future in item.waiters:
            if not future.done():
                future.set_result(answer)

    def _retry(self, item: _Asked, reason: str) -> None:
        """Send the request's askers to the next round, or give it up."""
        item.tries += 1
        self._emit(
            RequestEvent(
                self.endpoint.name, self.endpoint.model, item.stage or "batch", "batch_error", error=reason
            )
        )
        online = self.settings.on_failure == "online"
        spent = item.tries >= self.settings.max_tries
        for future in item.waiters:
            if future.done():
                continue
            if online or spent:
                future.set_exception(BatchUnanswered(f"endpoint {self.endpoint.name}: batch: {reason}"))
            else:
                future.set_exception(_TryAgain())
        if item.waiters and not (online or spent):
            log.info("batch_request_retried", key=item.key[:12], reason=reason)

    def _fail_gathered(self, exc: Exception) -> None:
        for item in self._gathering.values():
            for future in item.waiters:
                if not future.done():
                    future.set_exception(exc)
        self._gathering.clear()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _batches_of(self, file_ids: set[str]) -> dict[str, str]:
        """The provider's batches made from these input files (file id -> batch id)."""
        found: dict[str, str] = {}
        async for batch in self._api.batches.list(limit=100):
            if batch.input_file_id in file_ids:
                found.setdefault(batch.input_file_id, batch.id)
        return found


class _TryAgain(Exception):
    """The request goes to the next round."""


def _batch_errors(batch: Any) -> str:
    errors = getattr(batch, "errors", None)
    data = getattr(errors, "data", None) or []
    return "; ".join(f"{e.code}: {e.message}" for e in data)
