"""Settings of the embedded OpenAI-compatible simulator.

`SimSettings.from_dict` builds the frozen settings from a plain dict (for example
parsed from JSON or YAML) laid over the named `profile` (`simulator.profiles`), and raises
`ValueError` naming the offending key when a key or profile is unknown or a value has the
wrong type or range.

The latency model (`simulator.latency`): an answer's first token comes after a lognormal
base (`latency_median_s`, `latency_sigma`) plus the prompt's prefill
(`prefill_tokens_per_s`), its completion tokens follow at `output_tokens_per_s` (0: at
once, as one piece). Every duration (latency, decode, keep-alive period, hang, the
rate-limit windows) is multiplied by `time_scale`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from simulator.profiles import DEFAULT_PROFILE, with_profile

USAGE_STYLES = ("openai", "deepseek")


@dataclass(frozen=True)
class FaultSettings:
    """Per-request transport and server faults (probabilities are exclusive)."""

    p_5xx: float = 0.0
    p_reset: float = 0.0
    p_truncated_body: float = 0.0
    p_hang: float = 0.0
    p_empty_choices: float = 0.0
    p_length: float = 0.0
    hang_s: float = 300.0


@dataclass(frozen=True)
class FlawSettings:
    """Share of generated outputs that break one of the SPEC rules on purpose (and of judge
    answers that disagree with what the judged turn shows)."""

    script_rate: float = 0.2
    trajectory_rate: float = 0.35
    retry_rate_factor: float = 0.5
    # share of correct answers wrapped in a Markdown code fence when the request
    # does not ask for JSON mode (real models do this; SPEC S1 strips fences)
    code_fence_rate: float = 0.1
    # share of judge answers (the judge stage) that flip one flag the DM turn calls for
    judge_disagree_rate: float = 0.0


@dataclass(frozen=True)
class SimSettings:
    """All simulator settings; every field has a default."""

    # the named profile these settings start from (simulator.profiles); keys given override it
    profile: str = DEFAULT_PROFILE
    models: list[str] = field(default_factory=lambda: ["sim-gpt-4o"])
    embedding_models: list[str] = field(default_factory=lambda: ["text-embedding-3-small"])
    seed: int = 0
    # every duration is multiplied by this (0.02: fifty times faster, same shape); the RPM/TPM
    # limits grow by its inverse, so the endpoint stays as busy relative to its limits
    time_scale: float = 1.0
    # time to first token: a lognormal base (median, sigma) plus prompt tokens / prefill speed
    latency_median_s: float = 0.05
    latency_sigma: float = 0.5
    prefill_tokens_per_s: float = 0.0  # 0: prefill takes no time
    # decode speed of one sequence, completion tokens per second (0: the answer is out at once)
    output_tokens_per_s: float = 0.0
    # one SSE event per this many seconds of decoding (holding the tokens decoded since the last)
    stream_interval_s: float = 0.4
    # > 0: every answer is padded with whitespace to at least this many completion tokens (never
    # beyond its max_tokens): with a low output_tokens_per_s, an answer that takes 10 minutes
    min_completion_tokens: int = 0
    rpm: int = 0
    tpm: int = 0
    # seconds of refill a full RPM/TPM bucket holds: 60 lets a fresh key burst a minute's
    # worth; less models a limit enforced over shorter periods (OpenAI's "1,000 per second")
    burst_s: float = 60.0
    # false: the buckets start empty, as for a key that another job has just used
    start_full: bool = True
    # true: the unused part of a request's TPM charge (prompt + max_tokens at admission) is
    # given back once the answer is complete; false: the charge stands, the stricter reading
    # of OpenAI's documentation (it documents the charge at admission, no refund)
    tpm_refund: bool = True
    # > 0: continuous batching like vLLM: at most this many sequences in the batch (prefill to
    # last token), the rest wait in a queue (their time to first token grows); never a 429
    max_num_seqs: int = 0
    # > 0: a sequence decodes at output_tokens_per_s / (1 + batch / batch_half_speed) with
    # `batch` sequences in the batch, so the batch's throughput rises and flattens
    batch_half_speed: float = 0.0
    # > 0: like DeepSeek, at most this many requests at once per key; beyond: 429
    max_concurrent: int = 0
    # > 0: like DeepSeek, answer 200 at once and send a blank line (a `: keep-alive` SSE
    # comment when streaming) every keepalive_s seconds while the request waits
    keepalive_s: float = 0.0
    faults: FaultSettings = field(default_factory=FaultSettings)
    flaws: FlawSettings = field(default_factory=FlawSettings)
    usage_style: str = "openai"
    api_key: str | None = None
    json_mode: bool = True
    # models this key may not use: HTTP 403, as for a project without access to a model
    denied_models: list[str] = field(default_factory=list)
    # prompts longer than this many tokens get OpenAI's 400 context_length_exceeded (0 = no limit)
    max_context_tokens: int = 0
    # prompts containing one of these (case-insensitive) get OpenAI's 400 invalid_prompt
    refused_phrases: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SimSettings:
        """Build settings from a plain dict; unknown keys and bad types raise ValueError."""
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ValueError("simulator settings must be a JSON object")
        d = with_profile(d)
        plain = {k: v for k, v in d.items() if k not in ("faults", "flaws")}
        kwargs = _check_fields(cls, plain, "")
        if "faults" in d:
            kwargs["faults"] = _build(FaultSettings, d["faults"], "faults.")
        if "flaws" in d:
            kwargs["flaws"] = _build(FlawSettings, d["flaws"], "flaws.")
        if "models" in kwargs:
            kwargs["models"] = list(kwargs["models"])
        settings = cls(**kwargs)
        settings._validate()
        return settings

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (round-trips through `from_dict`)."""
        return dataclasses.asdict(self)

    def _validate(self) -> None:
        if not self.models or not all(isinstance(m, str) and m for m in self.models):
            raise ValueError("setting 'models' must be a non-empty list of non-empty strings")
        if self.time_scale <= 0:
            raise ValueError("setting 'time_scale' must be > 0")
        if self.stream_interval_s <= 0:
            raise ValueError("setting 'stream_interval_s' must be > 0")
        for name in ("latency_median_s", "latency_sigma", "prefill_tokens_per_s", "output_tokens_per_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"setting '{name}' must be >= 0 (0 = no time)")
        if self.rpm < 0 or self.tpm < 0 or self.max_context_tokens < 0:
            raise ValueError("settings 'rpm', 'tpm' and 'max_context_tokens' must be >= 0 (0 = unlimited)")
        if self.burst_s <= 0:
            raise ValueError("setting 'burst_s' must be > 0")
        for name in (
            "max_num_seqs",
            "batch_half_speed",
            "max_concurrent",
            "keepalive_s",
            "min_completion_tokens",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"setting '{name}' must be >= 0 (0 = off)")
        if self.usage_style not in USAGE_STYLES:
            raise ValueError(f"setting 'usage_style' must be one of {USAGE_STYLES}, got {self.usage_style!r}")
        f = self.faults
        probabilities = ("p_5xx", "p_reset", "p_truncated_body", "p_hang", "p_empty_choices", "p_length")
        for name in probabilities:
            if not 0.0 <= getattr(f, name) <= 1.0:
                raise ValueError(f"setting 'faults.{name}' must be between 0 and 1")
        if sum(getattr(f, name) for name in probabilities) > 1.0 + 1e-9:
            raise ValueError("settings 'faults.p_*' must sum to at most 1")
        if f.hang_s < 0:
            raise ValueError("setting 'faults.hang_s' must be >= 0")
        for name in ("script_rate", "trajectory_rate", "code_fence_rate", "judge_disagree_rate"):
            if not 0.0 <= getattr(self.flaws, name) <= 1.0:
                raise ValueError(f"setting 'flaws.{name}' must be between 0 and 1")
        if self.flaws.retry_rate_factor < 0:
            raise ValueError("setting 'flaws.retry_rate_factor' must be >= 0")


def _build(cls: type, value: Any, prefix: str) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"setting '{prefix[:-1]}' must be an object, got {type(value).__name__}")
    return cls(**_check_fields(cls, value, prefix))


def _check_fields(cls: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    known = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"unknown simulator setting '{prefix}{key}'")
        _check_type(f"{prefix}{key}", known[key].type, value)
        out[key] = float(value) if str(known[key].type) == "float" else value
    return out


def _check_type(name: str, annotation: Any, value: Any) -> None:
    ann = str(annotation)
    ok: bool
    if ann == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif ann == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif ann == "bool":
        ok = isinstance(value, bool)
    elif ann == "str":
        ok = isinstance(value, str)
    elif ann == "str | None":
        ok = value is None or isinstance(value, str)
    elif ann == "list[str]":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:  # pragma: no cover - every field type is listed above
        ok = True
    if not ok:
        raise ValueError(
            f"setting '{name}' must be of type {ann}, got {type(value).__name__} ({value!r:.60})"
        )
