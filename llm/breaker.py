"""Circuit breaker for one endpoint: stop the run when the endpoint is down or refuses the
configuration, instead of failing sample after sample while the persona source runs dry.

Two streaks, both reset by any successful answer:

- failed tries (5xx, reset, timeout, unreadable answer): `failures` of them in a row,
  spanning at least `outage_s` with no success, mean the endpoint is down;
- 400-class answers (400/413/422): one alone is that request's own problem (a context too
  long: its sample fails and the run goes on); `bad_requests` in a row mean the
  configuration is wrong (model parameters, `extra_body`, `max_tokens`).

Either trips `EndpointDown`, which stops the run with one line; samples in flight stay
unfinished in the store and resume, from their stored answers, with the same command.
A 429 is neither: it is backpressure (see `llm.client`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from llm.config import Breaker

RESUME_HINT = "then run the same command to resume"


class EndpointDown(Exception):
    """The endpoint failed every request for a while, or refused request after request."""


class CircuitBreaker:
    def __init__(self, label: str, settings: Breaker, clock: Callable[[], float] = time.monotonic) -> None:
        self._label = label
        self._settings = settings
        self._clock = clock
        self._failures = 0
        self._first_failure = 0.0
        self._bad_requests = 0

    def success(self) -> None:
        self._failures = 0
        self._bad_requests = 0

    def failure(self, detail: str) -> None:
        """Count one failed try; raise `EndpointDown` when the outage is long enough."""
        now = self._clock()
        if self._failures == 0:
            self._first_failure = now
        self._failures += 1
        span = now - self._first_failure
        if self._failures >= self._settings.failures and span >= self._settings.outage_s:
            raise EndpointDown(
                f"{self._label}: {self._failures} tries failed in a row over {span:.0f} s with no "
                f"success (last: {detail}); check the endpoint, {RESUME_HINT}"
            )

    def bad_request(self, detail: str) -> None:
        """Count one 400-class answer; raise `EndpointDown` when they keep coming."""
        self._bad_requests += 1
        if self._bad_requests >= self._settings.bad_requests:
            raise EndpointDown(
                f"{self._label}: {self._bad_requests} requests in a row refused as invalid (last: {detail}); "
                f"check the endpoint's configuration, {RESUME_HINT}"
            )
