"""What the run report shows, read from the run's store: counts, rejects by rule, tokens and
cost by stage and model (each answer at the price it was paid at), latency, and throughput
over time from the acceptance and answer timestamps. `service.report` writes it as Markdown
and `service.plots` draws it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from llm import Charge, Usage, parse_usage
from service import agreement, diversity
from service.store import Store

BIN_WIDTHS_S = (10, 30, 60, 300, 900, 3600, 6 * 3600, 86400)
MAX_BINS = 60


@dataclass
class StageModelTotals:
    """Paid answers of one (stage, endpoint, model)."""

    requests: int = 0
    usage: Usage = field(default_factory=Usage)
    charge: Charge = field(default_factory=Charge)
    reasked: int = 0  # answers cut by a sized max_tokens, asked again with more room
    cost_usd: float = 0.0
    latencies_s: list[float] = field(default_factory=list)


@dataclass
class TimeBin:
    start: float
    accepted: int = 0
    requests: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class ReportData:
    run_id: str
    target: int | None
    states: dict[str, int]
    reject_kinds: dict[str, int]
    dropped_by_rule: dict[str, int]
    check_failures: dict[str, int]
    by_stage_model: dict[tuple[str, str, str], StageModelTotals]
    accepted_times: list[float]
    answer_times: list[tuple[float, float]]  # (created, cost) of each paid answer, in order
    bins: list[TimeBin]
    bin_width_s: int
    batch: tuple[int, float, float] = (0, 0.0, 0.0)  # batch answers, their cost, their online price
    diversity: diversity.Diversity | None = None
    judge: agreement.Agreement | None = None

    @property
    def accepted(self) -> int:
        return self.states.get("accepted", 0)

    @property
    def cost_usd(self) -> float:
        return sum(t.cost_usd for t in self.by_stage_model.values())

    @property
    def usage(self) -> Usage:
        total = Usage()
        for totals in self.by_stage_model.values():
            total += totals.usage
        return total


def collect(store: Store) -> ReportData:
    """Read everything the report shows from the store."""
    by_stage_model: dict[tuple[str, str, str], StageModelTotals] = {}
    answers: list[tuple[float, float, int]] = []
    for row in store.response_rows():
        totals = by_stage_model.setdefault((row.stage or "-", row.endpoint, row.model), StageModelTotals())
        usage = parse_usage(row.usage)
        totals.requests += 1
        totals.usage += usage
        totals.charge.add(usage, row.max_tokens)
        totals.reasked += row.cut_below_cap
        totals.cost_usd += row.cost_usd
        if row.latency_s is not None:
            totals.latencies_s.append(row.latency_s)
        answers.append((row.created, row.cost_usd, usage.total))
    accepted_times = store.accepted_times()
    width, bins = _bins(accepted_times, answers)
    target = store.get_meta("target")
    return ReportData(
        run_id=store.get_meta("run_id") or "-",
        target=int(target) if target else None,
        states=store.state_counts(),
        reject_kinds=store.reject_kinds(),
        dropped_by_rule=dict(
            sorted((rule, n) for (kind, rule), n in store.reject_counts().items() if kind == "dropped")
        ),
        check_failures=dict(sorted(Counter(c.split(">")[0] for c in store.finished_checks()).items())),
        by_stage_model=dict(sorted(by_stage_model.items())),
        accepted_times=accepted_times,
        answer_times=[(created, cost) for created, cost, _ in answers],
        bins=bins,
        bin_width_s=width,
        batch=store.batch_saving(),
        diversity=diversity.measure(store),
        judge=agreement.collect(store),
    )


def _bins(accepted: list[float], answers: list[tuple[float, float, int]]) -> tuple[int, list[TimeBin]]:
    """Fixed-width time windows over the whole run, at most MAX_BINS of them."""
    times = accepted + [created for created, _, _ in answers]
    if not times:
        return BIN_WIDTHS_S[0], []
    first, last = min(times), max(times)
    width = next((w for w in BIN_WIDTHS_S if (last - first) / w < MAX_BINS), BIN_WIDTHS_S[-1])
    origin = first - first % width
    bins = [TimeBin(origin + i * width) for i in range(int((last - origin) // width) + 1)]
    for t in accepted:
        bins[int((t - origin) // width)].accepted += 1
    for created, cost, tokens in answers:
        one = bins[int((created - origin) // width)]
        one.requests += 1
        one.tokens += tokens
        one.cost_usd += cost
    return width, bins


def utc_clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
