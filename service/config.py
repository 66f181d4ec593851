"""Typed, validated configuration: `config.yaml` plus environment and CLI overrides.

The schema is the dataclasses below; `typedconfig` reads the file as a located tree, so every
error names the file, the line and the dotted key (`config.yaml:12: endpoints.openai.limits.rpm:
expected an integer, got 'fast'`). Overrides are dotted assignments (`run.n=500`) from `--set`
or from environment variables `AGENTREFINE__RUN__N=500`, and the CLI's own options (`-n 500`,
named as such in errors); they are applied to the tree before validation, so they are checked
exactly like the file.

Every number has a range (`bounded(...)` on its field), checked at load time: a negative
limit, a zero concurrency, a temperature of 5 or a 23-digit N is refused with the place, not
silently changed or found at the end of the run. What one setting says about another (an
endpoint a stage names, an API key variable that must be set) is checked after the build.

`endpoints.X.embedded` is kept as a located subtree: the embedded endpoint builds its own
settings from it when it starts (`service/embedded.py`), with the same loader, so its errors
name the line of this file too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

import llm
from pipeline import registry
from pipeline.settings import JUDGE_POLICIES, StageSettings
from typedconfig import ConfigError, Node, Range, bounded, build, one_of, override, read_yaml, yaml_value

__all__ = ["Config", "ConfigError", "load_config"]

ENV_PREFIX = "AGENTREFINE__"
LOCAL_EMBEDDER = "minilm"  # dedup.embedder value for the bundled MiniLM models (dedup/minilm.py)


class FileModeRange(Range):
    """`run.file_mode`: permission bits that leave the owner able to read and write."""

    def problem(self, value: float) -> str | None:
        if isinstance(value, int) and 0 <= value <= 0o777 and value & 0o600 == 0o600:
            return None
        shown = oct(value) if isinstance(value, int) and value >= 0 else value
        return (
            f"must be a file mode with owner read and write, in octal as 0600 or 0640 (YAML reads "
            f"a leading 0 as octal), got {shown}"
        )


@dataclass(frozen=True)
class Endpoint(llm.Endpoint):
    """An entry of `endpoints:`: an LLM endpoint (`llm.Endpoint`), reached at `base_url` or
    started by the run as the embedded endpoint with the `embedded:` settings."""

    embedded: Node | None = None  # settings of the embedded endpoint, built by it (simulator)


Stages = make_dataclass(
    "Stages",
    [(stage.name, type(stage.defaults), field(default=stage.defaults)) for stage in registry.STAGES],
    frozen=True,
)
Stages.__doc__ = """`stages:`, one key per stage of the registry (pipeline/registry.py), each defaulting to
the stage's own settings."""


@dataclass(frozen=True)
class Personas:
    """Where personas come from."""

    path: str | None = None
    strict: bool = False
    expand_count: int = bounded(5, 1, 100)


@dataclass(frozen=True)
class AcceptanceFloor:
    """Stop a run whose source has dried up: fewer than `accepted` of the last `personas`
    personas taken from the source (admitted, or skipped as duplicates) were accepted."""

    accepted: int = bounded(1, 0, 10**6, note="0: never stop for this")
    personas: int = bounded(200, 1, 10**7)


@dataclass(frozen=True)
class Run:
    n: int = bounded(1000, 1, 10**9)
    out: str = "runs/default"
    seed: int = bounded(0, 0, 2**63 - 1)
    # samples in flight at most (a memory ceiling; workers/pacing.py)
    max_in_flight: int = bounded(10_000, 1, 10**6)
    shard_size: int = bounded(10000, 1, 10**9)
    sharegpt: bool = False
    refinement_data: bool = True  # false: the paper's "w/o refinement data" ablation (no mistakes)
    license: str = "apache-2.0"  # the dataset card's license id (what your generator's terms allow)
    progress_interval_s: float = bounded(0.5, 0, 3600, above=True)
    # after SIGINT/SIGTERM, wait this long for requests in flight
    stop_grace_s: float = bounded(30.0, 0, 86_400)
    # stop cleanly once the whole run has spent this much
    max_cost_usd: float | None = bounded(None, 0, 10**9, above=True, note="null: no limit")
    report: bool = True  # write report.md and report/*.png at the end of the run
    # permissions of every file the run creates (directories get x where r is set): 0600 = owner only
    file_mode: int = field(default=0o600, metadata={"range": FileModeRange(0, 0o777)})
    acceptance_floor: AcceptanceFloor = field(default_factory=AcceptanceFloor)
    # online: every request is sent as it comes; batch: the sample stages' requests go round by
    # round through the provider's Batch API at its batch price (`batch:`; llm/batch.py)
    mode: str = one_of("online", ("online", "batch"))


@dataclass(frozen=True)
class Cluster:
    """The sample stages on K Ray workers (`service/cluster`); 0: one process, Ray not imported."""

    workers: int = bounded(0, 0, 4096, note="0: one process, no Ray")
    # a Ray cluster to join ("auto", or ray://host:10001); null: $RAY_ADDRESS, else a local
    # cluster started for the run (and stopped with it)
    address: str | None = None
    # a worker not started by then stops the run in one line (a joined cluster with no free CPU)
    start_timeout_s: float = bounded(120.0, 1, 86_400)


@dataclass(frozen=True)
class Metrics:
    """The Prometheus `/metrics` endpoint of the running service."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = bounded(0, 0, 65535, note="0: a free port")  # printed at start


@dataclass(frozen=True)
class DedupKind:
    """Cosine similarity at or above which an item duplicates a kept one."""

    threshold: float = bounded(0.9, 0, 1, above=True)


@dataclass(frozen=True)
class Hnsw:
    m: int = bounded(32, 2, 1024)
    ef_construction: int = bounded(64, 1, 10**6)
    ef_search: int = bounded(128, 1, 10**6)


@dataclass(frozen=True)
class Ivf:
    nlist: int = bounded(1024, 1, 10**7)
    nprobe: int = bounded(8, 1, 10**7)
    # exact search until this many items, then train the cells on them
    train_after: int = bounded(65536, 1, 10**12)


@dataclass(frozen=True)
class Dedup:
    """Embedding dedup of personas and scripts (exact-hash dedup always runs first)."""

    embedder: str = LOCAL_EMBEDDER  # the bundled model, or the name of an endpoint with /v1/embeddings
    model: str = "text-embedding-3-small"  # the embedding model, for an endpoint embedder
    # USD per 1M tokens of that model (text-embedding-3-small's list price), for the run's cost
    price: llm.Price = field(default_factory=lambda: llm.Price(input=0.02))
    persona: DedupKind = field(default_factory=lambda: DedupKind(0.88))  # MiniLM-L3 (docs/decisions.md)
    script: DedupKind = field(default_factory=DedupKind)
    # flat (exact), or ivf / hnsw (approximate, for very large runs)
    index: str = one_of("flat", ("flat", "ivf", "hnsw"))
    ivf: Ivf = field(default_factory=Ivf)
    hnsw: Hnsw = field(default_factory=Hnsw)
    batch_size: int = bounded(64, 1, 100_000)
    threads: int = bounded(1, 1, 1024)  # ONNX Runtime threads of each local embedder


@dataclass(frozen=True)
class Config:
    generator: str
    endpoints: dict[str, Endpoint]
    stages: Stages = field(default_factory=Stages)
    personas: Personas = field(default_factory=Personas)
    run: Run = field(default_factory=Run)
    metrics: Metrics = field(default_factory=Metrics)
    cluster: Cluster = field(default_factory=Cluster)
    dedup: Dedup = field(default_factory=Dedup)
    batch: llm.BatchSettings = field(default_factory=llm.BatchSettings)

    def endpoints_for(self, stage: StageSettings) -> list[Endpoint]:
        """The stage's endpoints: the primary first, then its fallbacks."""
        names = stage.endpoint or self.generator
        return [self.endpoints[name] for name in ([names] if isinstance(names, str) else names)]

    def stages_in_use(self) -> dict[str, StageSettings]:
        """The stages this run has: the sample stages (an optional one, the judge, only when it
        is enabled), and the persona sources (expansion) when there is no persona file."""
        settings = {stage.name: getattr(self.stages, stage.name) for stage in registry.STAGES}
        return {
            stage.name: settings[stage.name]
            for stage in registry.STAGES
            if registry.enabled(stage.name, settings) and (stage.role == "sample" or not self.personas.path)
        }

    def stages_by_endpoint(self, stage_names: Iterable[str] | None = None) -> dict[str, list[str]]:
        """The stages (of `stage_names`, else those in use) that ask each endpoint, by its name."""
        in_use = self.stages_in_use()
        stages = {}
        for stage_name in in_use if stage_names is None else stage_names:
            for endpoint in self.endpoints_for(getattr(self.stages, stage_name)):
                stages.setdefault(endpoint.name, []).append(stage_name)
        return stages

    def endpoints_in_use(self) -> dict[str, Endpoint]:
        """The endpoints this run talks to: those of `stages_in_use`, and the dedup embedder's."""
        endpoints = [ep for stage in self.stages_in_use().values() for ep in self.endpoints_for(stage)]
        if self.dedup.embedder != LOCAL_EMBEDDER:
            endpoints.append(self.endpoints[self.dedup.embedder])
        return {endpoint.name: endpoint for endpoint in endpoints}

    def api_keys(self) -> list[str]:
        """The API keys the environment holds for any endpoint (so that logs can redact them)."""
        names = {ep.api_key_env for ep in self.endpoints.values() if ep.api_key_env}
        return [os.environ[name] for name in sorted(names) if os.environ.get(name)]


# ---------------------------------------------------------------------------------------
# loading


def load_config(
    path: str | Path,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    options: Sequence[tuple[str, str, Any]] = (),
) -> Config:
    """Read, override and validate a config file; raise ConfigError with one line on any problem.

    `overrides` are `--set KEY=VALUE` items (VALUE read as YAML); `options` are the CLI's own
    options as (option, dotted key, value), applied last and named by the option in errors."""
    tree = read_yaml(path)
    env = os.environ if environ is None else environ
    for key in sorted(env):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            override(tree, dotted, yaml_value(env[key]), f"environment {key}")
    for item in overrides:
        dotted, sep, raw_value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. run.n=500")
        override(tree, dotted.strip(), yaml_value(raw_value), f"--set {item}")
    for option, dotted, value in options:
        override(tree, dotted, value, option)
    config = build(Config, tree)
    return _check_references(config, tree, env)


def _check_references(config: Config, tree: Node, env: Mapping[str, str]) -> Config:
    def where(*keys: str) -> str:
        return tree.find(*keys).where

    if not config.endpoints:
        raise ConfigError(f"{where('endpoints')}: endpoints: at least one endpoint is required")
    names = ", ".join(config.endpoints)
    if config.generator not in config.endpoints:
        raise ConfigError(
            f"{where('generator')}: generator: unknown endpoint {config.generator!r} (defined: {names})"
        )
    for stage_name in (stage.name for stage in registry.STAGES):
        _check_stage_endpoints(
            getattr(config.stages, stage_name).endpoint,
            config.endpoints,
            f"{where('stages', stage_name, 'endpoint')}: stages.{stage_name}.endpoint",
        )
    for name, ep in config.endpoints.items():
        if (ep.base_url is None) == (ep.embedded is None):
            raise ConfigError(
                f"{where('endpoints', name)}: endpoints.{name}: give exactly one of base_url "
                "(a real endpoint) or embedded (settings of the built-in endpoint)"
            )
        if ep.embedded is not None and not isinstance(ep.embedded.value, dict):
            raise ConfigError(f"{ep.embedded.where}: endpoints.{name}.embedded: expected a mapping")
    if config.dedup.embedder != LOCAL_EMBEDDER and config.dedup.embedder not in config.endpoints:
        raise ConfigError(
            f"{where('dedup', 'embedder')}: dedup.embedder: expected {LOCAL_EMBEDDER} or an endpoint name, "
            f"got {config.dedup.embedder!r} (defined: {names})"
        )
    if config.stages.judge.policy not in JUDGE_POLICIES:
        raise ConfigError(
            f"{where('stages', 'judge', 'policy')}: stages.judge.policy: expected "
            f"{', '.join(JUDGE_POLICIES)}, got {config.stages.judge.policy!r}"
        )
    floor = config.run.acceptance_floor
    if floor.accepted > floor.personas:
        raise ConfigError(
            f"{where('run', 'acceptance_floor')}: run.acceptance_floor: accepted ({floor.accepted}) "
            f"cannot be more than personas ({floor.personas})"
        )
    for name, ep in config.endpoints_in_use().items():
        if ep.api_key_env is not None and not env.get(ep.api_key_env):
            raise ConfigError(
                f"{where('endpoints', name, 'api_key_env')}: endpoints.{name}.api_key_env: environment "
                f"variable {ep.api_key_env} is not set (API keys are read only from the environment)"
            )
    return config


def _check_stage_endpoints(
    chosen: str | list[str] | None, endpoints: dict[str, Endpoint], place: str
) -> None:
    """A stage's endpoint (or primary-then-fallbacks list) names defined endpoints, each once."""
    listed = [chosen] if isinstance(chosen, str) else chosen
    if listed is None:
        return
    if not listed:
        raise ConfigError(f"{place}: name at least one endpoint (or null for the generator)")
    for name in listed:
        if name not in endpoints:
            raise ConfigError(f"{place}: unknown endpoint {name!r} (defined: {', '.join(endpoints)})")
    if len(set(listed)) != len(listed):
        raise ConfigError(f"{place}: an endpoint is listed twice")
