"""config.yaml loading: the shipped file is valid; errors name file:line and the key."""

import dataclasses
import re
import time
import typing
from pathlib import Path

import pytest

from service.config import Config, ConfigError, Endpoint, load_config

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """\
generator: a
endpoints:
  a:
    base_url: http://127.0.0.1:1/v1
    model: m
  b:
    base_url: http://127.0.0.1:2/v1
    model: m2
    api_key_env: TEST_KEY_VAR
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_shipped_config_is_valid() -> None:
    config = load_config(ROOT / "config.yaml", environ={})
    assert [ep.name for ep in config.endpoints_for(config.stages.script)] == [config.generator]
    assert {"local", "local_b", "openai", "deepseek", "vllm"} <= set(config.endpoints)
    assert config.endpoints["openai"].api_key_env == "OPENAI_API_KEY"


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    rmp: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    message = str(err.value)
    assert message.startswith(f"{path}:10: endpoints.b.rmp: unknown key")
    assert "\n" not in message


def test_wrong_type_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "run:\n  n: lots\n")
    with pytest.raises(ConfigError, match=r"config.yaml:11: run.n: expected an integer, got 'lots'"):
        load_config(path, environ={})


def test_unknown_generator_lists_defined_endpoints(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("generator: a", "generator: zz"))
    with pytest.raises(ConfigError, match=r":1: generator: unknown endpoint 'zz' \(defined: a, b\)"):
        load_config(path, environ={})


def test_switching_generator_is_one_override(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    environ = {"AGENTREFINE__RUN__SEED": "5", "TEST_KEY_VAR": "k"}
    config = load_config(path, ["generator=b", "run.n=7"], environ=environ)
    assert [ep.model for ep in config.endpoints_for(config.stages.trajectory)] == ["m2"]
    assert (config.run.n, config.run.seed) == (7, 5)


def test_bad_override_is_checked_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match=r"^--set run.n=x: run.n: expected an integer"):
        load_config(path, ["run.n=x"], environ={})


def test_missing_api_key_variable_fails_at_load_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert load_config(path, environ={}).generator == "a"  # b's key is not needed while b is unused
    with pytest.raises(ConfigError) as err:
        load_config(path, ["stages.trajectory.endpoint=b"], environ={"OTHER": "sk-not-this"})
    assert str(err.value) == (
        f"{path}:9: endpoints.b.api_key_env: environment variable TEST_KEY_VAR is not set "
        "(API keys are read only from the environment)"
    )


def test_breaker_and_grace_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    breaker: {failures: 0}\n")
    with pytest.raises(
        ConfigError, match=r"config.yaml:10: endpoints.b.breaker.failures: must be at least 1"
    ):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match=r"run.stop_grace_s: must be at least 0"):
        load_config(write(tmp_path, MINIMAL), ["run.stop_grace_s=-1"], environ={})


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "generator: a\nendpoints: [\n")
    with pytest.raises(ConfigError, match=r"config.yaml:3: invalid YAML"):
        load_config(path, environ={})


def test_endpoint_needs_url_or_embedded(tmp_path: Path) -> None:
    path = write(tmp_path, "generator: a\nendpoints:\n  a:\n    model: m\n")
    with pytest.raises(ConfigError, match=r":3: endpoints.a: give exactly one of base_url"):
        load_config(path, environ={})


def test_embedded_settings_are_kept_located_for_the_endpoint(tmp_path: Path) -> None:
    path = write(tmp_path, "generator: a\nendpoints:\n  a:\n    model: m\n    embedded:\n      seed: 3\n")
    embedded = load_config(path, ["endpoints.a.embedded.rpm=7"], environ={}).endpoints["a"].embedded
    assert embedded is not None and embedded.plain() == {"seed": 3, "rpm": 7}
    assert embedded.locations() == {
        "": f"{path}:5",
        "seed": f"{path}:6",
        "rpm": "--set endpoints.a.embedded.rpm=7",
    }
    with pytest.raises(ConfigError, match=r":5: endpoints.a.embedded: expected a mapping"):
        load_config(write(tmp_path, "generator: a\nendpoints:\n  a:\n    model: m\n    embedded: 3\n"))


@pytest.mark.parametrize(
    ("dedup", "message"),
    [
        ("dedup:\n  index: annoy\n", "dedup.index: expected flat, ivf or hnsw, got 'annoy'"),
        ("dedup:\n  embedder: cohere\n", "dedup.embedder: expected minilm or an endpoint name, got 'cohere'"),
        (
            "dedup:\n  script: {threshold: 1.5}\n",
            "dedup.script.threshold: must be above 0 and at most 1, got 1.5",
        ),
    ],
)
def test_bad_dedup_settings_are_one_line_errors(tmp_path: Path, dedup: str, message: str) -> None:
    path = write(tmp_path, MINIMAL + dedup)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value).startswith(f"{path}:") and message in str(err.value)


def test_stage_endpoint_list_is_primary_then_fallbacks(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, MINIMAL + "stages:\n  script:\n    endpoint: [b, a]\n"), environ={"TEST_KEY_VAR": "k"}
    )
    assert [ep.name for ep in config.endpoints_for(config.stages.script)] == ["b", "a"]
    assert [ep.name for ep in config.endpoints_for(config.stages.trajectory)] == ["a"]
    override = load_config(
        write(tmp_path, MINIMAL), ["stages.trajectory.endpoint=[a, b]"], environ={"TEST_KEY_VAR": "k"}
    )
    assert [ep.name for ep in override.endpoints_for(override.stages.trajectory)] == ["a", "b"]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("[b, zz]", r"config.yaml:12: stages.script.endpoint: unknown endpoint 'zz' \(defined: a, b\)"),
        ("[]", r"config.yaml:12: stages.script.endpoint: name at least one endpoint"),
        ("[a, a]", r"config.yaml:12: stages.script.endpoint: an endpoint is listed twice"),
        ("[a, 3]", r"config.yaml:12: stages.script.endpoint\[1\]: expected a string, got 3"),
    ],
)
def test_bad_endpoint_lists_name_file_line(tmp_path: Path, value: str, error: str) -> None:
    path = write(tmp_path, MINIMAL + f"stages:\n  script:\n    endpoint: {value}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(path, environ={})


def test_transport_is_aiohttp_and_streaming_can_be_turned_off(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    stream: false\n    size_max_tokens: false\n")
    config = load_config(path, environ={"TEST_KEY_VAR": "k"})
    a, b = config.endpoints["a"], config.endpoints["b"]
    assert (a.transport, a.stream, a.size_max_tokens, a.timeout_s) == ("aiohttp", True, True, 55.0)
    assert (b.stream, b.size_max_tokens) == (False, False)
    path = write(tmp_path, MINIMAL + "    transport: http1\n")  # removed: one line says what is left
    error = r"config.yaml:10: endpoints.b.transport: expected aiohttp, got 'http1'"
    with pytest.raises(ConfigError, match=error):
        load_config(path, environ={"TEST_KEY_VAR": "k"})


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    # 10 levels of 10 aliases each: 10^10 values once expanded
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = write(tmp_path, MINIMAL + "bomb:\n" + "".join(f"  {level}\n" for level in levels))
    started = time.process_time()
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert time.process_time() - started < 5  # not minutes: refused after 10 000 values
    assert re.fullmatch(
        rf"{re.escape(str(path))}:\d+: the config holds more than 10000 values once its YAML aliases "
        r"\(\*name\) are expanded; write the values out instead",
        str(err.value),
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "endpoints.a.limits.rpm=-1",
            "endpoints.a.limits.rpm: must be at least 0 and at most 100000000 (0: no limit)",
        ),
        ("endpoints.a.limits.max_concurrency=0", "endpoints.a.limits.max_concurrency: must be at least 1"),
        (
            "stages.script.temperature=5",
            "stages.script.temperature: must be at least 0 and at most 2, got 5.0",
        ),
        ("endpoints.a.timeout_s=0", "endpoints.a.timeout_s: must be above 0 and at most 3600, got 0.0"),
        ("run.n=99999999999999999999999", "run.n: must be at least 1 and at most 1000000000, got 9999999"),
        ("run.max_cost_usd=.nan", "run.max_cost_usd: must be above 0 and at most 1000000000"),
        (
            "run.file_mode=600",
            "run.file_mode: must be a file mode with owner read and write, in octal as 0600",
        ),
        ("run.file_mode=0444", "run.file_mode: must be a file mode with owner read and write"),
    ],
)
def test_every_number_has_a_range_checked_at_load(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, MINIMAL), [override], environ={})
    assert str(err.value).startswith(f"--set {override}: {message}")


def test_an_out_of_range_number_in_the_file_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "stages:\n  trajectory:\n    temperature: 5\n")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}:12: stages.trajectory.temperature: must be"
    ):
        load_config(path, environ={})


def test_cli_options_are_named_by_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match=r"^-n: run.n: must be at least 1 and at most 1000000000, got -5$"):
        load_config(path, environ={}, options=[("-n", "run.n", -5)])
    config = load_config(path, environ={}, options=[("--personas", "personas.path", "yes")])
    assert config.personas.path == "yes"  # a file called "yes", not YAML's true


def test_every_numeric_setting_has_a_range() -> None:
    def numeric_fields(tp: type, prefix: str) -> list[str]:
        found = []
        hints = typing.get_type_hints(tp)
        for f in dataclasses.fields(tp):
            kind = hints[f.name]
            inner = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
            if dataclasses.is_dataclass(inner[0]):
                found += numeric_fields(inner[0], f"{prefix}{f.name}.")
            elif inner[0] in (int, float) and "range" not in f.metadata:
                found.append(prefix + f.name)
        return found

    assert numeric_fields(Config, "") + numeric_fields(Endpoint, "endpoints.X.") == []
