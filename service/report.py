"""The run report: `report.md` and `report/*.png` beside a run's output.

Everything comes from the run's store, so the report is the same whether it is written at
the end of a run or later on demand (`agentrefine report OUT`), and it covers every process
of a resumed run: counts, rejects by rule, tokens and cost by stage and model (each answer
at the price it was paid at), latency, and throughput over time from the acceptance and
answer timestamps.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from llm import Charge, Usage, parse_usage
from service.rundir import write_atomic
from service.store import Store

BIN_WIDTHS_S = (10, 30, 60, 300, 900, 3600, 6 * 3600, 86400)
MAX_BINS = 60


@dataclass
class StageModelTotals:
    """Paid answers of one (stage, endpoint, model)."""

    requests: int = 0
    usage: Usage = field(default_factory=Usage)
    charge: Charge = field(default_factory=Charge)
    reasked: int = 0  # answers cut by a sized max_tokens, asked again at the cap
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
    )


def write_report(store: Store, out: Path) -> Path:
    """Write `report.md` and the plots under `report/` (each atomically; a failed write raises
    `RunDirectoryError` naming the file); return the report's path."""
    from service import plots  # matplotlib takes ~0.4 s to import: only the report pays for it

    data = collect(store)
    images = plots.draw(data, out / "report")
    path = out / "report.md"
    write_atomic(path, render(data, [image.relative_to(out) for image in images]).encode())
    return path


def render(data: ReportData, images: list[Path]) -> str:
    """The report as Markdown."""
    accepted, cost = data.accepted, data.cost_usd
    target = f" / {data.target}" if data.target else ""
    lines = [
        f"# Run report ({data.run_id})",
        "",
        f"Accepted **{accepted}{target}**; spent **${cost:.4f}**"
        + (f" (${cost / accepted:.6f} per accepted sample)." if accepted else "."),
        "",
        "## Counts",
        "",
        "| samples | count |",
        "|---|---:|",
        *(f"| {state} | {n} |" for state, n in sorted(data.states.items())),
        *(
            f"| {kind} personas (never admitted) | {data.reject_kinds.get(kind, 0)} |"
            for kind in ("duplicate", "malformed")
        ),
        "",
        "## Rejects by rule",
        "",
        "| rule | failed checks (every attempt) | samples dropped (last rule) |",
        "|---|---:|---:|",
        *(
            f"| {rule} | {data.check_failures.get(rule, 0)} | {data.dropped_by_rule.get(rule, 0)} |"
            for rule in sorted(set(data.check_failures) | set(data.dropped_by_rule))
        ),
        "",
        "## Tokens and cost by stage and model",
        "",
        "| stage | endpoint | model | answers | prompt | cached prompt | completion | reasoning "
        "| charged ÷ used | re-asked at cap | cost USD | latency p50 / p90 s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {stage} | {endpoint} | {model} | {t.requests} | {t.usage.prompt} | {t.usage.cached_prompt} "
            f"| {t.usage.completion} | {t.usage.reasoning} | {_ratio(t.charge.ratio)} | {t.reasked} "
            f"| {t.cost_usd:.4f} | {_latency(t.latencies_s)} |"
            for (stage, endpoint, model), t in data.by_stage_model.items()
        ),
        "",
        "Charged: what a tokens-per-minute limit counts for an answer when it is admitted, the "
        "prompt plus the max_tokens sent (OpenAI's rule), per token the answer used; an answer "
        "cut by a max_tokens sized below the stage's cap is asked again at the cap (both are "
        "counted as answers).",
        "",
        f"## Throughput over time ({_duration(data.bin_width_s)} windows, UTC; empty windows left out)",
        "",
        "| window start | accepted | answers | tokens | cost USD |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {utc_clock(b.start)} | {b.accepted} | {b.requests} | {b.tokens} | {b.cost_usd:.4f} |"
            for b in data.bins
            if b.accepted or b.requests
        ),
        "",
        "## Plots",
        "",
        *(f"![{image.stem}]({image.as_posix()})" for image in images),
        "",
    ]
    return "\n".join(lines)


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


def _latency(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    deciles = statistics.quantiles(values, n=10)
    return f"{statistics.median(values):.2f} / {deciles[8]:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def utc_clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
