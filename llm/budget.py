"""The run's spending limit (`run.max_cost_usd`), kept as a sink of the request events.

`Budget` adds up what every paid answer cost (the `cost_usd` of each `RequestEvent` it is
handed, on top of what earlier processes of the run spent), and the client calls `check()`
before it sends a request that is not answered from the cache: once the spend has reached
the limit it raises `BudgetExhausted` and no new request goes out. Requests already sent may
finish and are paid, so the spend can pass the limit by at most the cost of the requests
that were in flight when it was reached. Every client of a run shares one `Budget`. In batch
mode the money a created batch may still cost is committed (`commit`) until it ends, and
counts against the limit like money spent.
"""

from __future__ import annotations

from llm.events import RequestEvent


class BudgetExhausted(Exception):
    """The run has spent `run.max_cost_usd`; it can be resumed with a larger one."""


class Budget:
    def __init__(self, limit_usd: float | None = None, spent_usd: float = 0.0) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd  # the whole run's spend: earlier processes and this one
        self.committed: dict[str, float] = {}  # what created batches may still cost, by input file

    def __call__(self, event: RequestEvent) -> None:
        self.spent_usd += event.cost_usd

    def commit(self, tag: str, usd: float) -> None:
        """A batch was created: its requests may cost `usd` when it ends."""
        self.committed[tag] = usd

    def release(self, tag: str) -> None:
        """The batch ended: its answers were paid (as events), its commitment is gone."""
        self.committed.pop(tag, None)

    @property
    def committed_usd(self) -> float:
        return sum(self.committed.values())

    @property
    def exhausted(self) -> bool:
        return self.limit_usd is not None and self.spent_usd + self.committed_usd >= self.limit_usd

    def check(self) -> None:
        """Raise BudgetExhausted when no new request may be paid for."""
        if self.exhausted:
            raise BudgetExhausted(self.message())

    def message(self) -> str:
        return (
            f"budget reached: ${self.spent_usd:.4f} spent"
            + (f" and ${self.committed_usd:.4f} committed by batches" if self.committed else "")
            + " of run.max_cost_usd "
            f"${self.limit_usd or 0:.4f} (run again with a larger run.max_cost_usd to continue)"
        )
