"""The run report: `report.md` and `report/*.png` beside a run's output.

Everything comes from the run's store (`service.report_data`), so the report is the same
whether it is written at the end of a run or later on demand (`agentrefine report OUT`), and
it covers every process of a resumed run.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from service.report_data import ReportData, collect, utc_clock
from service.rundir import write_atomic
from service.store import Store


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
        *_batch_saving(data.batch),
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
        "cut by a max_tokens sized below the stage's cap is asked again with more room (all are "
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


def _batch_saving(batch: tuple[int, float, float]) -> list[str]:
    answers, cost, listed = batch
    if not answers:
        return []
    return [
        f"Batch mode: {answers} answers cost **${cost:.4f}** at batch prices against ${listed:.4f} online: "
        f"saved **${listed - cost:.4f}**."
    ]


def _latency(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    deciles = statistics.quantiles(values, n=10)
    return f"{statistics.median(values):.2f} / {deciles[8]:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
