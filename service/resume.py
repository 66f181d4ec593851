"""What a run directory was started with, and what a resume may change.

At the first start the settings and inputs that shape the data are recorded in the store
(`meta` key `settings`); every later start compares the current ones with them:

- a change that would corrupt the dataset is refused with one line naming the setting and
  the way out (a new `--out`, or `--allow-change KEY` to take it on knowingly): another
  persona file (the stored cursor of file A would skip lines of file B), another model for
  a stage (one dataset, several models), other prompts or verification rules (samples made
  and checked differently), other dedup thresholds (decisions that no longer mean the same;
  another embedder is refused by `service.dedup`: the stored vectors cannot be compared),
  another seed (other sample ids), shard size or export form (the files already written
  would not match);
- a harmless change (N, the budget, concurrency, limits, temperature, attempts) is applied
  and said in one line.

An allowed change is recorded, so the next resume compares with what the run now uses. N
below the samples already accepted is refused: the run cannot un-accept them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from pipeline import rules
from pipeline.expansion import SLOT_SCHEME
from pipeline.prompts import PROMPT_DIR
from pipeline.sources import seed_personas
from service.config import Config
from service.store import Store

META_KEY = "settings"
HEAD_BYTES = 64 * 1024  # the persona file's identity: its size and a hash of its head
JUDGE_PROMPTS = tuple((PROMPT_DIR / "judge").glob("*.md"))
RULES_FILE = Path(rules.__file__)
WAY_OUT = "use a new --out, or resume with {flags} to take the change on"


class ResumeConflict(Exception):
    """The run directory was started with settings or inputs this run would mix with others."""


def recorded(config: Config) -> dict[str, Any]:
    """Every setting compared on resume, by dotted name (JSON-serializable values)."""
    shaping: dict[str, Any] = {
        "personas.source": _persona_source(config),
        "prompts": _digest(sorted((p.name, p.read_bytes()) for p in PROMPT_DIR.glob("*.md"))),
        "rules": _digest([RULES_FILE.read_bytes()]),
        "run.seed": config.run.seed,
        "run.shard_size": config.run.shard_size,
        "run.sharegpt": config.run.sharegpt,
        "dedup.persona.threshold": config.dedup.persona.threshold,
        "dedup.script.threshold": config.dedup.script.threshold,
    }
    harmless: dict[str, Any] = {
        "run.n": config.run.n,
        "run.max_cost_usd": config.run.max_cost_usd,
        "run.max_in_flight": config.run.max_in_flight,
        "dedup.index": config.dedup.index,
        "stages.judge.enabled": config.stages.judge.enabled,
    }
    if config.stages.judge.enabled:  # the judge decides what is masked or dropped
        judge = config.stages.judge
        shaping["stages.judge.prompts"] = _digest(sorted((p.name, p.read_bytes()) for p in JUDGE_PROMPTS))
        shaping["stages.judge.policy"] = [judge.policy, judge.share]
    for name, stage in config.stages_in_use().items():
        endpoints = config.endpoints_for(stage)
        shaping[f"stages.{name}.model"] = [endpoint.model for endpoint in endpoints]
        for key in ("temperature", "max_tokens", "attempts", "concurrency"):
            harmless[f"stages.{name}.{key}"] = getattr(stage, key)
    for name, endpoint in config.endpoints_in_use().items():
        harmless[f"endpoints.{name}.limits"] = [
            endpoint.limits.rpm,
            endpoint.limits.tpm,
            endpoint.limits.max_concurrency,
        ]
    return {key: {"value": value, "shapes": True} for key, value in shaping.items()} | {
        key: {"value": value, "shapes": False} for key, value in harmless.items()
    }


def check(store: Store, config: Config, out: Path, allow: Iterable[str] = ()) -> list[str]:
    """Record the settings at the first start; on resume refuse a corrupting change
    (`ResumeConflict`), or apply the others: returns one line saying what changed, if anything."""
    now = recorded(config)
    allow = list(allow)
    unknown = [key for key in allow if not any(_covers(key, name) for name in now)]
    if unknown:
        raise ResumeConflict(
            f"--allow-change {unknown[0]}: not a setting checked on resume (those are: {', '.join(now)})"
        )
    accepted = store.accepted_count()
    if accepted > config.run.n:
        raise ResumeConflict(
            f"run.n (-n) is {config.run.n}, but {out} already holds {accepted} accepted samples: ask for "
            f"at least {accepted} (the first {config.run.n} are the first lines of samples-00000.jsonl), "
            "or use a new --out"
        )
    stored = store.get_meta(META_KEY)
    before: dict[str, Any] = orjson.loads(stored) if stored else {}
    changed = {
        key: (before[key]["value"], now[key]["value"])
        for key in sorted(now.keys() & before.keys())
        if before[key]["value"] != now[key]["value"]
    }
    refused = [
        key
        for key, (old, new) in changed.items()
        if now[key]["shapes"]
        and not _same_file(key, old, new)
        and not any(_covers(allowed, key) for allowed in allow)
    ]
    if refused:
        what = "; ".join(f"{key}: {_show(changed[key][0])} -> {_show(changed[key][1])}" for key in refused)
        raise ResumeConflict(
            f"{out} was started with other data-shaping settings ({what}): resuming would mix them in "
            f"one dataset; {WAY_OUT.format(flags=' '.join(f'--allow-change {key}' for key in refused))}"
        )
    store.set_meta(META_KEY, orjson.dumps(now).decode())
    if stored is None:
        return [f"resume: {out} predates recorded settings; recorded the current ones"] if accepted else []
    if not changed:
        return []
    applied = "; ".join(f"{key} {_show(old)} -> {_show(new)}" for key, (old, new) in changed.items())
    said = [f"resume: changed since the last start, applied: {applied}"]
    if changed.get("stages.judge.enabled") == (False, True) and accepted:
        said.append(
            f"resume: the judge is on from now: the {accepted} samples accepted before are not judged"
        )
    return said


def _persona_source(config: Config) -> dict[str, Any]:
    """A persona file's path, size and head hash; or the built-in seeds and how they expand."""
    path = config.personas.path
    if not path:
        return {
            "expansion": _digest([line.encode() for line in seed_personas()]),
            "expand_count": config.personas.expand_count,
            "order": SLOT_SCHEME,
        }
    size = Path(path).stat().st_size
    head_bytes = min(size, HEAD_BYTES)
    return {"path": str(Path(path).resolve()), "size": size, "head": _head(path, head_bytes)}


def _head(path: str, length: int) -> str:
    with open(path, "rb") as handle:
        return _digest([handle.read(length)])


def _same_file(key: str, old: Any, new: Any) -> bool:
    """The persona file moved, or grown at its end (the bytes the first start hashed are
    unchanged): the stored cursor still points at the same lines."""
    if key != "personas.source" or "head" not in old or "head" not in new or new["size"] < old["size"]:
        return False
    return _head(new["path"], min(old["size"], HEAD_BYTES)) == old["head"]


def _covers(allowed: str, key: str) -> bool:
    return key == allowed or key.startswith(allowed + ".")


def _digest(parts: Iterable[bytes | tuple[str, bytes]]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(orjson.dumps(part[0]) + part[1] if isinstance(part, tuple) else part)
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _show(value: Any) -> str:
    if isinstance(value, dict):
        shown = value.get("path") or f"built-in seeds {value.get('expansion')}"
        return f"{shown} ({', '.join(f'{k} {v}' for k, v in value.items() if k != 'path')})"
    return orjson.dumps(value).decode() if isinstance(value, list) else str(value)
