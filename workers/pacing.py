"""When to start another sample (the run's `may_admit`, asked by the job queue).

The samples in flight are sized by Little's law (the endpoints' rate x their latency),
whatever those turn out to be, rather than by a number set in advance. A new sample starts
while all of these hold:

- every endpoint of the sample stages could take more work than is queued for it: at most
  `BACKLOG` of its requests wait for a concurrency slot, the RPM/TPM buckets or a cooldown.
  Beyond that the endpoint is what paces the run, and more samples would only wait there;
- the samples are mostly at the endpoints, not in our own work (rule checks, dedup, the
  store): at most `OWN_WORK_SHARE` of those at the endpoints, or `BACKLOG`, are elsewhere.
  Beyond that our CPU is what paces the run, and more samples would only queue for it;
- the rest of the target needs them at the accept rate seen so far (`needed_for_target`: the
  tail of a run does not start work it won't use).

`run.max_in_flight` stays a ceiling over all of this, for memory (the job queue applies it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

BACKLOG = 32  # requests queued per endpoint: a few admission polls' worth at 10,000 RPM
OWN_WORK_SHARE = 1.0  # samples elsewhere may equal those at the endpoints (+ BACKLOG)
TAIL_MARGIN = 1.1  # samples started beyond the expected need at the end of a run
MIN_ACCEPT_RATE = 0.3  # the accept rate assumed at most this pessimistic (a run's first samples)


class EndpointLoad(Protocol):
    """What admission reads of an endpoint: an `EndpointLimiter`, or the sum of the cluster
    workers' limiters of one endpoint (`service/cluster`)."""

    @property
    def in_flight(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    def has_room(self, backlog: int) -> bool: ...


def needed_for_target(target: int, accepted: int, finished: int) -> int:
    """Samples in flight that the rest of the target needs, at the accept rate seen so far
    (`finished`: samples that ended, accepted or not)."""
    rate = max(MIN_ACCEPT_RATE, (accepted + 1) / (finished + 1))
    return math.ceil((target - accepted) / rate * TAIL_MARGIN) + 1


def endpoints_want_more(limiters: Iterable[EndpointLoad], samples_in_flight: int) -> bool:
    """Whether the endpoints, and not our own work, are what the samples in flight wait for,
    with room for more."""
    at_endpoints = 0
    for limiter in limiters:
        if not limiter.has_room(BACKLOG):
            return False
        at_endpoints += limiter.in_flight + limiter.waiting
    return samples_in_flight - at_endpoints <= max(BACKLOG, OWN_WORK_SHARE * at_endpoints)
