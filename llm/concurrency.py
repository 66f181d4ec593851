"""Adaptive concurrency for one endpoint: how many of its requests may be in flight now.

The limit answers one question: would more requests in flight get more work done, or would
they only wait? Three kinds of endpoint answer it differently, and each has its own signal:

- **A provider with rate limits** (OpenAI): its latency does not depend on our load; its
  RPM/TPM buckets (`llm/limiter.py`) pace the requests. The limit must never be what
  holds them back, however long the answers: by Little's law the requests the buckets let
  through need `rate x latency` slots, so that is the limit's floor (`floor`, kept by the
  limiter from the buckets and the measured latency, with `LITTLE_HEADROOM` on top).
- **A concurrency cap** (DeepSeek: a 429 without rate-limit headers or retry-after beyond
  N requests per account): the cap is learned from the refusals themselves. A request refused
  when `level` requests were at the endpoint (itself included) says the cap is below `level`,
  so `cap = level - 1`, and the limit stays there instead of being cut by a quarter per
  refusal. After every `CAP_PROBE_EVERY` answers a probe sends `step` requests above the
  cap; each one accepted raises the cap to its level and doubles the step (a cap lowered by
  another client's load grows back in a few round trips), a refused one resets it. Once the
  cap is known, about one request in `CAP_PROBE_EVERY` is refused.
- **An endpoint that queues** (vLLM, any server with a batch): past its knee more requests
  in flight bring no more throughput, only waiting. Latency alone cannot tell waiting from
  writing (a 2,000-token trajectory takes 25 s at 80 tokens/s with nobody queueing), so the
  signals are per stage and per output token. Tokens/s delivered = requests in flight /
  seconds per output token (Little's law), so the *elasticity* of the seconds per token with
  the number in flight, `e = d log(signal) / d log(in flight)`, says what the last step bought:
  the throughput rose by `1 - e` of the step. A vLLM batch slows each sequence as it fills
  (e of 0.2-0.9 below its knee); requests beyond the batch queue (e of 1 or more). A streamed
  answer gives two signals: its time to first token, where queueing shows at once (e far
  above 1 past the batch), and its decode time per token (the batch's slow-down). Any other
  answer gives its latency per output token. A step is judged by the signal that rose most
  (a queue adds the same wait to every answer, so it shows most in the stage with the
  shortest answers); a step whose `e` reaches `MAX_ELASTICITY` is taken back.

The latency controller measures in windows. After a change of limit, the slots are clocked
in (at most one more per request that ends, as TCP's slow start, so a step up never goes out
as one burst that a cap would refuse whole) and the first window opens once the new limit is
reached (its queue formed). A window takes the next `size` requests and closes once
`CLOSE_SHARE` of them have ended, so long answers weigh as much as short ones; each request
is credited with the mean number in flight over its life. Its signals are compared stage by
stage with the reference window's, so a change in the mix of stages (short scripts at first,
long trajectories later) is never read as load. A window in which the limit held nothing back
(the requests waited for the RPM/TPM buckets, or fewer were asked for) changes nothing: the
limit never grows beyond what is used.

- `ramp`: start at `INITIAL_LIMIT` and double per window (windows of a quarter of the limit)
  until a step's `e` reaches `MAX_ELASTICITY`; then go back to the last good limit and hold.
  A window whose stages differ too much from the one before (the run's first scripts, then
  its first trajectories) is measured again at the same limit before the next doubling.
- `hold`: `HOLD_WINDOWS` windows at the settled limit, each the new reference; then `probe`
  by `PROBE_GAIN`, up or down: a probe up is kept while `e` stays below `MAX_ELASTICITY` (and
  the next one follows at once), a probe down while `e` reaches it (the level above only
  queued); a probe taken back turns the next one the other way. So the limit keeps checking
  the knee from both sides, and follows it when it moves (other tenants on the server).

A 429 with a retry-after but no rate-limit headers, on an endpoint without RPM/TPM buckets
(an unknown rate limit), still cuts the limit by `RATE_LIMIT_CUT` once per window, as before:
nothing else could pace such an endpoint. Decisions go to the run log at most once per
`LOG_EVERY_S` (every change of the learned cap at once).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger()

# The constants a tuning with the providers bench may move (each with its reasoning).
INITIAL_LIMIT = 32  # the first round trip, then doubling: small enough for a one-GPU server
PROBE_GAIN = 1.25  # 25% per probe: the knee is found within 25% without big overshoots
# e = d log(seconds per token) / d log(in flight) at or above this: the step bought less than
# 10% of its size in throughput, the rest queued. A vLLM batch's own slow-down stays below it
# up to its knee; a queue in front of the batch lifts e to 1 and TTFT's e far above.
MAX_ELASTICITY = 0.9
HOLD_WINDOWS = 3  # windows at the settled limit between two probes (a failed probe costs one)
MIN_WINDOW = 64  # requests per window at least; else half the limit (a quarter while ramping)
RAMP_WINDOW = 32
CLOSE_SHARE = 0.9  # a window closes when this share of its requests has ended
MIN_COMPARED = 16  # answers of the same stages in both windows before comparing them
MIN_STEP = 0.05  # log change of the load below which two windows are not compared
MIN_TOKENS = 16  # the per-token time of a very short answer is taken as if it had this many
LITTLE_HEADROOM = 1.25  # the floor: requests/s the buckets allow x mean latency x this
CAP_PROBE_EVERY = 400  # answers between probes above a learned cap (~0.25% of them refused)
RATE_LIMIT_CUT = 0.75  # an unknown rate limit's 429 (retry-after, no headers, no buckets)
LOG_EVERY_S = 10.0


@dataclass(slots=True)
class Send:
    """One request sent under the controller: what its outcome is judged against."""

    stage: str
    window: int
    level: int  # requests at the endpoint when it was sent, itself included
    probe: bool  # sent above the learned cap, to test it
    measured: bool  # counted in its window (not sent while a new limit was still filling up)
    sent_at: float
    load_at_send: float  # the controller's running integral of requests in flight over time
    reported: bool = False  # its outcome has been taken into account


class _Window:
    """The requests sent at one limit: their signals per stage and the load they saw."""

    __slots__ = (
        "answered",
        "ended",
        "id",
        "limit",
        "load_sum",
        "paced",
        "queued",
        "sends",
        "signals",
        "size",
    )

    def __init__(self, id: int, limit: float, size: int) -> None:
        self.id = id
        self.limit = limit
        self.size = size
        self.signals: dict[str, list[float]] = {}  # stage/signal -> [answers, sum of log signal]
        self.load_sum = 0.0
        self.answered = 0
        self.ended = 0  # requests over, answered or not
        self.sends = 0
        self.queued = 0  # sends that had waited for a slot
        self.paced = 0  # sends that had waited for the RPM/TPM buckets or a cooldown

    def add(self, key: str, log_signal: float) -> None:
        entry = self.signals.get(key)
        if entry is None:
            self.signals[key] = [1.0, log_signal]
        else:
            entry[0] += 1
            entry[1] += log_signal

    @property
    def load(self) -> float:
        """The mean number of requests at the endpoint over the lives of this window's answers."""
        return self.load_sum / self.answered if self.answered else 0.0

    @property
    def held_back(self) -> bool:
        """Whether the limit was what held requests back (not the buckets, not the demand)."""
        return self.sends > 0 and 2 * self.queued >= self.sends and 4 * self.paced < self.sends

    def step(self, reference: _Window) -> float:
        """The log change of the load from `reference` to this window."""
        return math.log(self.load / reference.load) if reference.load and self.load else 0.0

    def elasticity(self, reference: _Window) -> float | None:
        """`e` of the step from `reference` to this window: the largest over the signals
        (each stage's TTFT, decode time per token or latency per token) with `MIN_COMPARED`
        answers in both windows; None when none has. The largest, because a queue shows most
        in the stage with the shortest answers (its wait is a larger part of each token's
        time), while a batch's slow-down shows alike in all."""
        step = self.step(reference)
        if abs(step) < MIN_STEP:
            return None
        rises = [
            log_sum / count - other[1] / other[0]
            for key, (count, log_sum) in self.signals.items()
            if (other := reference.signals.get(key)) is not None and min(count, other[0]) >= MIN_COMPARED
        ]
        return max(rise / step for rise in rises) if rises else None


def _show(elasticity: float | None) -> str:
    return "-" if elasticity is None else f"{elasticity:.2f}"


class AdaptiveConcurrency:
    """A semaphore whose size follows the endpoint (see the module docstring).

    A request takes a slot (`acquire`), is `sent` when it leaves for the endpoint and
    `finished` when it is over; in between its outcome is reported (`succeeded`,
    `refused_over_cap`, `refused_over_rate`). A slot given up before sending is `release`d.
    """

    def __init__(
        self,
        ceiling: int,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        initial: int = INITIAL_LIMIT,
    ) -> None:
        """`initial`: the first round's limit (`INITIAL_LIMIT`; a process holding part of a key
        starts at its part of it)."""
        self.initial = initial
        self.ceiling = max(1, ceiling)
        self.name = name
        self.floor = 0.0  # Little's law: what the RPM/TPM buckets can keep busy (set by the limiter)
        self.cap: int | None = None  # the endpoint's concurrency cap, learned from its 429s
        self.mode = "ramp"
        self.in_flight = 0  # slots taken (sent or about to be)
        self.sending = 0  # requests at the endpoint
        self.last_elasticity: float | None = None
        self._clock = clock
        self._load = 0.0  # integral of `sending` over time
        self._load_stamp = clock()
        self._limit = float(min(self.ceiling, initial))
        self._clocked = initial  # slots that may be taken before more requests end
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._window_ids = 0
        self._sending_window = self._new_window()
        self._filling = True  # sends not measured until the limit is first reached
        self._measuring: dict[int, _Window] = {}  # windows done sending, waiting for answers
        self._reference: _Window | None = None
        self._settled = self._limit
        self._hold_left = HOLD_WINDOWS
        self._probe_down = False
        self._cut_window = -1  # the window an unknown rate limit's 429 last cut
        # probing above the cap
        self._probe_room = 0  # requests that may still be sent above the cap in this round
        self._probes_out = 0
        self._probe_failed = False
        self._probe_step = 1
        self._answers_since_probe = 0
        self._reason = "start"
        self._logged_at = -math.inf
        self._logged: tuple[int, int | None] = (self._capped(0), None)

    # -- slots ----------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The requests that may be in flight now."""
        return self._capped(self._probe_room)

    def _capped(self, probe_room: int) -> int:
        limit = max(self._limit, self.floor)
        if self.cap is not None:
            limit = min(limit, self.cap + probe_room)
        return max(1, min(self.ceiling, int(limit)))

    @property
    def waiting(self) -> int:
        """Requests waiting to be sent: for a slot, or holding one while the buckets pace them."""
        return len(self._waiters) + self.in_flight - self.sending

    async def acquire(self) -> bool:
        """Wait for a free slot; True when the request had to wait for one."""
        if not self._waiters and self.in_flight < self._room():
            self.in_flight += 1
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            elif waiter in self._waiters:  # else `_wake` already dropped it
                self._waiters.remove(waiter)
            raise
        return True

    def release(self) -> None:
        """Give back a slot whose request was never sent."""
        self.in_flight -= 1
        self._wake()

    def sent(self, stage: str, queued: bool, paced: bool) -> Send:
        """The request holding a slot leaves for the endpoint now. `queued`: it waited for its
        slot; `paced`: it waited for the RPM/TPM buckets or a cooldown."""
        now = self._tick()
        self.sending += 1
        probe = self.cap is not None and self.sending > self.cap and self._probe_room > 0
        if probe:
            self._probe_room -= 1
            self._probes_out += 1
        window = self._sending_window
        send = Send(stage, window.id, self.sending, probe, not self._filling, now, self._load)
        if self._filling:  # a new limit is measured once it is reached (its queue formed)
            self._filling = self.sending < self.limit
            return send
        window.sends += 1
        window.queued += queued
        window.paced += paced
        if window.sends >= window.size:  # full: it measures from now on, the next one sends
            self._measuring[window.id] = window
            self._sending_window = self._new_window()
            self._close_if_done(window)
        return send

    def finished(self, send: Send) -> None:
        """The sent request is over, whatever its outcome: free its slot."""
        self._tick()
        self._clocked = max(self._clocked, self.in_flight + 1)  # its replacement and one more
        self.sending -= 1
        if not send.reported:  # no verdict (a fault): it still ends its window's share
            send.reported = True
            if send.probe:
                self._probe_done()
            self._ended(send)
        self.release()

    # -- outcomes -------------------------------------------------------------------------

    def succeeded(
        self, send: Send, latency_s: float, ttft_s: float | None = None, completion_tokens: int | None = None
    ) -> None:
        """An answer after `latency_s` (its first content after `ttft_s` when streamed), with
        `completion_tokens` written (None: not known)."""
        if send.reported:
            return
        send.reported = True
        if send.probe:
            self._set_cap(max(self.cap or 0, send.level), "probe accepted")
            self._probe_done()
        elif self.cap is not None:
            self._answers_since_probe += 1
            self._maybe_probe()
        window = self._window(send)
        if window is not None:
            now = self._tick()
            life = now - send.sent_at
            window.load_sum += (self._load - send.load_at_send) / life if life > 0 else self.sending
            window.answered += 1
            if completion_tokens is None:
                window.add(send.stage + "/token", _log(latency_s))
            elif ttft_s is None:
                window.add(send.stage + "/token", _log(latency_s / max(completion_tokens, MIN_TOKENS)))
            else:
                window.add(send.stage + "/ttft", _log(ttft_s))
                decode = (latency_s - ttft_s) / max(completion_tokens, MIN_TOKENS)
                window.add(send.stage + "/decode", _log(decode))
        self._ended(send)

    def refused_over_cap(self, send: Send) -> None:
        """A 429 without rate-limit headers or retry-after: a concurrency cap below `send.level`."""
        if send.reported:
            return
        send.reported = True
        if self.cap is None or send.level - 1 < self.cap:
            self._set_cap(max(1, send.level - 1), "429 over the cap")
        if send.probe:
            self._probe_failed = True
            self._probe_done()
        self._ended(send)

    def refused_over_rate(self, send: Send) -> None:
        """A rate limit's 429 on an endpoint without RPM/TPM buckets: cut once per window."""
        if send.reported:
            return
        send.reported = True
        self._ended(send)
        if send.window <= self._cut_window:
            return
        self._cut_window = self._sending_window.id  # sent before this cut: no second cut
        self._reference = None
        self._settle(self.limit * RATE_LIMIT_CUT, "429 rate limited")

    # -- the latency controller -------------------------------------------------------------

    def _tick(self) -> float:
        now = self._clock()
        self._load += self.sending * (now - self._load_stamp)
        self._load_stamp = now
        return now

    def _new_window(self) -> _Window:
        self._window_ids += 1
        share = 4 if self.mode == "ramp" else 2
        minimum = RAMP_WINDOW if self.mode == "ramp" else MIN_WINDOW
        return _Window(self._window_ids, self._limit, max(minimum, int(self._limit) // share))

    def _window(self, send: Send) -> _Window | None:
        """The window that measures `send` (None: not measured, or its limit is gone)."""
        if not send.measured:
            return None
        if send.window == self._sending_window.id:
            return self._sending_window
        return self._measuring.get(send.window)

    def _ended(self, send: Send) -> None:
        window = self._window(send)
        if window is not None:
            window.ended += 1
            self._close_if_done(window)

    def _close_if_done(self, window: _Window) -> None:
        if window.id in self._measuring and window.ended >= CLOSE_SHARE * window.sends:
            del self._measuring[window.id]
            self._close(window)

    def _set(self, limit: float, reason: str) -> None:
        """Adopt a new limit: the windows sent at the old one no longer count."""
        self._clocked = min(self._clocked, max(self.in_flight, 1))  # a step up is clocked in
        self._limit = max(1.0, min(float(self.ceiling), limit))
        self._reason = reason
        self._measuring.clear()
        self._sending_window = self._new_window()
        self._filling = True
        self._wake()
        self._log()

    def _close(self, window: _Window) -> None:
        self._limit = max(self._limit, self.floor)
        capped = self.cap is not None and self.cap < self._limit
        if not window.held_back or capped:  # nothing learned about this limit
            return
        reference = self._reference
        elasticity = window.elasticity(reference) if reference is not None else None
        self.last_elasticity = elasticity
        queued = elasticity is not None and elasticity >= MAX_ELASTICITY
        if self.mode == "ramp":
            if queued:
                assert reference is not None
                self._probe_down = reference.limit <= self.initial  # even the start queued
                self._settle(reference.limit, f"ramp ended: e={_show(elasticity)}")
            elif elasticity is None and reference is not None and abs(window.step(reference)) >= MIN_STEP:
                self._reference = window  # the stages changed (the run's start): measure again here
            else:
                self._reference = window
                self._set(self._limit * 2, "ramp")
        elif self.mode == "probe":
            if queued == self._probe_down:  # up: no queueing; down: the level above queued
                self._reference = window
                self._settled = self._limit
                direction = "down" if self._probe_down else "up"
                step = 1 / PROBE_GAIN if self._probe_down else PROBE_GAIN
                self._set(self._limit * step, f"probe {direction} kept: e={_show(elasticity)}")
            else:
                self._probe_down = not self._probe_down
                self._settle(self._settled, f"probe taken back: e={_show(elasticity)}")
        else:  # hold
            self._reference = window
            self._hold_left -= 1
            if self._hold_left <= 0:
                self.mode = "probe"
                step = 1 / PROBE_GAIN if self._probe_down else PROBE_GAIN
                self._set(self._settled * step, "probe " + ("down" if self._probe_down else "up"))

    def _settle(self, limit: float, reason: str) -> None:
        """Hold `limit`: the windows at it become the reference for the next probe."""
        self.mode = "hold"
        self._hold_left = HOLD_WINDOWS
        self._settled = limit
        self._set(limit, reason)

    # -- the learned cap ------------------------------------------------------------------

    def _set_cap(self, cap: int, reason: str) -> None:
        if cap != self.cap:
            self.cap = cap
            self._reason = reason
            self._log(force=True)
        self._wake()

    def _maybe_probe(self) -> None:
        """Open a probe round above the cap when one is due and the cap holds requests back."""
        if (
            self._answers_since_probe >= CAP_PROBE_EVERY
            and self._probes_out == 0
            and self._probe_room == 0
            and self._waiters
        ):
            self._answers_since_probe = 0
            self._probe_failed = False
            self._probe_room = self._probe_step
            self._wake()

    def _probe_done(self) -> None:
        self._probes_out -= 1
        if self._probes_out > 0 or self._probe_room > 0:
            return
        if self._probe_failed:
            self._probe_step = 1
        else:
            self._probe_step *= 2
            self._answers_since_probe = CAP_PROBE_EVERY  # room above: probe again at once
        self._maybe_probe()

    # -- plumbing -------------------------------------------------------------------------

    def _room(self) -> int:
        """Slots that may be taken now: the limit, reached by at most one more per request
        that ends (as TCP's slow start), so that a step up never goes out as one burst that a
        concurrency cap would refuse whole. Without clocking where RPM/TPM buckets pace."""
        limit = self.limit
        return limit if self.floor > 0 else min(limit, self._clocked)

    def _wake(self) -> None:
        limit = self._room()
        while self._waiters and self.in_flight < limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _log(self, force: bool = False) -> None:
        """The run log gets the controller's decisions at a low rate, not one per window."""
        now = self._clock()
        state = (self._capped(0), self.cap)  # the limit without probes above the cap
        if state == self._logged or (not force and now - self._logged_at < LOG_EVERY_S):
            return
        self._logged_at, self._logged = now, state
        log.info(
            "concurrency",
            endpoint=self.name,
            limit=state[0],
            cap=self.cap,
            floor=round(self.floor, 1),
            mode=self.mode,
            reason=self._reason,
            in_flight=self.sending,
            waiting=self.waiting,
        )


def _log(x: float) -> float:
    return math.log(max(x, 1e-6))
