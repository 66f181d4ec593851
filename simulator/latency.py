"""The latency model of the embedded endpoint: when an answer's first token is out, and how
many of its tokens are out at any moment after that.

An answer (a `Generation`) first takes a place in the batch (`Batch`), then waits its time to
first token: a lognormal base (`latency_median_s`, `latency_sigma`) plus the prompt's
prefill (prompt tokens / `prefill_tokens_per_s`), then decodes its completion tokens.

Decoding: every sequence in the batch decodes at the same per-sequence speed,

    speed(b) = output_tokens_per_s / (1 + b / batch_half_speed)      (b: sequences in the batch)

(`batch_half_speed` 0: no slowdown), so the batch's throughput b · speed(b) rises with b and
flattens toward output_tokens_per_s · batch_half_speed, as a vLLM server's does. With
`max_num_seqs` > 0 at most that many sequences are in the batch (from prefill to their
last token); the others wait in FIFO order, so their time to first token grows and the
throughput stops rising: the knee is `max_num_seqs`. `output_tokens_per_s` 0: an answer is
out whole at its first token.

The batch keeps one "virtual clock": the tokens a sequence decoding since the start would
have decoded, advanced at speed(b) whenever b changes. A sequence has decoded the virtual
clock now minus the clock at its start, so one timer (for the next sequence to finish)
serves the whole batch, whatever its size.

Every duration is in model seconds times `time_scale` (the real seconds it takes).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Callable

from simulator.settings import SimSettings


def decode_speed(settings: SimSettings, batch: int) -> float:
    """Tokens per model second of one sequence while `batch` sequences are in the batch
    (math.inf when decoding takes no time)."""
    if settings.output_tokens_per_s <= 0:
        return math.inf
    if settings.batch_half_speed <= 0:
        return settings.output_tokens_per_s
    return settings.output_tokens_per_s / (1 + batch / settings.batch_half_speed)


def knee(settings: SimSettings) -> int | None:
    """The concurrency past which the endpoint's throughput stops rising (its batch is full
    and requests only queue), or None when it has none."""
    return settings.max_num_seqs or None


def mean_answer_s(
    settings: SimSettings, prompt_tokens: float, completion_tokens: float, batch: int = 1
) -> float:
    """Mean real seconds of one answer that does not queue, in a batch of `batch`: the mean of
    the lognormal base, prefill, and decoding at speed(batch)."""
    base = settings.latency_median_s * math.exp(settings.latency_sigma**2 / 2)
    prefill = prompt_tokens / settings.prefill_tokens_per_s if settings.prefill_tokens_per_s > 0 else 0.0
    decode = completion_tokens / decode_speed(settings, batch)
    return (base + prefill + decode) * settings.time_scale


class Batch:
    """The sequences being generated: a place for each (at most `max_num_seqs`), the FIFO
    queue of those waiting for one, and the shared virtual decode clock."""

    def __init__(self, settings: SimSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self.running = 0  # sequences holding a place (prefilling or decoding)
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._virtual = 0.0  # tokens a sequence decoding since the start would have decoded
        self._stamp = clock()
        self._ends: list[tuple[float, int, Decoding]] = []  # (virtual clock at its end, order, it)
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def _rate(self) -> float:
        """Virtual tokens per real second now."""
        return decode_speed(self._settings, self.running) / self._settings.time_scale

    def virtual_now(self) -> float:
        return self._virtual + self._rate() * (self._clock() - self._stamp)

    def _advance(self) -> None:
        now = self._clock()
        rate = self._rate()
        if not math.isinf(rate):  # decoding takes no time: there is no clock to keep
            self._virtual += rate * (now - self._stamp)
        self._stamp = now

    async def enter(self) -> None:
        """Take a place in the batch, waiting in line while it is full."""
        slots = self._settings.max_num_seqs
        if slots and (self.running >= slots or self._waiting):
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn  # `leave` hands its place over: `running` is already counted
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self.leave()  # the place came as we were cancelled: pass it on
                else:
                    self._waiting.remove(turn)
                raise
            return
        self._advance()
        self.running += 1
        self._reschedule()

    def leave(self) -> None:
        """Give up a place: to the first in line, or free it (the batch shrinks)."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._advance()
        self.running -= 1
        self._reschedule()

    def decode(self, tokens: int) -> Decoding:
        """Start decoding `tokens` tokens (the caller holds a place)."""
        self._advance()
        decoding = Decoding(self, self._virtual, tokens)
        if tokens <= 0 or math.isinf(self._rate()):
            decoding.done.set_result(None)
        else:
            heapq.heappush(self._ends, (self._virtual + tokens, next(self._order), decoding))
            self._reschedule()
        return decoding

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._ends and self._ends[0][2].done.done():
            heapq.heappop(self._ends)  # finished, or abandoned by a cancelled request
        if not self._ends:
            return
        wait = max(0.0, (self._ends[0][0] - self._virtual) / self._rate())  # just advanced: from now
        self._timer = asyncio.get_running_loop().call_later(wait, self._finish_due)

    def _finish_due(self) -> None:
        self._timer = None
        self._advance()
        while self._ends and self._ends[0][0] <= self._virtual + 1e-6:
            _, _, decoding = heapq.heappop(self._ends)
            if not decoding.done.done():
                decoding.done.set_result(None)
        self._reschedule()


class Decoding:
    """One sequence's decoding: how many of its tokens are out; `done` when all are."""

    def __init__(self, batch: Batch, start: float, tokens: int) -> None:
        self._batch = batch
        self._start = start
        self.tokens = tokens
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def decoded(self) -> int:
        if self.done.done():
            return self.tokens
        return min(self.tokens, int(self._batch.virtual_now() - self._start))

    def abandon(self) -> None:
        if not self.done.done():
            self.done.cancel()


class Generation:
    """One answer being generated: a place in the batch, the time to first token, then its
    decoding. `close()` (idempotent) gives the place back; it happens by itself at the last
    token."""

    def __init__(self, model: Model, prompt_tokens: int) -> None:
        self._model = model
        self._prompt_tokens = prompt_tokens
        self.decoding: Decoding | None = None
        self._placed = False
        self.queued_s = 0.0  # real seconds spent waiting for a place in the batch
        self.first_token_at = 0.0  # time.monotonic() of the first token

    async def first_token(self) -> None:
        """Wait for a place in the batch, then the time to first token."""
        batch = self._model.batch
        waited = time.monotonic()
        await batch.enter()
        self._placed = True
        self.queued_s = time.monotonic() - waited
        await asyncio.sleep(self._model.ttft_s(self._prompt_tokens))
        self.first_token_at = time.monotonic()

    def decode(self, tokens: int) -> None:
        """Start decoding the answer's `tokens` tokens (after `first_token`)."""
        self.decoding = self._model.batch.decode(tokens)
        self.decoding.done.add_done_callback(lambda _: self.close())

    def decoded(self) -> int:
        return self.decoding.decoded() if self.decoding is not None else 0

    async def last_token(self) -> None:
        """Wait until the whole answer is decoded (after `decode`)."""
        assert self.decoding is not None
        await self.decoding.done

    def close(self) -> None:
        if self.decoding is not None:
            self.decoding.abandon()
        if self._placed:
            self._placed = False
            self._model.batch.leave()


class Model:
    """The endpoint's generator: draws times to first token and runs the batch."""

    def __init__(self, settings: SimSettings, rng: random.Random) -> None:
        self.settings = settings
        self._rng = rng
        self.batch = Batch(settings)

    def base_s(self) -> float:
        """The lognormal base latency, in real seconds."""
        s = self.settings
        if s.latency_median_s <= 0:
            return 0.0
        return self._rng.lognormvariate(math.log(s.latency_median_s), s.latency_sigma) * s.time_scale

    def ttft_s(self, prompt_tokens: int) -> float:
        """Real seconds from a place in the batch to the first token."""
        s = self.settings
        prefill = prompt_tokens / s.prefill_tokens_per_s if s.prefill_tokens_per_s > 0 else 0.0
        return self.base_s() + prefill * s.time_scale

    def generation(self, prompt_tokens: int) -> Generation:
        return Generation(self, prompt_tokens)
