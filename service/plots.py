"""The report's PNG plots (matplotlib, Agg backend: no display needed), each drawn in memory
and then written atomically: a disk that fills leaves the old plot or none, never a torn one."""

from __future__ import annotations

import io
from itertools import accumulate
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from service.diversity import Diversity, pca_map
from service.report_data import ReportData, utc_clock
from service.rundir import storage_error, write_atomic


def draw(data: ReportData, folder: Path) -> list[Path]:
    """Draw every plot the data has something for into `folder`; return their paths. A
    failed write raises `RunDirectoryError` naming the file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(folder, exc) from None
    drawn = []
    for name, plot in (
        ("throughput", _throughput),
        ("cost", _cost),
        ("tokens", _tokens),
        ("rejects", _rejects),
        ("latency", _latency),
        ("diversity", lambda d: diversity_figure([("this run", d.diversity)]) if d.diversity else None),
    ):
        figure = plot(data)
        if figure is None:
            continue
        path = folder / f"{name}.png"
        save(figure, path)
        drawn.append(path)
    return drawn


def save(figure: Figure, path: Path) -> None:
    """Write a figure as a PNG, atomically."""
    image = io.BytesIO()
    figure.savefig(image, dpi=100, format="png")
    plt.close(figure)
    write_atomic(path, image.getvalue())


def diversity_figure(runs: list[tuple[str, Diversity]]) -> Figure | None:
    """The scripts of one or more runs on one 2-D map (PCA fitted on all of them), beside the
    distributions of their scripts' and personas' nearest-neighbour cosine."""
    if not any(len(d.script_vectors) for _, d in runs):
        return None
    figure, (atlas, scripts, personas) = plt.subplots(
        1, 3, figsize=(15, 5), layout="constrained", gridspec_kw={"width_ratios": [1.4, 1, 1]}
    )
    for (name, d), points in zip(runs, pca_map(*(d.script_vectors for _, d in runs)), strict=True):
        atlas.scatter(points[:, 0], points[:, 1], s=4, alpha=0.5, label=f"{name} ({len(points)})")
        for axes, neighbours in ((scripts, d.scripts), (personas, d.personas)):
            if neighbours is not None:
                axes.hist(
                    neighbours.values,
                    bins=40,
                    range=(0, 1),
                    histtype="step",
                    label=f"{name} (mean {neighbours.mean:.3f})",
                )
    atlas.set_title("Scripts (Goal + environment), first two principal components")
    atlas.legend(loc="best", markerscale=3)
    for axes, what in ((scripts, "script"), (personas, "persona")):
        axes.set_title(f"Each accepted {what}'s nearest neighbour")
        axes.set_xlabel("cosine similarity (lower: more diverse)")
        axes.set_ylabel(f"{what}s")
        if axes.has_data():
            axes.legend(loc="upper left")
    return figure


def _throughput(data: ReportData) -> Figure | None:
    if not data.accepted_times:
        return None
    start = data.bins[0].start
    figure, (total, rate) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, layout="constrained")
    total.step(_minutes(data.accepted_times, start), range(1, len(data.accepted_times) + 1), where="post")
    if data.target:
        total.axhline(data.target, linestyle="--", color="grey", label=f"target {data.target}")
        total.legend(loc="lower right")
    total.set_ylabel("accepted samples")
    total.set_title("Throughput")
    per_minute = 60 / data.bin_width_s
    rate.bar(
        [(b.start - start) / 60 for b in data.bins],
        [b.accepted * per_minute for b in data.bins],
        width=data.bin_width_s / 60,
        align="edge",
    )
    rate.set_ylabel("accepted / min")
    rate.set_xlabel(f"minutes since {_utc(start)}")
    return figure


def _cost(data: ReportData) -> Figure | None:
    if not data.answer_times:
        return None
    start = data.bins[0].start
    figure, axes = plt.subplots(figsize=(9, 4), layout="constrained")
    axes.step(
        _minutes([t for t, _ in data.answer_times], start),
        list(accumulate(cost for _, cost in data.answer_times)),
        where="post",
    )
    axes.set_ylabel("spent USD (cumulative)")
    axes.set_xlabel(f"minutes since {_utc(start)}")
    axes.set_title("Cost over time")
    return figure


def _tokens(data: ReportData) -> Figure | None:
    if not data.by_stage_model:
        return None
    names = [f"{stage}\n{model}" for stage, _, model in data.by_stage_model]
    totals = list(data.by_stage_model.values())
    uncached = [t.usage.prompt - t.usage.cached_prompt for t in totals]
    cached = [t.usage.cached_prompt for t in totals]
    completion = [t.usage.completion for t in totals]
    figure, axes = plt.subplots(figsize=(9, 4), layout="constrained")
    axes.bar(names, uncached, label="prompt (uncached)")
    axes.bar(names, cached, bottom=uncached, label="prompt (cached)")
    axes.bar(
        names, completion, bottom=[a + b for a, b in zip(uncached, cached, strict=True)], label="completion"
    )
    for index, t in enumerate(totals):
        axes.annotate(f"${t.cost_usd:.2f}", (index, t.usage.total), ha="center", va="bottom")
    axes.set_ylabel("tokens")
    axes.set_title("Tokens and cost by stage and model")
    axes.legend()
    return figure


def _rejects(data: ReportData) -> Figure | None:
    rules = sorted(set(data.check_failures) | set(data.dropped_by_rule))
    if not rules:
        return None
    figure, axes = plt.subplots(figsize=(9, 4), layout="constrained")
    positions = range(len(rules))
    axes.bar(
        [p - 0.2 for p in positions],
        [data.check_failures.get(r, 0) for r in rules],
        0.4,
        label="failed checks",
    )
    axes.bar(
        [p + 0.2 for p in positions],
        [data.dropped_by_rule.get(r, 0) for r in rules],
        0.4,
        label="dropped (last rule)",
    )
    axes.set_xticks(list(positions), rules)
    axes.set_ylabel("count")
    axes.set_title("Rejects by rule")
    axes.legend()
    return figure


def _latency(data: ReportData) -> Figure | None:
    series = {
        f"{stage} / {model}": t.latencies_s
        for (stage, _, model), t in data.by_stage_model.items()
        if t.latencies_s
    }
    if not series:
        return None
    figure, axes = plt.subplots(figsize=(9, 4), layout="constrained")
    axes.hist(list(series.values()), bins=40, label=list(series), histtype="step")
    axes.set_xlabel("seconds")
    axes.set_ylabel("answers")
    axes.set_title("LLM answer latency")
    axes.legend()
    return figure


def _minutes(times: list[float], start: float) -> list[float]:
    return [(t - start) / 60 for t in times]


def _utc(t: float) -> str:
    return utc_clock(t) + " UTC"
