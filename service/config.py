"""Typed, validated configuration: `config.yaml` plus environment and CLI overrides.

The YAML file is read as a node tree so that every error can name the file, the line and
the dotted key (`config.yaml:12: endpoints.openai.limits.rpm: expected int, got 'fast'`).
Overrides are dotted assignments (`run.n=500`) from `--set` or from environment variables
`AGENTREFINE__RUN__N=500`, and the CLI's own options (`-n 500`, named as such in errors);
they are applied to the tree before validation, so they are checked exactly like the file.

Every number has a range (`bounded(...)` on its field), checked at load time: a negative
limit, a zero concurrency, a temperature of 5 or a 23-digit N is refused with the place, not
silently changed or found at the end of the run. The file is trusted no further than its
size: at most MAX_CONFIG_BYTES, and at most MAX_CONFIG_VALUES values once YAML aliases are
followed (an alias "bomb" is refused before it is expanded).
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
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 10_000  # mappings, lists and scalars, aliases followed


class ConfigError(Exception):
    """A configuration problem, reported as one line naming the place."""


@dataclass(frozen=True)
class Range:
    """The values a number may take: lo <= value <= hi (lo < value when `above`)."""

    lo: float
    hi: float
    above: bool = False
    note: str = ""  # what a special value means, e.g. "0: no limit"

    def problem(self, value: float) -> str | None:
        """Why `value` is out of range, or None."""
        low_ok = value > self.lo if self.above else value >= self.lo
        if low_ok and value <= self.hi:  # false for NaN too
            return None
        low = f"above {self.lo}" if self.above else f"at least {self.lo}"
        note = f" ({self.note})" if self.note else ""
        return f"must be {low} and at most {self.hi}{note}, got {value}"


def bounded(default: Any, lo: float, hi: float, *, above: bool = False, note: str = "") -> Any:
    """A numeric config field with its range."""
    return field(default=default, metadata={"range": Range(lo, hi, above, note)})


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
class Limits:
    """Client-side limits for one endpoint (0 = no limit)."""

    rpm: int = bounded(0, 0, 10**8, note="0: no limit")
    tpm: int = bounded(0, 0, 10**11, note="0: no limit")
    # a ceiling: the limiter finds the concurrency the endpoint takes (workers/concurrency.py);
    # 10,000 RPM x 60 s answers need 10,000 in flight
    max_concurrency: int = bounded(10_000, 1, 1_000_000)


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: float = bounded(0.0, 0, 10_000)
    cached_input: float | None = bounded(None, 0, 10_000, note="null: the input price")
    output: float = bounded(0.0, 0, 10_000)


@dataclass(frozen=True)
class Breaker:
    """When an endpoint is down or refuses the configuration, stop the run with one line
    instead of failing sample after sample."""

    failures: int = bounded(50, 1, 10**6)  # consecutive failed tries (5xx, reset, timeout, bad answer) ...
    outage_s: float = bounded(60.0, 0, 86_400)  # ... spanning at least this long with no success
    bad_requests: int = bounded(10, 1, 10**6)  # consecutive 400/413/422 answers: the config is wrong


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
    # connect, and the longest silence between two reads (no total timeout)
    timeout_s: float = bounded(60.0, 0, 3600, above=True)
    max_retries: int = bounded(8, 0, 100)
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
    temperature: float = bounded(0.7, 0, 2)
    max_tokens: int = bounded(4096, 1, 10**7)
    # a cap on samples in this stage at once (null: the limiters pace)
    concurrency: int | None = bounded(None, 1, 1_000_000, note="null: no cap")
    attempts: int = bounded(2, 1, 100)


JUDGE_POLICIES = ("keep", "remask", "drop")


@dataclass(frozen=True)
class Judge(Stage):
    """The optional judge stage (`workers/judge.py`, off by default): a model checks the DM's
    place_error / logic_error flags of every accepted sample. `policy` for a sample it disagrees
    with: keep (and report it), remask (also mask the turns it calls errors) or drop. `share`:
    the share of samples judged (chosen by sample id), an audit for a fraction of the cost.
    `attempts`: asks per turn while the answer is unreadable."""

    enabled: bool = False
    policy: str = "keep"
    share: float = bounded(1.0, 0, 1, above=True)
    temperature: float = bounded(0.0, 0, 2)
    max_tokens: int = bounded(512, 1, 10**7)


@dataclass(frozen=True)
class Stages:
    personas: Stage = field(default_factory=lambda: Stage(temperature=1.0, max_tokens=1024))
    script: Stage = field(default_factory=lambda: Stage(temperature=0.9, max_tokens=12288, attempts=2))
    trajectory: Stage = field(default_factory=lambda: Stage(temperature=0.7, max_tokens=12288, attempts=3))
    judge: Judge = field(default_factory=Judge)


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
    # samples in flight at most (a memory ceiling; service/pacing.py)
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
    persona: DedupKind = field(default_factory=lambda: DedupKind(0.88))  # MiniLM-L3 (docs/decisions.md)
    script: DedupKind = field(default_factory=DedupKind)
    index: str = "flat"  # flat (exact), or ivf / hnsw (approximate, for very large runs)
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
    dedup: Dedup = field(default_factory=Dedup)

    def endpoints_for(self, stage: Stage) -> list[Endpoint]:
        """The stage's endpoints: the primary first, then its fallbacks."""
        names = stage.endpoint or self.generator
        return [self.endpoints[name] for name in ([names] if isinstance(names, str) else names)]

    def stages_in_use(self) -> dict[str, Stage]:
        """The stages this run has: script and trajectory, persona expansion when there is no
        persona file, and the judge when it is enabled."""
        stages = {"script": self.stages.script, "trajectory": self.stages.trajectory}
        if not self.personas.path:
            stages["personas"] = self.stages.personas
        if self.stages.judge.enabled:
            stages["judge"] = self.stages.judge
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
    options: Sequence[tuple[str, str, Any]] = (),
) -> Config:
    """Read, override and validate a config file; raise ConfigError with one line on any problem.

    `overrides` are `--set KEY=VALUE` items (VALUE read as YAML); `options` are the CLI's own
    options as (option, dotted key, value), applied last and named by the option in errors."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: config is larger than {MAX_CONFIG_BYTES >> 20} MiB; is it the right file?"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: config is not UTF-8 text (byte {exc.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        tree = _Reader(str(path)).read(node) if node is not None else _Located({}, f"{path}:1")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if not isinstance(tree.value, dict):
        raise ConfigError(f"{tree.where}: the config must be a mapping")
    env = os.environ if environ is None else environ
    for key in sorted(env):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            _apply_override(tree, dotted, _yaml_value(env[key]), f"environment {key}")
    for item in overrides:
        dotted, sep, raw_value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. run.n=500")
        _apply_override(tree, dotted.strip(), _yaml_value(raw_value), f"--set {item}")
    for option, dotted, value in options:
        _apply_override(tree, dotted, value, option)
    config = _build(Config, tree, "")
    return _check_references(config, tree, env)


class _Reader:
    """A YAML node tree as `_Located` values, following at most MAX_CONFIG_VALUES nodes: an
    alias is a reference to an earlier node, so a few lines of aliases can stand for billions
    of values; they are counted as they are followed and refused before they are expanded."""

    def __init__(self, filename: str) -> None:
        self._filename = filename
        self._values = 0
        self._constructor = yaml.constructor.SafeConstructor()

    def read(self, node: yaml.Node) -> _Located:
        self._values += 1
        where = f"{self._filename}:{node.start_mark.line + 1}"
        if self._values > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{where}: the config holds more than {MAX_CONFIG_VALUES} values once its YAML aliases "
                "(*name) are expanded; write the values out instead"
            )
        if isinstance(node, yaml.MappingNode):
            out: dict[str, _Located] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node)
                if not isinstance(key, str):
                    raise ConfigError(
                        f"{self._filename}:{key_node.start_mark.line + 1}: keys must be strings"
                    )
                child = self.read(value_node)
                child.where = f"{self._filename}:{key_node.start_mark.line + 1}"  # the key's line
                out[key] = child
            return _Located(out, where)
        if isinstance(node, yaml.SequenceNode):
            return _Located([self.read(n) for n in node.value], where)
        return _Located(self._scalar(node), where)

    def _scalar(self, node: yaml.Node) -> Any:
        """A scalar node's value as YAML reads it (int, float, bool, null, str)."""
        if not isinstance(node, yaml.ScalarNode):
            return None  # a mapping or list used as a key: not a string
        return self._constructor.construct_object(node)


def _yaml_value(raw: str) -> Any:
    """An override's VALUE as YAML reads it (`500`, `true`, `[a, b]`), or the text itself."""
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def _apply_override(tree: _Located, dotted: str, value: Any, where: str) -> None:
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ConfigError(f"{where}: empty key")
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
                kwargs[name] = value = _build(hints[name], loc.value[name], _join(path, name))
                bounds: Range | None = f.metadata.get("range")
                if bounds is not None and value is not None and (problem := bounds.problem(value)):
                    raise ConfigError(f"{loc.value[name].where}: {_join(path, name)}: {problem}")
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
    for stage_name in ("personas", "script", "trajectory", "judge"):
        stage: Stage = getattr(config.stages, stage_name)
        _check_stage_endpoints(
            stage.endpoint,
            config.endpoints,
            f"{where('stages', stage_name, 'endpoint')}: stages.{stage_name}.endpoint",
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
    _check_dedup(config.dedup, where("dedup"), names, config.endpoints)
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
