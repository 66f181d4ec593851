"""How one key's limits are divided among the processes of a cluster run that use it.

Each process's limiter holds a lease of every limited key it uses (`EndpointLimiter.shares`):
its buckets hold and refill that part of the key's RPM and TPM, so the leases of a key, which
sum to 1, never let the processes together past the key's limits, however many there are.
Every `REBALANCE_S` the driver divides each key anew, in proportion to what each process took
since the last time plus what it has waiting (its demand), so an idle worker's part goes to the
busy ones and the driver's persona expansion gets what it uses. A process that took nothing
and waits for nothing keeps a sliver (its demand counts one request), so it can start again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import NamedTuple

from llm import LimiterState

REBALANCE_S = 1.0
SMOOTHING = 0.5  # of the last lease kept in the next (the demand of one second is noisy)


class Lease(NamedTuple):
    """A process's part of a key's RPM and TPM, and the key's limits as far as any process knows
    them (configured, or learned from a provider's headers: the others learn them too)."""

    requests: float
    tokens: float
    rpm: int | None = None
    tpm: int | None = None


class LeaseBoard:
    def __init__(self) -> None:
        self._taken: dict[tuple[str, str], tuple[int, int]] = {}  # (process, key) -> taken then
        self._leases: dict[tuple[str, str], tuple[float, float]] = {}

    def divide(self, holders: Mapping[str, Mapping[str, LimiterState]]) -> dict[str, dict[str, Lease]]:
        """`holders`: each process's limiters by key (an endpoint's name); the new lease of each."""
        leases: defaultdict[str, dict[str, Lease]] = defaultdict(dict)
        for key in {key for limiters in holders.values() for key in limiters}:
            states = {process: limiters[key] for process, limiters in holders.items() if key in limiters}
            for process, lease in self._divide_key(key, states).items():
                leases[process][key] = lease
        self._taken = {k: v for k, v in self._taken.items() if k[0] in holders}
        self._leases = {k: v for k, v in self._leases.items() if k[0] in holders}
        return dict(leases)

    def _divide_key(self, key: str, states: Mapping[str, LimiterState]) -> dict[str, Lease]:
        used: dict[str, tuple[int, int]] = {}
        for process, state in states.items():
            now = (state.taken_requests, state.taken_tokens)
            before = self._taken.get((process, key), now)
            if now[0] < before[0]:  # a replacement in a lost worker's place: its counts start at 0
                before = (0, 0)
            used[process] = (state.taken_requests - before[0], max(0, state.taken_tokens - before[1]))
            self._taken[(process, key)] = now
        requests = sum(r for r, _ in used.values())
        per_request = sum(t for _, t in used.values()) / requests if requests else 0.0
        demand = {
            process: (r + states[process].waiting + 1, t + (states[process].waiting + 1) * per_request)
            for process, (r, t) in used.items()
        }
        total_r = sum(r for r, _ in demand.values())
        total_t = sum(t for _, t in demand.values())
        smoothed = {}
        for process, (r, t) in demand.items():
            fresh = (r / total_r, t / total_t if total_t else r / total_r)
            last = self._leases.get((process, key), fresh)
            smoothed[process] = tuple(
                SMOOTHING * a + (1 - SMOOTHING) * b for a, b in zip(last, fresh, strict=True)
            )
        sums = [sum(lease[i] for lease in smoothed.values()) for i in (0, 1)]
        parts = {process: (lease[0] / sums[0], lease[1] / sums[1]) for process, lease in smoothed.items()}
        self._leases.update({(process, key): part for process, part in parts.items()})
        rpm = next((state.key_rpm for state in states.values() if state.key_rpm), None)
        tpm = next((state.key_tpm for state in states.values() if state.key_tpm), None)
        return {process: Lease(*part, rpm, tpm) for process, part in parts.items()}
