"""Settings of the embedded OpenAI-compatible simulator.

`SimSettings.build(node, key)` builds the frozen settings from a located tree (`typedconfig`)
laid over the named `profile` (`simulator.profiles`); `from_dict` does the same for a plain
dict. Every error is one `ConfigError` line naming the place and the key: when the service
starts the simulator it passes where each of its `endpoints.X.embedded` settings came from, so
`config.yaml:19: endpoints.local.embedded.latency_median_s: must be at least 0 ...` names the
line of the user's file.

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

from simulator.profiles import DEFAULT_PROFILE, PROFILES
from typedconfig import ConfigError, Node, bounded, build, from_plain, one_of
from typedconfig.build import Choices

USAGE_STYLES = ("openai", "deepseek")


@dataclass(frozen=True)
class FaultSettings:
    """Per-request transport and server faults (probabilities are exclusive: at most 1 in all)."""

    p_5xx: float = bounded(0.0, 0, 1)
    p_reset: float = bounded(0.0, 0, 1)
    p_truncated_body: float = bounded(0.0, 0, 1)
    p_hang: float = bounded(0.0, 0, 1)
    p_empty_choices: float = bounded(0.0, 0, 1)
    p_length: float = bounded(0.0, 0, 1)
    hang_s: float = bounded(300.0, 0, 10**6)


@dataclass(frozen=True)
class FlawSettings:
    """Share of generated outputs that break one of the SPEC rules on purpose (and of judge
    answers that disagree with what the judged turn shows)."""

    script_rate: float = bounded(0.2, 0, 1)
    trajectory_rate: float = bounded(0.35, 0, 1)
    retry_rate_factor: float = bounded(0.5, 0, 10**6)
    # share of correct answers wrapped in a Markdown code fence when the request
    # does not ask for JSON mode (real models do this; SPEC S1 strips fences)
    code_fence_rate: float = bounded(0.1, 0, 1)
    # share of judge answers (the judge stage) that flip one flag the DM turn calls for
    judge_disagree_rate: float = bounded(0.0, 0, 1)


@dataclass(frozen=True)
class BatchApiSettings:
    """The files and batches API (`simulator.batches`): how long a batch takes in each status
    (model seconds, times `time_scale`), and its failure modes."""

    enabled: bool = True  # false: no batch API (404), as at DeepSeek or vLLM
    validating_s: float = bounded(2.0, 0, 86_400)
    in_progress_s: float = bounded(60.0, 0, 86_400)
    finalizing_s: float = bounded(2.0, 0, 86_400)
    # per request of a batch: the share answered with a 500 in the error file
    p_request_error: float = bounded(0.0, 0, 1)
    fail_first: int = bounded(0, 0, 10**6, note="the first K batches created fail")
    expire_first: int = bounded(0, 0, 10**6, note="the next K batches expire, half answered")
    # prompt + max_tokens of the requests of unfinished batches, per model (0: no limit); a batch
    # beyond it fails at validation with token_limit_exceeded, as at OpenAI
    max_enqueued_tokens: int = bounded(0, 0, 10**12, note="0: no limit")


@dataclass(frozen=True)
class SimSettings:
    """All simulator settings; every field has a default."""

    # the named profile these settings start from (simulator.profiles); keys given override it
    profile: str = one_of(DEFAULT_PROFILE, tuple(PROFILES))
    models: list[str] = field(default_factory=lambda: ["sim-gpt-4o"])
    embedding_models: list[str] = field(default_factory=lambda: ["text-embedding-3-small"])
    seed: int = bounded(0, 0, 2**63 - 1)
    # every duration is multiplied by this (0.02: fifty times faster, same shape); the RPM/TPM
    # limits grow by its inverse, so the endpoint stays as busy relative to its limits
    time_scale: float = bounded(1.0, 0, 10**6, above=True)
    # time to first token: a lognormal base (median, sigma) plus prompt tokens / prefill speed
    latency_median_s: float = bounded(0.05, 0, 86_400)
    latency_sigma: float = bounded(0.5, 0, 100)
    prefill_tokens_per_s: float = bounded(0.0, 0, 10**9, note="0: prefill takes no time")
    # decode speed of one sequence, completion tokens per second (0: the answer is out at once)
    output_tokens_per_s: float = bounded(0.0, 0, 10**9, note="0: the answer is out at once")
    # one SSE event per this many seconds of decoding (holding the tokens decoded since the last)
    stream_interval_s: float = bounded(0.4, 0, 3600, above=True)
    # > 0: every answer is padded with whitespace to at least this many completion tokens (never
    # beyond its max_tokens): with a low output_tokens_per_s, an answer that takes 10 minutes
    min_completion_tokens: int = bounded(0, 0, 10**7, note="0: off")
    rpm: int = bounded(0, 0, 10**9, note="0: unlimited")
    tpm: int = bounded(0, 0, 10**12, note="0: unlimited")
    # seconds of refill a full RPM/TPM bucket holds: 60 lets a fresh key burst a minute's
    # worth; less models a limit enforced over shorter periods (OpenAI's "1,000 per second")
    burst_s: float = bounded(60.0, 0, 86_400, above=True)
    # false: the buckets start empty, as for a key that another job has just used
    start_full: bool = True
    # true: the unused part of a request's TPM charge (prompt + max_tokens at admission) is
    # given back once the answer is complete; false: the charge stands, the stricter reading
    # of OpenAI's documentation (it documents the charge at admission, no refund)
    tpm_refund: bool = True
    # > 0: continuous batching like vLLM: at most this many sequences in the batch (prefill to
    # last token), the rest wait in a queue (their time to first token grows); never a 429
    max_num_seqs: int = bounded(0, 0, 10**6, note="0: off")
    # > 0: a sequence decodes at output_tokens_per_s / (1 + batch / batch_half_speed) with
    # `batch` sequences in the batch, so the batch's throughput rises and flattens
    batch_half_speed: float = bounded(0.0, 0, 10**6, note="0: off")
    # > 0: like DeepSeek, at most this many requests at once per key; beyond: 429
    max_concurrent: int = bounded(0, 0, 10**6, note="0: off")
    # > 0: like DeepSeek, answer 200 at once and send a blank line (a `: keep-alive` SSE
    # comment when streaming) every keepalive_s seconds while the request waits
    keepalive_s: float = bounded(0.0, 0, 3600, note="0: off")
    faults: FaultSettings = field(default_factory=FaultSettings)
    batches: BatchApiSettings = field(default_factory=BatchApiSettings)
    flaws: FlawSettings = field(default_factory=FlawSettings)
    usage_style: str = one_of("openai", USAGE_STYLES)
    api_key: str | None = None
    json_mode: bool = True
    # models this key may not use: HTTP 403, as for a project without access to a model
    denied_models: list[str] = field(default_factory=list)
    # prompts longer than this many tokens get OpenAI's 400 context_length_exceeded (0 = no limit)
    max_context_tokens: int = bounded(0, 0, 10**9, note="0: no limit")
    # prompts containing one of these (case-insensitive) get OpenAI's 400 invalid_prompt
    refused_phrases: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, node: Node, key: str = "") -> SimSettings:
        """Settings from a located tree laid over its profile; `key` is where the tree sits in
        a larger config (for messages). ConfigError names the place of the first problem."""
        if not isinstance(node.value, dict):
            raise ConfigError(f"{node.where}: {key or 'settings'}: expected a mapping")
        profile = node.value.get("profile")
        name = DEFAULT_PROFILE if profile is None else profile.value
        if (problem := Choices(tuple(PROFILES)).problem(name)) is not None:
            assert profile is not None
            raise ConfigError(f"{profile.where}: {_join(key, 'profile')}: {problem}")
        merged = Node(dict(node.value), node.where)
        for setting, value in PROFILES[name].items():  # what the user gives overrides the profile
            given = merged.value.get(setting)
            if given is None:
                merged.value[setting] = from_plain(value, node.where)
            elif isinstance(value, dict) and isinstance(given.value, dict):  # faults, flaws: by key
                merged.value[setting] = Node(
                    {**from_plain(value, node.where).value, **given.value}, given.where
                )
        settings = build(cls, merged, key)
        settings._check(merged, key)
        return settings

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SimSettings:
        """Settings from a plain dict (ConfigError, a ValueError, on any problem)."""
        return cls.build(from_plain({} if d is None else d, "simulator settings"))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (round-trips through `from_dict`)."""
        return dataclasses.asdict(self)

    def _check(self, node: Node, key: str) -> None:
        """What the field ranges cannot say."""
        if not self.models or not all(self.models):
            place = node.find("models").where
            raise ConfigError(f"{place}: {_join(key, 'models')}: expected a non-empty list of model names")
        probabilities = [f.name for f in dataclasses.fields(FaultSettings) if f.name.startswith("p_")]
        if sum(getattr(self.faults, name) for name in probabilities) > 1.0 + 1e-9:
            place = node.find("faults").where
            raise ConfigError(f"{place}: {_join(key, 'faults')}: the p_* probabilities must sum to at most 1")


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name
