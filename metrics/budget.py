"""The run's spending limit (`run.max_cost_usd`).

The LLM layer calls `check()` before it sends a request that is not answered from the
store; once the whole run's spend (earlier processes included, see `RunStats`) has reached
the limit, `check()` raises `BudgetExhausted` and no new request goes out. Requests already
sent may finish and are paid and stored, so the spend can pass the limit by at most the
cost of the requests that were in flight when it was reached.
"""

from __future__ import annotations

from metrics.stats import RunStats


class BudgetExhausted(Exception):
    """The run has spent `run.max_cost_usd`; it can be resumed with a larger one."""


class Budget:
    def __init__(self, limit_usd: float | None, stats: RunStats) -> None:
        self.limit_usd = limit_usd
        self._stats = stats

    @property
    def exhausted(self) -> bool:
        return self.limit_usd is not None and self._stats.run_cost_usd >= self.limit_usd

    def check(self) -> None:
        """Raise BudgetExhausted when no new request may be paid for."""
        if self.exhausted:
            raise BudgetExhausted(self.message())

    def message(self) -> str:
        return (
            f"budget reached: ${self._stats.run_cost_usd:.4f} spent of run.max_cost_usd "
            f"${self.limit_usd or 0:.4f} (run again with a larger run.max_cost_usd to continue)"
        )
