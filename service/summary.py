"""The end-of-run summary: what the run directory holds and what this process did.

Totals come from the store, so they are right across interruptions and resumes; request
outcomes and wall time are this process's own. A run that ends before its target says why
in one line (`shortfall`): what became of the personas it read, and what to change.
"""

from __future__ import annotations

import resource
from collections import Counter
from typing import Any

from llm import Charge, RequestTally, Usage, parse_usage
from service import agreement
from service.config import Config
from service.recorder import SampleCounts
from service.store import Store
from workers.flight import FlightRecorder


def build_summary(
    store: Store,
    counts: SampleCounts,
    requests: RequestTally,
    flight: FlightRecorder,
    config: Config,
    reason: str,
) -> dict[str, Any]:
    checks = Counter(store.finished_checks())
    by_rule = Counter(item.split(">")[0] for item in checks.elements())
    recovery = Counter(item.split(">")[1] for item in checks.elements())
    rejects = store.reject_counts()
    kinds = store.reject_kinds()
    usage, charge = Usage(), Charge()
    reasked = 0
    for row in store.response_rows():
        answer = parse_usage(row.usage)
        usage += answer
        charge.add(answer, row.max_tokens)
        reasked += row.cut_below_cap
    cost = store.spend()
    accepted = store.accepted_count()
    judged = agreement.collect(store)
    judge = {"judge": judged.as_dict()} if judged is not None else {}  # runs with the judge only
    return {
        "result": reason,
        "accepted": accepted,
        "target": counts.target,
        "dropped_by_rule": dict(
            sorted((rule, n) for (kind, rule), n in rejects.items() if kind == "dropped")
        ),
        "failed_requests": kinds.get("failed", 0),
        "persona_duplicates_skipped": rejects.get(("duplicate", "persona_duplicate"), 0),
        "script_duplicates_dropped": rejects.get(("duplicate", "script_duplicate"), 0),
        "malformed_persona_lines": kinds.get("malformed", 0),
        "check_failures_by_rule": dict(sorted(by_rule.items())),
        "recovery": {
            "continued_from_prefix": recovery["continue"],
            "regenerated_trajectory": recovery["regenerate"],
            "regenerated_script": recovery["regenerate_script"],
            "new_script_after_failed_trajectories": recovery["new_script"],
        },
        "tokens": usage.as_dict()
        | {
            "total_tokens": usage.total,
            "charged_tokens": charge.charged,
            "charged_per_used": None if charge.ratio is None else round(charge.ratio, 3),
        },
        "answers_reasked": reasked,
        "cost_usd": round(cost, 6),
        "cost_per_accepted_usd": round(cost / accepted, 6) if accepted else None,
        "max_cost_usd": config.run.max_cost_usd,
        "batch": _batches(store, config),
        "this_process": {
            "wall_s": round(counts.elapsed, 2),
            "requests_per_s": round(requests.attempts / max(counts.elapsed, 1e-9), 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_samples_in_flight": flight.peak_samples,
            "peak_requests_in_flight": flight.peak_requests,
            "memory_per_sample_in_flight_kib": flight.memory_per_sample_kib,
            "accepted": counts.accepted_this_run,
            "requests": dict(requests.outcomes),
            "answers_replayed_from_store": requests.replayed,
            "tokens": requests.usage.total,
            "tokens_charged": requests.charged,
            "cost_usd": round(requests.cost_usd, 6),
        },
    } | judge


def _batches(store: Store, config: Config) -> dict[str, Any] | None:
    """Batch mode: rounds, batches by status, and the cost against online list prices."""
    rows = store.batch_rows()
    answers, cost, listed = store.batch_saving()
    if not rows and config.run.mode != "batch":
        return None
    return {
        "rounds": max((row["round"] for row in rows), default=0),
        "batches": sum(1 for row in rows if row["batch_id"]),
        "by_status": dict(Counter(row["status"].removeprefix("done:") for row in rows)),
        "answers": answers,
        "cost_usd": round(cost, 6),
        "online_cost_usd": round(listed, 6),
        "saved_usd": round(listed - cost, 6),
    }


def shortfall(store: Store, config: Config, cause: str, dried_up: bool) -> str:
    """The result line of a run that stopped before its target."""
    states = store.state_counts()
    rejects = store.reject_counts()
    dropped = sorted(((n, rule) for (kind, rule), n in rejects.items() if kind == "dropped"), reverse=True)
    outcomes = {
        "accepted": states.get("accepted", 0) + states.get("surplus", 0),
        "dropped" + (f" (last rule {', '.join(f'{r} {n}' for n, r in dropped[:3])})" if dropped else ""): (
            states.get("dropped", 0)
        ),
        "failed": states.get("failed", 0),
        "script duplicates": states.get("duplicate", 0),
        "persona duplicates": rejects.get(("duplicate", "persona_duplicate"), 0),
        "malformed lines": rejects.get(("malformed", "malformed"), 0),
        "unfinished": states.get("running", 0),
    }
    read = ", ".join(f"{n} {what}" for what, n in outcomes.items() if n)
    if dried_up:
        hint = (
            "give other personas, or loosen dedup.persona.threshold / dedup.script.threshold if duplicates "
            "dominate, or lower run.acceptance_floor.accepted (0 turns this rule off)"
        )
    else:
        hint = "give more personas (--personas FILE) or ask for fewer (-n)"
    return (
        f"stopped short: {cause}, at {store.accepted_count()} / {config.run.n} accepted "
        f"({sum(outcomes.values())} personas read: {read or 'none'}); {hint}; then run the same command "
        "to continue"
    )


def format_summary(summary: dict[str, Any], out: str) -> str:
    def pairs(d: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

    tokens = summary["tokens"]
    proc = summary["this_process"]
    per = summary["cost_per_accepted_usd"]
    lines = [
        f"result: {summary['result']}",
        f"accepted: {summary['accepted']} / {summary['target']}  (written to {out})",
        f"dropped personas by last rule: {pairs(summary['dropped_by_rule'])}",
        f"failed (endpoint gave up): {summary['failed_requests']}",
        f"duplicates: personas skipped {summary['persona_duplicates_skipped']}, "
        f"scripts dropped {summary['script_duplicates_dropped']}",
        f"malformed persona lines skipped: {summary['malformed_persona_lines']}",
        f"failed checks by rule: {pairs(summary['check_failures_by_rule'])}",
        f"recovery: {pairs(summary['recovery'])}",
        f"tokens: prompt {tokens['prompt_tokens']} (cached {tokens['cached_prompt_tokens']}), "
        f"completion {tokens['completion_tokens']}, total {tokens['total_tokens']}",
        _charged_line(tokens, summary["answers_reasked"]),
        f"cost: ${summary['cost_usd']:.4f}" + (f" (${per:.6f} per accepted sample)" if per else ""),
        *_batch_lines(summary.get("batch")),
        *_judge_line(summary.get("judge")),
        f"this process: {proc['wall_s']} s wall, accepted {proc['accepted']}, "
        f"{proc['requests_per_s']} requests/s, peak memory {proc['peak_rss_mib']} MiB, "
        f"requests {pairs(proc['requests'])}, "
        f"answers replayed from store {proc['answers_replayed_from_store']}",
        f"in flight at the peak: {proc['peak_samples_in_flight']} samples, "
        f"{proc['peak_requests_in_flight']} requests"
        + (
            f" (about {proc['memory_per_sample_in_flight_kib']:.0f} KiB of memory per sample in flight)"
            if proc["memory_per_sample_in_flight_kib"] is not None
            else ""
        ),
        *_cluster_lines(summary.get("cluster")),
    ]
    return "\n".join(lines)


def _cluster_lines(cluster: dict[str, Any] | None) -> list[str]:
    """A cluster run's workers (`service/cluster`): what each did, and what the driver spent."""
    if not cluster:
        return []
    samples = " / ".join(str(n) for n in cluster["samples_by_worker"])
    cpu = " / ".join(f"{s:g}" for s in cluster["worker_cpu_s"])
    return [
        f"cluster: {cluster['workers']} workers ({cluster['cluster']} Ray cluster), "
        f"samples walked {samples}, CPU s {cpu} (driver {cluster['driver_cpu_s']:g}), "
        f"workers replaced {cluster['workers_replaced']}, "
        f"stored answers asked again {cluster['answers_sent_again']}"
    ]


def _batch_lines(batch: dict[str, Any] | None) -> list[str]:
    if not batch:
        return []
    statuses = ", ".join(f"{k} {v}" for k, v in batch["by_status"].items()) or "none"
    return [
        f"batch mode: {batch['rounds']} rounds, {batch['batches']} batches ({statuses}); "
        f"{batch['answers']} answers cost ${batch['cost_usd']:.4f} at batch prices, "
        f"${batch['online_cost_usd']:.4f} online: saved ${batch['saved_usd']:.4f}"
    ]


def _judge_line(judge: dict[str, Any] | None) -> list[str]:
    if judge is None:
        return []
    rates = ", ".join(
        f"{kind} {_percent(figures['agreement'])}" for kind, figures in judge["by_kind"].items()
    )
    return [
        f"judge: agrees with the DM on {_percent(judge['turn_agreement'])} of {judge['turns']} turns "
        f"({rates}; the paper's GPT-4 vs humans: {_percent(judge['paper_gpt4_human_agreement'])}); "
        f"disagrees on {judge['disagreeing_samples']} of {judge['samples']} samples, "
        f"{judge['dropped_samples']} dropped"
    ]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _charged_line(tokens: dict[str, Any], reasked: int) -> str:
    ratio = tokens["charged_per_used"]
    charged = f"{tokens['charged_tokens']} ({ratio}x the tokens used)" if ratio is not None else "-"
    return (
        f"tokens charged against TPM (prompt + max_tokens): {charged}; "
        f"answers cut by a sized max_tokens and asked again with more room: {reasked}"
    )
