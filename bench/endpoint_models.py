"""In-process endpoint models in compressed time: the concurrency controller against the three
shapes of provider, for `tests/llm/test_concurrency.py` and `make bench SECTIONS=concurrency`.

The models answer in the event loop's time, and `run_model` runs them on a looptime loop
(time only moves when every task waits), so an hour of a provider answering in 30-60 s takes
a second or two of CPU and no test ever waits on a wall clock:

- `RateLimited` (gpt-4o-like): 80 output tokens/s after a lognormal time to first token, RPM
  and TPM buckets that charge prompt + max_tokens at admission and answer 429 with
  `x-ratelimit-*` headers and a retry-after beyond them;
- `Capped` (deepseek-like): 35 tokens/s, at most `cap` requests at once, a 429 with no
  headers beyond;
- `Batch` (vllm-like): `max_seqs` sequences decoded at once, each decode step taking
  `step_s + per_seq_s x batch + per_seq2_s x batch^2`, so each sequence slows as the batch
  fills; requests beyond `max_seqs` wait in a FIFO queue; never a 429. Its knee (the batch
  past which throughput stops rising) is `Batch.knee`.

`run_model` drives the real `EndpointLimiter` the way a run does: samples (a script, then a
trajectory or two) are admitted while the limiter has room (`EndpointLimiter.has_room`), each
request takes a slot, and its outcome goes to the ticket; a 429 is retried after its
retry-after or a short backoff.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import looptime

from llm import Limits
from llm.limiter import EndpointLimiter

BACKLOG = 32  # requests queued at the limiter before admission waits (as `service.run`)
RETRY_BACKOFF_S = 0.5
ADMISSION_POLL_S = 0.25  # how often admission looks again when the limiter had no room


@dataclass(frozen=True)
class StageShape:
    name: str
    prompt_tokens: int
    completion_median: int  # lognormal, sigma 0.35
    max_tokens: int  # sent: a right-sized cap (what TPM is charged with)


STAGES = (
    StageShape("script", 700, 900, 1600),
    StageShape("trajectory", 2200, 2000, 3200),
)


@dataclass(frozen=True)
class Request:
    stage: str
    prompt_tokens: int
    completion_tokens: int  # what the model will write
    max_tokens: int


@dataclass(frozen=True)
class Answer:
    status: int
    latency_s: float = 0.0
    ttft_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _now() -> float:
    return asyncio.get_running_loop().time()


class RateLimited:
    """A provider with RPM/TPM limits and plenty of capacity: latency independent of load."""

    def __init__(self, rpm: int, tpm: int, tokens_per_s: float = 80.0, ttft_median_s: float = 0.6) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.tokens_per_s = tokens_per_s
        self.ttft_median_s = ttft_median_s
        self._rng = random.Random(1)
        self._levels = [float(rpm), float(tpm)]  # a fresh key: full buckets
        self._stamp: float | None = None

    def _refill(self) -> None:
        now = _now()
        if self._stamp is not None:
            for i, per_minute in enumerate((self.rpm, self.tpm)):
                self._levels[i] = min(per_minute, self._levels[i] + (now - self._stamp) * per_minute / 60)
        self._stamp = now

    def _headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.rpm),
            "x-ratelimit-limit-tokens": str(self.tpm),
            "x-ratelimit-remaining-requests": str(int(self._levels[0])),
            "x-ratelimit-remaining-tokens": str(int(self._levels[1])),
        }

    async def serve(self, request: Request, stream: bool) -> Answer:
        self._refill()
        charge = request.prompt_tokens + request.max_tokens
        if self._levels[0] < 1 or self._levels[1] < charge:
            wait = max((1 - self._levels[0]) * 60 / self.rpm, (charge - self._levels[1]) * 60 / self.tpm)
            return Answer(429, headers={**self._headers(), "retry-after": str(max(1, math.ceil(wait)))})
        self._levels[0] -= 1
        self._levels[1] -= charge
        headers = self._headers()
        ttft = self._rng.lognormvariate(math.log(self.ttft_median_s), 0.4)
        latency = ttft + request.completion_tokens / self.tokens_per_s
        await asyncio.sleep(latency)
        return Answer(200, latency, ttft if stream else None, headers)


class Capped:
    """A provider that caps the requests in flight per key and refuses more with a bare 429."""

    def __init__(self, cap: int, tokens_per_s: float = 35.0, ttft_median_s: float = 0.8) -> None:
        self.cap = cap
        self.tokens_per_s = tokens_per_s
        self.ttft_median_s = ttft_median_s
        self.active = 0
        self._rng = random.Random(2)

    async def serve(self, request: Request, stream: bool) -> Answer:
        if self.active >= self.cap:
            await asyncio.sleep(0.05)  # a refusal takes a round trip
            return Answer(429)
        self.active += 1
        try:
            ttft = self._rng.lognormvariate(math.log(self.ttft_median_s), 0.4)
            latency = ttft + request.completion_tokens / self.tokens_per_s
            await asyncio.sleep(latency)
        finally:
            self.active -= 1
        return Answer(200, latency, ttft if stream else None)


class Batch:
    """A vLLM-like server: continuous batching of up to `max_seqs` sequences, one token per
    sequence per decode step, the step slower the fuller the batch; the rest wait in order."""

    def __init__(
        self,
        max_seqs: int,
        step_s: float = 0.02,
        per_seq_s: float = 0.0002,
        per_seq2_s: float = 0.0,
        prefill_tokens_per_s: float = 20000.0,
    ) -> None:
        self.max_seqs = max_seqs
        self.step_s, self.per_seq_s, self.per_seq2_s = step_s, per_seq_s, per_seq2_s
        self.prefill_tokens_per_s = prefill_tokens_per_s
        self._queue: list[tuple[Request, asyncio.Future[float]]] = []
        self._running: list[tuple[float, int, asyncio.Future[None]]] = []  # (finish at token clock, seq)
        self._tokens = 0.0  # tokens each running sequence has decoded since the clock started
        self._stamp = 0.0
        self._seq = 0
        self._wakeup: asyncio.TimerHandle | None = None
        self._admitting = 0  # taken from the queue, not yet running

    def step_time(self, batch: int) -> float:
        return self.step_s + self.per_seq_s * batch + self.per_seq2_s * batch * batch

    @property
    def knee(self) -> int:
        """The batch past which throughput (batch / step time) stops rising."""
        best = max(range(1, self.max_seqs + 1), key=lambda b: b / self.step_time(b))
        return best

    def throughput(self, batch: int) -> float:
        """Tokens per second at a batch of `batch` (capped at `max_seqs`)."""
        b = min(batch, self.max_seqs)
        return b / self.step_time(b)

    async def serve(self, request: Request, stream: bool) -> Answer:
        arrived = _now()
        admitted: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queue.append((request, admitted))
        self._schedule()
        started = await admitted
        self._admitting -= 1
        prefill = request.prompt_tokens / self.prefill_tokens_per_s
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._advance()
        ttft = started - arrived + prefill + self.step_time(len(self._running) + 1)
        self._seq += 1
        heapq.heappush(self._running, (self._tokens + request.completion_tokens, self._seq, done))
        self._schedule()
        await done
        return Answer(200, _now() - arrived + prefill, ttft if stream else None)

    def _advance(self) -> None:
        now = _now()
        if self._running:
            self._tokens += (now - self._stamp) / self.step_time(len(self._running))
        self._stamp = now

    def _schedule(self) -> None:
        """Finish what is done, admit from the queue, and wake up at the next finish."""
        self._advance()
        while self._running and self._running[0][0] <= self._tokens + 1e-9:
            _, _, done = heapq.heappop(self._running)
            done.set_result(None)
        while self._queue and len(self._running) + self._admitting < self.max_seqs:
            _, admitted = self._queue.pop(0)
            admitted.set_result(_now())
            self._admitting += 1
        if self._wakeup is not None:
            self._wakeup.cancel()
        if self._running:
            wait = (self._running[0][0] - self._tokens) * self.step_time(len(self._running))
            self._wakeup = asyncio.get_running_loop().call_later(max(wait, 0.0), self._schedule)


Model = RateLimited | Capped | Batch


@dataclass
class Figures:
    """What a model run measured (the second half of the run is the settled part)."""

    duration_s: float
    answered: int = 0
    refused: int = 0
    tokens: int = 0
    settled_in_flight: float = 0.0  # mean requests at the endpoint over the second half
    settled_limit: float = 0.0
    max_in_flight: int = 0
    ramp_s: float | None = None  # until the requests in flight first reached 90% of the settled mean
    settled_requests_per_s: float = 0.0
    settled_tokens_per_s: float = 0.0
    trace: list[tuple[float, int, int, int]] = field(default_factory=list)  # (t, limit, in flight, waiting)

    @property
    def share_429(self) -> float:
        return self.refused / max(1, self.answered + self.refused)


async def _drive(model: Model, limits: Limits, duration_s: float, stream: bool, seed: int) -> Figures:
    rng = random.Random(seed)
    limiter = EndpointLimiter(limits, "model", clock=_now)
    figures = Figures(duration_s)
    settled_answers: list[tuple[float, int]] = []
    half = duration_s / 2

    async def ask(shape: StageShape) -> None:
        completion = max(1, int(rng.lognormvariate(math.log(shape.completion_median), 0.35)))
        request = Request(
            shape.name, shape.prompt_tokens, min(completion, shape.max_tokens), shape.max_tokens
        )
        while True:
            async with limiter.slot(shape.prompt_tokens + shape.max_tokens, shape.name) as ticket:
                answer = await model.serve(request, stream)
                if answer.status == 200:
                    charged = request.prompt_tokens + request.max_tokens  # as the provider counts it
                    ticket.succeeded(
                        charged,
                        answer.headers,
                        answer.latency_s,
                        first_token_s=answer.ttft_s,
                        completion_tokens=request.completion_tokens,
                    )
                    figures.answered += 1
                    if _now() >= half:
                        settled_answers.append((_now(), request.completion_tokens))
                    return
                limiter.observe(answer.headers)
                retry = float(answer.headers.get("retry-after", 0)) or RETRY_BACKOFF_S * rng.random()
                ticket.rate_limited(retry, answer.headers)
                figures.refused += 1
            await asyncio.sleep(retry)

    async def sample() -> None:
        await ask(STAGES[0])
        await ask(STAGES[1])
        if rng.random() < 0.3:  # a regenerated trajectory
            await ask(STAGES[1])

    async def watch() -> None:
        while True:
            control = limiter.concurrency
            figures.trace.append((_now(), control.limit, control.sending, control.waiting))
            await asyncio.sleep(1.0)

    samples: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    def done(task: asyncio.Task[None]) -> None:
        samples.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    watcher = asyncio.create_task(watch())
    while _now() < duration_s and not failures:
        while limiter.has_room(BACKLOG):
            task = asyncio.create_task(sample())
            samples.add(task)
            task.add_done_callback(done)
            await asyncio.sleep(0)
        await asyncio.sleep(ADMISSION_POLL_S)
    for task in [*samples, watcher]:
        task.cancel()
    await asyncio.gather(*samples, watcher, return_exceptions=True)
    if failures:
        raise failures[0]
    _summarise(figures, settled_answers, half)
    return figures


def _summarise(figures: Figures, settled_answers: list[tuple[float, int]], half: float) -> None:
    settled = [row for row in figures.trace if row[0] >= half]
    figures.settled_in_flight = sum(row[2] for row in settled) / max(1, len(settled))
    figures.settled_limit = sum(row[1] for row in settled) / max(1, len(settled))
    figures.max_in_flight = max((row[2] for row in figures.trace), default=0)
    target = 0.9 * figures.settled_in_flight
    figures.ramp_s = next((t for t, _, in_flight, _ in figures.trace if in_flight >= target), None)
    span = figures.duration_s - half
    figures.settled_requests_per_s = len(settled_answers) / span
    figures.settled_tokens_per_s = sum(tokens for _, tokens in settled_answers) / span
    figures.tokens = sum(tokens for _, tokens in settled_answers)


def run_model(
    model_factory: Callable[[], Model],
    duration_s: float,
    limits: Limits | None = None,
    stream: bool = False,
    seed: int = 0,
) -> Figures:
    """Drive a fresh model through a fresh limiter for `duration_s` of compressed time."""

    async def main() -> Figures:
        return await _drive(model_factory(), limits or Limits(), duration_s, stream, seed)

    with asyncio.Runner(loop_factory=lambda: looptime.new_event_loop(start=0.0, noop_cycles=0)) as runner:
        return runner.run(main())
