"""The stopping rule for a source that has dried up (`run.acceptance_floor`).

A run whose personas are nearly all duplicates, or whose samples are nearly all dropped,
would otherwise keep spending until the source ends, which for expanded personas may be
never. `AcceptanceFloor` watches the personas taken from the source in the order they were
taken: each is settled when its outcome is known (accepted, or not: a persona duplicate
at once, a sample when it is dropped, failed or a script duplicate). Over the last
`personas` settled in a row, fewer than `accepted` accepted trips the rule. Only a settled
prefix is judged, so samples still in flight, which may yet be accepted, never count
against the source. Malformed lines are not personas and cost nothing: they do not count.
"""

from __future__ import annotations

from collections import Counter, deque

from service.config import AcceptanceFloor as FloorSettings


class AcceptanceFloor:
    def __init__(self, settings: FloorSettings) -> None:
        self._min = settings.accepted
        self._window: deque[tuple[bool, str]] = deque(maxlen=settings.personas)
        self._accepted_in_window = 0
        self._order: deque[object] = deque()  # taken and not yet settled in order: sample ids
        self._outcomes: dict[object, tuple[bool, str]] = {}  # settled out of order, waiting

    def taken(self, sample_id: str) -> None:
        """A persona became a sample (its outcome comes later)."""
        self._order.append(sample_id)

    def settled(self, sample_id: str, accepted: bool, outcome: str) -> None:
        """The outcome of a sample taken earlier (`outcome`: accepted, dropped, ...)."""
        self._outcomes[sample_id] = (accepted, outcome)
        while self._order and self._order[0] in self._outcomes:
            self._push(self._outcomes.pop(self._order.popleft()))

    def skipped(self, outcome: str) -> None:
        """A persona settled as it was taken (a duplicate of a persona already admitted)."""
        if self._order:  # after samples still in flight: it waits for them
            key = object()
            self._order.append(key)
            self._outcomes[key] = (False, outcome)
        else:
            self._push((False, outcome))

    def tripped(self) -> bool:
        """Fewer than the floor accepted over a full window of settled personas."""
        return (
            self._min > 0
            and len(self._window) == self._window.maxlen
            and self._accepted_in_window < self._min
        )

    def message(self) -> str:
        """What the window held, for the stopping line."""
        outcomes = Counter(outcome for _, outcome in self._window)
        held = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.most_common())
        return f"fewer than {self._min} accepted in the last {self._window.maxlen} personas taken ({held})"

    def _push(self, item: tuple[bool, str]) -> None:
        if len(self._window) == self._window.maxlen and self._window[0][0]:
            self._accepted_in_window -= 1
        self._window.append(item)
        self._accepted_in_window += item[0]
