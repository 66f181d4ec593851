"""Typed, validated configuration: `config.yaml` plus environment and CLI overrides.

The YAML file is read as a node tree so that every error can name the file, the line and
the dotted key (`config.yaml:12: endpoints.openai.limits.rpm: expected int, got 'fast'`).
Overrides are dotted assignments (`run.n=500`) from `--set` or from environment variables
`AGENTREFINE__RUN__N=500`; they are applied to the tree before validation, so they are
checked exactly like the file.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simulator.settings import SimSettings

TRANSPORTS = ("aiohttp",)  # how an endpoint is spoken to (workers/http.py); http1 and openai were removed

ENV_PREFIX = "AGENTREFINE__"
LOCAL_EMBEDDER = "minilm"  # dedup.embedder value for the bundled MiniLM models (dedup/minilm.py)


class ConfigError(Exception):
    """A configuration problem, reported as one line naming the place."""


@dataclass(frozen=True)
class Limits:
    """Client-side limits for one endpoint (0 = no limit)."""

    rpm: int = 0
    tpm: int = 0
    # a ceiling: the limiter finds the concurrency the endpoint takes (workers/concurrency.py);
    # 10,000 RPM x 60 s answers need 10,000 in flight
    max_concurrency: int = 10_000


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: float = 0.0
    cached_input: float | None = None
    output: float = 0.0


@dataclass(frozen=True)
class Breaker:
    """When an endpoint is down or refuses the configuration, stop the run with one line
    instead of failing sample after sample."""

    failures: int = 50  # consecutive failed tries (5xx, reset, timeout, unreadable answer) ...
    outage_s: float = 60.0  # ... spanning at least this long with no success in between
    bad_requests: int = 10  # consecutive 400/413/422 answers: the configuration is wrong


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible endpoint: where it is, which model, how to authenticate."""

    model: str
    name: str = ""
    base_url: str | None = None
    api_key_env: str | None = None
    embedded: dict[str, Any] | None = None
    json_mode: bool = True
    send_seed: bool = True
    max_tokens_param: str = "max_tokens"
    timeout_s: float = 60.0  # connect, and the longest silence between two reads (no total timeout)
    max_retries: int = 8
    transport: str = "aiohttp"
    stream: bool = True  # ask for server-sent events (with usage); false for an endpoint that cannot
    size_max_tokens: bool = True  # under a TPM limit: max_tokens sized to the answers (sizing.py)
    extra_body: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    price: Price = field(default_factory=Price)
    breaker: Breaker = field(default_factory=Breaker)

    def api_key(self) -> str:
        """The key from the environment; local endpoints without one get a placeholder."""
        if self.api_key_env is None:
            return "not-needed"
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"endpoints.{self.name}.api_key_env: environment variable {self.api_key_env} is not set"
            )
        return value


@dataclass(frozen=True)
class Stage:
    """Generation settings for one LLM stage. `endpoint`: one endpoint name, or a list (the
    primary first, then the fallbacks tried in order when it gives up); null: `generator`."""

    endpoint: str | list[str] | None = None
    temperature: float = 0.7
    max_tokens: int = 4096
    concurrency: int | None = None  # a cap on samples in this stage at once (None: the limiters pace)
    attempts: int = 2


@dataclass(frozen=True)
class Stages:
    personas: Stage = field(default_factory=lambda: Stage(temperature=1.0, max_tokens=1024))
    script: Stage = field(default_factory=lambda: Stage(temperature=0.9, max_tokens=12288, attempts=2))
    trajectory: Stage = field(default_factory=lambda: Stage(temperature=0.7, max_tokens=12288, attempts=3))


@dataclass(frozen=True)
class Personas:
    """Where personas come from."""

    path: str | None = None
    strict: bool = False
    expand_count: int = 5


@dataclass(frozen=True)
class Run:
    n: int = 1000
    out: str = "runs/default"
    seed: int = 0
    max_in_flight: int = 10_000  # samples in flight at most (a memory ceiling; service/pacing.py)
    shard_size: int = 10000
    sharegpt: bool = False
    refinement_data: bool = True  # false: the paper's "w/o refinement data" ablation (no mistakes)
    license: str = "apache-2.0"  # the dataset card's license id (what your generator's terms allow)
    progress_interval_s: float = 0.5
    stop_grace_s: float = 30.0  # after SIGINT/SIGTERM, wait this long for requests in flight
    max_cost_usd: float | None = None  # stop cleanly once the whole run has spent this much
    report: bool = True  # write report.md and report/*.png at the end of the run


@dataclass(frozen=True)
class Metrics:
    """The Prometheus `/metrics` endpoint of the running service."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, printed at start


@dataclass(frozen=True)
class DedupKind:
    """Cosine similarity at or above which an item duplicates a kept one."""

    threshold: float = 0.9


@dataclass(frozen=True)
class Hnsw:
    m: int = 32
    ef_construction: int = 64
    ef_search: int = 128


@dataclass(frozen=True)
class Ivf:
    nlist: int = 1024
    nprobe: int = 8
    train_after: int = 65536  # exact search until this many items, then train the cells on them


@dataclass(frozen=True)
class Dedup:
    """Embedding dedup of personas and scripts (exact-hash dedup always runs first)."""

    embedder: str = LOCAL_EMBEDDER  # the bundled model, or the name of an endpoint with /v1/embeddings
    model: str = "text-embedding-3-small"  # the embedding model, for an endpoint embedder
    persona: DedupKind = field(default_factory=lambda: DedupKind(0.88))  # MiniLM-L3 (docs/decisions.md)
    script: DedupKind = field(default_factory=DedupKind)
    index: str = "flat"  # flat (exact), or ivf / hnsw (approximate, for very large runs)
    ivf: Ivf = field(default_factory=Ivf)
    hnsw: Hnsw = field(default_factory=Hnsw)
    batch_size: int = 64
    threads: int = 1  # ONNX Runtime threads of each local embedder


@dataclass(frozen=True)
class Config:
    generator: str
    endpoints: dict[str, Endpoint]
    stages: Stages = field(default_factory=Stages)
    personas: Personas = field(default_factory=Personas)
    run: Run = field(default_factory=Run)
    metrics: Metrics = field(default_factory=Metrics)
    dedup: Dedup = field(default_factory=Dedup)

    def endpoints_for(self, stage: Stage) -> list[Endpoint]:
        """The stage's endpoints: the primary first, then its fallbacks."""
        names = stage.endpoint or self.generator
        return [self.endpoints[name] for name in ([names] if isinstance(names, str) else names)]

    def stages_in_use(self) -> dict[str, Stage]:
        """The stages this run has: script and trajectory, and persona expansion when there is
        no persona file."""
        stages = {"script": self.stages.script, "trajectory": self.stages.trajectory}
        if not self.personas.path:
            stages["personas"] = self.stages.personas
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


@dataclass
class _Located:
    """A plain value plus where it came from (for error messages)."""

    value: Any
    where: str


def load_config(
    path: str | Path,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, override and validate a config file; raise ConfigError with one line on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    tree = _from_node(node, str(path)) if node is not None else _Located({}, f"{path}:1")
    if not isinstance(tree.value, dict):
        raise ConfigError(f"{tree.where}: the config must be a mapping")
    env = os.environ if environ is None else environ
    for key in sorted(env):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            _apply_override(tree, dotted, env[key], f"environment {key}")
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. run.n=500")
        _apply_override(tree, dotted.strip(), raw, f"--set {item}")
    config = _build(Config, tree, "")
    return _check_references(config, tree, env)


def _from_node(node: yaml.Node, filename: str) -> _Located:
    where = f"{filename}:{node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        out: dict[str, _Located] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            if not isinstance(key, str):
                raise ConfigError(f"{filename}:{key_node.start_mark.line + 1}: keys must be strings")
            child = _from_node(value_node, filename)
            child.where = f"{filename}:{key_node.start_mark.line + 1}"  # the key's line, also for blocks
            out[key] = child
        return _Located(out, where)
    if isinstance(node, yaml.SequenceNode):
        return _Located([_from_node(n, filename) for n in node.value], where)
    return _Located(yaml.safe_load(yaml.serialize(node)), where)


def _apply_override(tree: _Located, dotted: str, raw: str, where: str) -> None:
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ConfigError(f"{where}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = tree
    for part in parts[:-1]:
        child = node.value.get(part)
        if child is None or child.value is None:
            child = _Located({}, where)
            node.value[part] = child
        if not isinstance(child.value, dict):
            raise ConfigError(f"{where}: {dotted}: {part} is not a mapping")
        node = child
    node.value[parts[-1]] = _wrap(value, where)


def _wrap(value: Any, where: str) -> _Located:
    if isinstance(value, dict):
        return _Located({str(k): _wrap(v, where) for k, v in value.items()}, where)
    if isinstance(value, list):
        return _Located([_wrap(v, where) for v in value], where)
    return _Located(value, where)


def _plain(loc: _Located) -> Any:
    if isinstance(loc.value, dict):
        return {k: _plain(v) for k, v in loc.value.items()}
    if isinstance(loc.value, list):
        return [_plain(v) for v in loc.value]
    return loc.value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _build(tp: Any, loc: _Located, path: str) -> Any:
    label = path or "config"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if loc.value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        as_list = [o for o in inner if typing.get_origin(o) is list]
        if as_list and isinstance(loc.value, list):
            return _build(as_list[0], loc, path)
        return _build(inner[0], loc, path)
    if dataclasses.is_dataclass(tp):
        if loc.value is None:
            loc = _Located({}, loc.where)
        if not isinstance(loc.value, dict):
            raise ConfigError(f"{loc.where}: {label}: expected a mapping, got {_show(loc.value)}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.name != "name"}
        unknown = [k for k in loc.value if k not in fields]
        if unknown:
            bad = loc.value[unknown[0]]
            raise ConfigError(
                f"{bad.where}: {_join(path, unknown[0])}: unknown key (expected one of: {', '.join(fields)})"
            )
        kwargs = {}
        for name, f in fields.items():
            if name in loc.value:
                kwargs[name] = _build(hints[name], loc.value[name], _join(path, name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{loc.where}: {_join(path, name)}: required key is missing")
        return tp(**kwargs)
    if origin is list:
        if not isinstance(loc.value, list):
            raise ConfigError(f"{loc.where}: {label}: expected a list, got {_show(loc.value)}")
        (item_tp,) = typing.get_args(tp)
        return [_build(item_tp, item, f"{label}[{i}]") for i, item in enumerate(loc.value)]
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        if not isinstance(loc.value, dict):
            raise ConfigError(f"{loc.where}: {label}: expected a mapping, got {_show(loc.value)}")
        if value_tp is Any:
            return _plain(loc)
        out = {}
        for key, child in loc.value.items():
            built = _build(value_tp, child, _join(path, key))
            if dataclasses.is_dataclass(built) and "name" in {f.name for f in dataclasses.fields(built)}:
                built = dataclasses.replace(built, name=key)
            out[key] = built
        return out
    value = loc.value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{loc.where}: {label}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{loc.where}: {label}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{loc.where}: {label}: expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{loc.where}: {label}: expected a string, got {_show(value)}")
        return value
    raise ConfigError(f"{loc.where}: {label}: unsupported type {_type_name(tp)}")


def _check_references(config: Config, tree: _Located, env: Mapping[str, str]) -> Config:
    def where(*keys: str) -> str:
        node = tree
        for key in keys:
            if not isinstance(node.value, dict) or key not in node.value:
                break
            node = node.value[key]
        return node.where

    if not config.endpoints:
        raise ConfigError(f"{where('endpoints')}: endpoints: at least one endpoint is required")
    names = ", ".join(config.endpoints)
    if config.generator not in config.endpoints:
        raise ConfigError(
            f"{where('generator')}: generator: unknown endpoint {config.generator!r} (defined: {names})"
        )
    for stage_name in ("personas", "script", "trajectory"):
        stage: Stage = getattr(config.stages, stage_name)
        _check_stage_endpoints(
            stage.endpoint,
            config.endpoints,
            f"{where('stages', stage_name, 'endpoint')}: stages.{stage_name}.endpoint",
        )
        if stage.attempts < 1 or (stage.concurrency or 1) < 1 or stage.max_tokens < 1:
            raise ConfigError(
                f"{where('stages', stage_name)}: stages.{stage_name}: attempts, concurrency and "
                "max_tokens must be at least 1"
            )
    for name, ep in config.endpoints.items():
        if (ep.base_url is None) == (ep.embedded is None):
            raise ConfigError(
                f"{where('endpoints', name)}: endpoints.{name}: give exactly one of base_url "
                "(a real endpoint) or embedded (settings of the built-in endpoint)"
            )
        if ep.embedded is not None:
            _check_embedded(ep.embedded, f"{where('endpoints', name, 'embedded')}: endpoints.{name}.embedded")
        if ep.max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError(
                f"{where('endpoints', name, 'max_tokens_param')}: endpoints.{name}.max_tokens_param: "
                "expected max_tokens or max_completion_tokens"
            )
        if ep.transport not in TRANSPORTS:
            raise ConfigError(
                f"{where('endpoints', name, 'transport')}: endpoints.{name}.transport: expected "
                f"{' or '.join(TRANSPORTS)}, got {ep.transport!r}"
            )
        breaker = ep.breaker
        if breaker.failures < 1 or breaker.bad_requests < 1 or breaker.outage_s < 0:
            raise ConfigError(
                f"{where('endpoints', name, 'breaker')}: endpoints.{name}.breaker: failures and "
                "bad_requests must be at least 1, outage_s at least 0"
            )
    _check_dedup(config.dedup, where("dedup"), names, config.endpoints)
    if config.run.n < 1:
        raise ConfigError(f"{where('run', 'n')}: run.n: must be at least 1, got {config.run.n}")
    if config.run.max_in_flight < 1 or config.run.shard_size < 1:
        raise ConfigError(f"{where('run')}: run: max_in_flight and shard_size must be at least 1")
    if config.run.stop_grace_s < 0:
        raise ConfigError(f"{where('run', 'stop_grace_s')}: run.stop_grace_s: must be at least 0")
    for name, ep in config.endpoints_in_use().items():
        if ep.api_key_env is not None and not env.get(ep.api_key_env):
            raise ConfigError(
                f"{where('endpoints', name, 'api_key_env')}: endpoints.{name}.api_key_env: environment "
                f"variable {ep.api_key_env} is not set (API keys are read only from the environment)"
            )
    if config.run.max_cost_usd is not None and config.run.max_cost_usd <= 0:
        raise ConfigError(
            f"{where('run', 'max_cost_usd')}: run.max_cost_usd: must be above 0 (null: no limit)"
        )
    if not 0 <= config.metrics.port <= 65535:
        raise ConfigError(f"{where('metrics', 'port')}: metrics.port: must be 0-65535 (0: a free port)")
    return config


def _check_embedded(settings: dict[str, Any], place: str) -> None:
    """The embedded endpoint's settings (its profile and every key) are checked before any work."""
    try:
        SimSettings.from_dict(settings)
    except ValueError as exc:
        raise ConfigError(f"{place}: {exc}") from None


def _check_dedup(dedup: Dedup, where: str, names: str, endpoints: dict[str, Endpoint]) -> None:
    if dedup.embedder != LOCAL_EMBEDDER and dedup.embedder not in endpoints:
        raise ConfigError(
            f"{where}: dedup.embedder: expected {LOCAL_EMBEDDER} or an endpoint name, got {dedup.embedder!r} "
            f"(defined: {names})"
        )
    if dedup.index not in ("flat", "ivf", "hnsw"):
        raise ConfigError(f"{where}: dedup.index: expected flat, ivf or hnsw, got {dedup.index!r}")
    for kind in ("persona", "script"):
        threshold = getattr(dedup, kind).threshold
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"{where}: dedup.{kind}.threshold: must be in (0, 1], got {threshold}")
    sizes = (
        dedup.batch_size,
        dedup.threads,
        dedup.ivf.nlist,
        dedup.ivf.nprobe,
        dedup.hnsw.m,
        dedup.hnsw.ef_search,
    )
    if min(sizes) < 1:
        raise ConfigError(
            f"{where}: dedup: batch_size, threads, ivf.nlist, ivf.nprobe, hnsw.m and hnsw.ef_search "
            "must be at least 1"
        )


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


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)
