"""The run report: `report.md` and `report/*.png` beside a run's output.

Everything comes from the run's store (`service.report_data`), so the report is the same
whether it is written at the end of a run or later on demand (`agentrefine report OUT`), and
it covers every process of a resumed run.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from service import agreement, diversity
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
        *_judge(data),
        *_diversity(data.diversity),
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


def _judge(data: ReportData) -> list[str]:
    judged = data.judge
    if judged is None:
        return []
    judge_cost = sum(t.cost_usd for (stage, _, _), t in data.by_stage_model.items() if stage == "judge")
    share = f"{judge_cost / data.cost_usd:.1%}" if data.cost_usd else "-"
    lines = [
        "## Judge: the DM's place and logic flags audited",
        "",
        f"{judged.samples} samples judged ({judged.turns} DM turns answering a valid action, "
        f"{judged.unjudged} left unjudged: answers unreadable or requests failed); the judge "
        f"disagrees with the DM on {judged.disagreeing_samples} samples, {judged.dropped_samples} of "
        f"them dropped. The judge cost ${judge_cost:.4f}, {share} of the run's spend.",
        "",
        "| flag | judged | agree | DM set, judge would not | judge would set, DM did not | agreement "
        "| paper (GPT-4 vs humans) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    paper = f"{agreement.PAPER_AGREEMENT:.0%}"
    for kind, counts in judged.verdicts.items():
        lines.append(
            f"| {kind} | {counts.total() - counts['unjudged']} | {counts['agree']} "
            f"| {counts['false_flag']} | {counts['missed_flag']} | {_percent(judged.rate(kind))} | {paper} |"
        )
    lines += [
        f"| both (per turn) | {judged.turns - judged.unjudged} | {judged.turns_agreeing} | | "
        f"| {_percent(judged.rate())} | {paper} |",
        "",
    ]
    if judged.examples:
        lines += [
            f"Disagreements ({len(judged.examples)} examples, one per sample):",
            "",
            "| sample | turn | flag | DM | judge | Player action | DM observation | judge's reason |",
            "|---|---:|---|---|---|---|---|---|",
            *(
                f"| {e.sample_id} | {e.turn} | {e.kind} | {str(e.dm).lower()} | {str(not e.dm).lower()} "
                f"| {_cell(e.action)} | {_cell(e.observation)} | {_cell(e.reason)} |"
                for e in judged.examples
            ),
            "",
        ]
    return lines


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _cell(text: str, limit: int = 160) -> str:
    """Text for a Markdown table cell: one line, no pipes, at most `limit` characters."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _diversity(figures: diversity.Diversity | None) -> list[str]:
    if figures is None or not figures.accepted:
        return []
    return [
        "## Diversity of the accepted samples",
        "",
        *diversity.table([("this run", figures)]),
        "",
        "Nearest-neighbour cosine: for each accepted script (its Goal + environment, as dedup "
        "embedded it) and persona, the similarity of the closest other one; lower is more "
        "diverse (the paper's Figures 6 and 7). The map of the scripts is `report/diversity.png`; "
        "`agentrefine diversity OUT OTHER_OUT` compares two runs.",
        "",
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
