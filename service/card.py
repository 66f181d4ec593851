"""The dataset card: `README.md` in the run directory, with Hugging Face's YAML metadata (license,
size category, task, the `train-*` files as the default config and their features) and, below
it, how the data was made, the generator models, the rule pass rates and the cost. Written from
the store at the end of every run and by `agentrefine report OUT`, so it always describes the
shards beside it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import yaml

from service import rundir
from service.store import Store

STAGES = ("script", "trajectory")
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
FEATURES = [
    {"name": "id", "dtype": "string"},
    {"name": "persona", "dtype": "string"},
    {
        "name": "messages",
        "list": [
            {"name": "role", "dtype": "string"},
            {"name": "content", "dtype": "string"},
            {"name": "train", "dtype": "bool"},
        ],
    },
]


def size_category(n: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if n < limit), "1M<n<10M")


def card_data(store: Store) -> dict[str, Any]:
    """The figures the card states, read from the store."""
    models: dict[str, Counter[str]] = {}
    samples = trained = masked = refine = 0
    cost = 0.0
    no_refinement = False
    for blob in store.accepted_records(skip=0):
        record = orjson.loads(blob)
        samples += 1
        meta = record.get("meta", {})
        for stage, model in meta.get("models", {}).items():
            models.setdefault(stage, Counter())[model] += 1
        cost += meta.get("cost_usd", 0.0)
        refine += meta.get("error_refine_turns", 0)
        no_refinement |= meta.get("refinement_data") is False
        flags = [m["train"] for m in record.get("messages", []) if m["role"] == "assistant"]
        trained += sum(flags)
        masked += len(flags) - sum(flags)
    answers = Counter(row.stage for row in store.response_rows())
    failed = Counter(item.split(">")[0] for item in store.finished_checks())
    return {
        "samples": samples,
        "models": {stage: dict(counts.most_common()) for stage, counts in models.items()},
        "answers": dict(answers),
        "failed": dict(failed),
        "trained_turns": trained,
        "masked_turns": masked,
        "error_refine_turns": refine,
        "cost_usd": store.spend(),
        "samples_cost_usd": cost,
        "no_refinement_data": no_refinement,
    }


def front_matter(data: dict[str, Any], license_id: str) -> dict[str, Any]:
    return {
        "license": license_id,
        "language": ["en"],
        "pretty_name": "AgentRefine-style agent trajectories with error-refinement turns",
        "size_categories": [size_category(data["samples"])],
        "task_categories": ["text-generation"],
        "tags": ["agent", "agentrefine", "synthetic", "react", "refinement-tuning"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "train-*.jsonl"}]}],
        "dataset_info": {
            "config_name": "default",
            "features": FEATURES,
            "splits": [{"name": "train", "num_examples": data["samples"]}],
        },
    }


def pass_rates(data: dict[str, Any]) -> list[str]:
    """One table row per rule: answers checked, answers whose first failing rule it was."""
    rows = []
    for stage, prefix in (("script", "S"), ("trajectory", "T")):
        checked = data["answers"].get(stage, 0)
        for number in range(1, 9 if prefix == "T" else 8):
            rule = f"{prefix}{number}"
            failed = data["failed"].get(rule, 0)
            rate = f"{1 - failed / checked:.1%}" if checked else "n/a"
            rows.append(f"| {rule} | {stage} | {checked} | {failed} | {rate} |")
    return rows


def render_card(data: dict[str, Any], license_id: str) -> str:
    meta = yaml.safe_dump(front_matter(data, license_id), sort_keys=False, allow_unicode=True)
    models = "; ".join(
        f"{stage}: " + ", ".join(f"`{model}` ({n})" for model, n in counts.items())
        for stage, counts in sorted(data["models"].items())
    )
    simulated = any(model.startswith("sim-") for counts in data["models"].values() for model in counts)
    per_sample = data["cost_usd"] / data["samples"] if data["samples"] else 0.0
    mode = (
        'the "w/o refinement data" ablation: trajectories generated without mistakes (rule T6 inverted)'
        if data["no_refinement_data"]
        else "at least two error-refine turns per trajectory (the paper's rule)"
    )
    lines = [
        "---",
        meta.rstrip(),
        "---",
        "",
        "# AgentRefine-style agent trajectories",
        "",
        f"{data['samples']} multi-turn agent trajectories made by "
        "agentrefine-synth the AgentRefine way (ICLR 2025, arXiv 2501.01702): a persona "
        "becomes a script (an environment, a goal and the commands a player may type, each with a "
        "verification regex and its allowed values); one LLM call then plays both the environment (DM) and "
        "the agent (Player); rule checks S1–S7 and T1–T8 verify both, and failed answers are regenerated or "
        "continued from their verified prefix with feedback naming every problem. Mode: " + mode + ".",
        "",
        "## Files",
        "",
        "- `train-*.jsonl` (this card's `default` config): `id`, `persona`, `messages` (`role`, "
        "`content`, `train`). The messages are a system message (the agent's instructions, the "
        "environment without its hidden state, the goal, the command templates), the task, then the "
        "agent's `Thought: …\\nAction: …` turns and the environment's `Observation: …` turns, ending "
        "on the agent's final, successful action. `train` is true exactly on the assistant turns to "
        "learn from: an assistant turn whose action the environment flagged as an error stays in the "
        "context but has `train: false` (erroneous loss masking).",
        "- `samples-*.jsonl`: the audit record of each sample, line for line: the script, the raw trajectory "
        "with the DM's thoughts and error flags, the final observation, tokens, cost and every attempt.",
        "- `rejects.jsonl`: every dropped persona or sample with the rule it failed.",
        "- `agentrefine export RUN --format axolotl|trl|llamafactory|sharegpt|parquet [--mask …]` writes the "
        "form each trainer honours and the paper's loss-mask ablations (see the project README).",
        "",
        "## Generator",
        "",
        f"Models by stage (samples): {models or 'none'}."
        + (
            " These are the project's embedded test endpoint, not a language model: the text is templated "
            "and useful for exercising a training pipeline, not for training a model."
            if simulated
            else ""
        ),
        "",
        "## Statistics",
        "",
        f"- assistant turns: {data['trained_turns']} trained, {data['masked_turns']} masked as erroneous; "
        f"{data['error_refine_turns']} error-refine turns in all",
        f"- cost: ${data['cost_usd']:.4f} for the whole run (${per_sample:.6f} per accepted sample, drops "
        f"and retries included); ${data['samples_cost_usd']:.4f} spent on the accepted samples themselves",
        "",
        "Rule pass rates: the share of checked answers of each stage that did not fail on this rule "
        "first (an answer counts once, under the first rule it failed).",
        "",
        "| rule | stage | answers checked | first failed here | pass rate |",
        "|---|---|---|---|---|",
        *pass_rates(data),
        "",
    ]
    return "\n".join(lines)


def write_card(store: Store, out: Path, license_id: str = "apache-2.0") -> Path:
    path = out / "README.md"
    rundir.write_atomic(path, render_card(card_data(store), license_id).encode())
    return path
