"""The embedded endpoint's latency model and provider profiles, over real HTTP on 127.0.0.1:
time to first token and decode speed (compressed by time_scale, same shape), paced
streaming with exact usage and mid-stream faults, the DeepSeek-like concurrency cap and
keep-alive lines, and the vLLM-like batch (queueing, per-sequence slowdown, never a 429).

Durations are checked against the model as lower bounds (a sleep never ends early) and
loose upper bounds (a loaded machine only adds time), never as performance figures."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from simulator import latency
from simulator.profiles import PROFILES
from simulator.server import start
from simulator.settings import SimSettings
from typedconfig import ConfigError, located

PERSONA = [{"role": "user", "content": "<persona>\nA beekeeper who keeps bees on city roofs.\n</persona>"}]
NO_NOISE = {"latency_sigma": 0.0}
SLACK_S = 1.0  # what a loaded machine may add to a modelled duration


@contextlib.asynccontextmanager
async def endpoint(**settings: Any) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """A running simulator (root URL) and a client session."""
    runner, port = await start(SimSettings.from_dict(settings), shutdown_timeout=0.2)
    try:
        async with aiohttp.ClientSession() as session:
            yield f"http://127.0.0.1:{port}", session
    finally:
        await runner.cleanup()


def body(seed: int = 1, stream: bool = False, **extra: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "model": "sim-gpt-4o",
        "messages": PERSONA,
        "seed": seed,
        "max_tokens": 4096,
        **extra,
    }
    if stream:
        b |= {"stream": True, "stream_options": {"include_usage": True}}
    return b


async def stats(session: aiohttp.ClientSession, root: str) -> dict[str, Any]:
    async with session.get(root + "/_sim/stats?digests=0") as r:
        return await r.json()


async def ask(
    session: aiohttp.ClientSession, root: str, b: dict[str, Any]
) -> tuple[int, dict[str, Any], float]:
    """Status, JSON body and seconds taken of one non-streaming request."""
    started = time.monotonic()
    async with session.post(root + "/v1/chat/completions", json=b) as r:
        raw = await r.read()
        return r.status, orjson.loads(raw), time.monotonic() - started


async def events(
    session: aiohttp.ClientSession, root: str, b: dict[str, Any], timeout: float | None = None
) -> tuple[list[tuple[float, bytes]], str | None]:
    """The non-blank lines of a stream with their arrival times, and how it ended: None
    (cleanly) or the exception's class name."""
    started = time.monotonic()
    lines: list[tuple[float, bytes]] = []
    try:
        async with session.post(
            root + "/v1/chat/completions", json=b, timeout=aiohttp.ClientTimeout(sock_read=timeout)
        ) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            async for line in r.content:
                if line.strip():
                    lines.append((time.monotonic() - started, line.strip()))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return lines, type(exc).__name__
    return lines, None


def chunks(lines: list[tuple[float, bytes]]) -> list[tuple[float, dict[str, Any]]]:
    return [(t, orjson.loads(line[6:])) for t, line in lines if line.startswith(b"data: {")]


def content_of(parsed: list[tuple[float, dict[str, Any]]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for _, c in parsed if c["choices"])


def test_profiles_are_named_and_keys_override_them() -> None:
    s = SimSettings.from_dict({"profile": "gpt-4o-like", "tpm": 30_000_000})
    assert (s.output_tokens_per_s, s.rpm, s.tpm) == (80.0, 5000, 30_000_000)
    assert SimSettings.from_dict(s.to_dict()) == s
    deepseek = SimSettings.from_dict({"profile": "deepseek-like"})
    assert deepseek.max_concurrent > 0 and deepseek.rpm == deepseek.tpm == 0 and deepseek.keepalive_s > 0
    vllm = SimSettings.from_dict({"profile": "vllm-like"})
    assert latency.knee(vllm) == vllm.max_num_seqs > 0 and vllm.batch_half_speed > 0
    assert SimSettings.from_dict({}) == SimSettings.from_dict({"profile": "fast"})
    known = ", ".join(list(PROFILES)[:-1]) + " or " + list(PROFILES)[-1]
    with pytest.raises(ValueError, match=f"profile: expected {known}, got 'gpt-5-like'"):
        SimSettings.from_dict({"profile": "gpt-5-like"})
    with pytest.raises(ValueError, match="time_scale: expected a number, got 'fast'"):
        SimSettings.from_dict({"profile": "vllm-like", "time_scale": "fast"})
    with pytest.raises(ValueError, match="time_scale: must be above 0"):
        SimSettings.from_dict({"time_scale": 0})
    with pytest.raises(ValueError, match="max_num_seqs: must be at least 0"):
        SimSettings.from_dict({"max_num_seqs": -1})


def test_batch_speed_curve_rises_and_flattens() -> None:
    s = SimSettings.from_dict({"profile": "vllm-like"})
    speeds = [latency.decode_speed(s, b) for b in (1, 16, 64, 256)]
    throughput = [b * v for b, v in zip((1, 16, 64, 256), speeds, strict=True)]
    assert speeds == sorted(speeds, reverse=True) and throughput == sorted(throughput)
    assert throughput[-1] < s.output_tokens_per_s * s.batch_half_speed  # the ceiling it flattens to
    assert latency.decode_speed(SimSettings.from_dict({"profile": "gpt-4o-like"}), 500) == 80.0


def test_answer_takes_ttft_plus_decode_compressed_by_time_scale() -> None:
    scale = 0.05
    settings = {
        **NO_NOISE,
        "latency_median_s": 2.0,
        "prefill_tokens_per_s": 100.0,
        "output_tokens_per_s": 40.0,
        "time_scale": scale,
    }

    async def main() -> None:
        async with endpoint(**settings) as (root, s):
            status, answer, took = await ask(s, root, body())
            st = await stats(s, root)
        usage = answer["usage"]
        ttft = (2.0 + usage["prompt_tokens"] / 100.0) * scale
        whole = ttft + usage["completion_tokens"] / 40.0 * scale
        assert status == 200 and usage["completion_tokens"] > 200
        assert whole - 0.01 <= took <= whole + SLACK_S
        assert ttft - 0.01 <= st["answers"]["ttft_s"] <= ttft + SLACK_S
        assert whole - 0.01 <= st["answers"]["latency_s"] <= took
        assert st["tokens"]["charged"] == usage["prompt_tokens"] + 4096
        assert st["tokens"]["used"] == usage["total_tokens"]

    asyncio.run(main())


def test_stream_is_paced_by_decoding_and_ends_with_exact_usage() -> None:
    scale = 0.1
    settings = {**NO_NOISE, "latency_median_s": 3.0, "output_tokens_per_s": 50.0, "time_scale": scale}

    async def main() -> None:
        async with endpoint(**settings) as (root, s):
            lines, ended = await events(s, root, body(stream=True))
            _, whole, _ = await ask(s, root, body())
        assert ended is None and lines[-1][1] == b"data: [DONE]"
        parsed = chunks(lines)
        assert parsed[0][1]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert parsed[0][0] >= 3.0 * scale - 0.01  # the first chunk at the time to first token
        assert content_of(parsed) == whole["choices"][0]["message"]["content"]
        finish = [c for _, c in parsed if c["choices"] and c["choices"][0]["finish_reason"]]
        assert [c["choices"][0]["finish_reason"] for c in finish] == ["stop"]
        assert parsed[-1][1]["choices"] == [] and parsed[-1][1]["usage"] == whole["usage"]
        # coarse events spread over the decoding: one per stream_interval_s (0.4 s) of model time
        decode_s = whole["usage"]["completion_tokens"] / 50.0 * scale
        content_times = [t for t, c in parsed if c["choices"] and c["choices"][0]["delta"].get("content")]
        assert content_times[-1] - parsed[0][0] >= decode_s - 0.4 * scale - 0.01
        assert decode_s / (0.4 * scale) / 2 <= len(content_times) <= decode_s / (0.4 * scale) + 2

    asyncio.run(main())


def test_stream_faults_strike_mid_answer() -> None:
    scale = 0.05
    base = {**NO_NOISE, "latency_median_s": 1.0, "output_tokens_per_s": 40.0, "time_scale": scale}

    async def main() -> None:
        async with endpoint(**base) as (root, s):
            _, whole, _ = await ask(s, root, body())
        full = whole["choices"][0]["message"]["content"]
        outcomes = {}
        for fault, extra in (("hang", {"hang_s": 40.0}), ("reset", {}), ("truncated", {})):
            faults = {f"p_{'truncated_body' if fault == 'truncated' else fault}": 1.0, **extra}
            async with endpoint(**base, faults=faults) as (root, s):
                lines, ended = await events(s, root, body(stream=True), timeout=0.5)
                await asyncio.sleep(0.1)
                st = await stats(s, root)
            parsed = chunks(lines)
            text = content_of(parsed)
            assert 0 < len(text) < len(full) and full.startswith(text), fault
            assert not any(c["choices"] and c["choices"][0]["finish_reason"] for _, c in parsed), fault
            assert b"data: [DONE]" not in [line for _, line in lines], fault
            assert st["by_status"] == {fault: 1} and st["in_flight"]["now"] == 0, fault
            outcomes[fault] = ended
            if fault == "hang":  # the client left after its 0.5 s read timeout of silence
                assert st["hangs"]["given_up"] == 1 and 0.45 <= st["hangs"]["max_silence_s"] <= 0.5 + SLACK_S
        # a stall is silence on an open connection (the client's read timeout ends it); a
        # reset is an error; a truncated stream simply ends early
        assert outcomes["hang"] == "SocketTimeoutError" and outcomes["truncated"] is None
        assert outcomes["reset"] is not None and outcomes["reset"] != "SocketTimeoutError"
        async with (
            endpoint(**base, faults={"p_5xx": 1.0}) as (root, s),
            s.post(root + "/v1/chat/completions", json=body(stream=True)) as r,
        ):
            assert r.status in (500, 502, 503) and "error" in await r.json()

    asyncio.run(main())


def test_a_long_slow_answer_keeps_progressing_and_arrives_whole() -> None:
    # 2000 tokens at 2000/600 tokens/s: a 10-minute answer, at time_scale 0.005 three seconds
    scale = 0.005
    settings = {
        **NO_NOISE,
        "latency_median_s": 1.0,
        "min_completion_tokens": 2000,
        "output_tokens_per_s": 2000 / 600,
        "time_scale": scale,
    }

    async def main() -> None:
        async with endpoint(**settings) as (root, s):
            lines, ended = await events(s, root, body(stream=True))
        parsed = chunks(lines)
        assert ended is None and lines[-1][1] == b"data: [DONE]"
        assert parsed[-1][1]["usage"]["completion_tokens"] == 2000
        assert lines[-1][0] >= 601 * scale - 0.01
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(lines)]
        assert max(gaps) < 60 * scale  # never a minute of model time without a byte
        text = content_of(parsed)
        assert orjson.loads(text) and text.endswith(" \n")  # the answer, then its padding

    asyncio.run(main())


def test_deepseek_like_caps_concurrent_requests_with_429_and_keeps_waiting_requests_alive() -> None:
    scale = 0.05
    settings = {
        "profile": "deepseek-like",
        "max_concurrent": 3,
        "time_scale": scale,
        "keepalive_s": 1.0,
        **NO_NOISE,
    }

    async def main() -> None:
        async with endpoint(**settings) as (root, s):

            async def one(seed: int) -> tuple[int, bytes, dict[str, str]]:
                async with s.post(root + "/v1/chat/completions", json=body(seed)) as r:
                    return r.status, await r.read(), dict(r.headers)

            results = await asyncio.gather(*(one(seed) for seed in range(5)))
            st = await stats(s, root)
            lines, _ = await events(s, root, body(9, stream=True, messages=PERSONA * 400))
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200, 200, 200, 429, 429] and st["concurrency_429"] == 2
        assert st["in_flight"]["max"] == 3
        refused = [(raw, headers) for status, raw, headers in results if status == 429]
        assert all("Rate Limit Reached" in orjson.loads(raw)["error"]["message"] for raw, _ in refused)
        assert not any(k.startswith("x-ratelimit") for _, _, headers in results for k in headers)
        # DeepSeek's keep-alive: blank lines before the JSON body of a non-streaming answer ...
        for status, raw, _ in results:
            if status == 200:
                assert raw.startswith(b"\n") and orjson.loads(raw)["usage"]["prompt_cache_miss_tokens"] >= 0
        # ... and SSE comments before the first chunk of a streaming one (a long prompt: its
        # prefill outlasts the keep-alive period)
        first_data = next(i for i, (_, line) in enumerate(lines) if line.startswith(b"data:"))
        assert first_data >= 1 and all(line == b": keep-alive" for _, line in lines[:first_data])

    asyncio.run(main())


def test_vllm_like_batch_queues_beyond_max_num_seqs_and_slows_as_it_fills() -> None:
    scale = 0.05
    settings = {
        **NO_NOISE,
        "latency_median_s": 0.2,
        "output_tokens_per_s": 100.0,
        "max_num_seqs": 4,
        "batch_half_speed": 2.0,
        "time_scale": scale,
    }

    async def main() -> None:
        async with endpoint(**settings) as (root, s):
            _, lone, alone_s = await ask(s, root, body(seed=1))
            tasks = [asyncio.create_task(ask(s, root, body(seed=1))) for _ in range(8)]
            await asyncio.sleep(0.2 * scale + 0.05)
            during = await stats(s, root)
            results = await asyncio.gather(*tasks)
            st = await stats(s, root)
        assert during["batch"] == {"running": 4, "queued": 4} and during["limits"]["knee"] == 4
        assert all(status == 200 for status, _, _ in results) and "429" not in st["by_status"]
        # a full batch decodes each sequence at 100 / (1 + 4/2) tokens/s against 100 / (1 + 1/2)
        # alone: 2x slower; the second four waited for the first four to finish
        tokens = lone["usage"]["completion_tokens"]
        full_batch_s = (0.2 + tokens / (100 / 3)) * scale
        took = sorted(t for _, _, t in results)
        assert all(t >= full_batch_s - 0.01 for t in took)
        assert alone_s <= (0.2 + tokens / (100 / 1.5)) * scale + SLACK_S
        assert took[-1] >= 2 * full_batch_s - 0.02
        queued = st["answers"]["queued_s"]
        assert queued >= 4 * (full_batch_s - 0.01)  # four waited about a full batch's answer each
        assert st["batch"] == {"running": 0, "queued": 0}

    asyncio.run(main())


@pytest.mark.parametrize("refund", [False, True])
def test_tpm_is_charged_prompt_plus_max_tokens_and_refunded_only_if_configured(refund: bool) -> None:
    # 200k TPM at time_scale 1: the bucket refills ~3.3k tokens/s, far less than the ~15k
    # tokens of max_tokens that the answer does not use
    fast = {"latency_median_s": 0.01, "output_tokens_per_s": 0.0}

    async def main() -> None:
        async with endpoint(profile="gpt-4o-like", tpm=200_000, tpm_refund=refund, **fast) as (root, s):
            async with s.post(root + "/v1/chat/completions", json=body(max_tokens=16_000)) as r:
                answer = await r.json()
                remaining = int(r.headers["x-ratelimit-remaining-tokens"])
            st = await stats(s, root)
        async with endpoint(profile="gpt-4o-like", time_scale=0.01, **fast) as (root, s):
            async with s.post(root + "/v1/chat/completions", json=body()) as r:
                scaled = r.headers.copy()
            scaled_stats = await stats(s, root)
        usage = answer["usage"]
        assert st["tokens"]["charged"] == usage["prompt_tokens"] + 16_000
        assert st["tokens"]["used"] == usage["total_tokens"]
        if refund:  # the headers are written after the refund: the bucket lacks what was used
            assert remaining >= 200_000 - usage["total_tokens"] - 5
        else:  # gpt-4o-like's own reading: the charge at admission stands
            assert remaining <= 200_000 - usage["prompt_tokens"] - 16_000 + 1_000  # ~0.3 s refill
        # under time_scale the limits are announced per real minute: 1 / time_scale times more
        assert scaled["x-ratelimit-limit-requests"] == "500000"
        assert scaled["x-ratelimit-limit-tokens"] == "200000000"
        assert scaled_stats["limits"]["rpm"] == 500_000 and scaled_stats["limits"]["tpm"] == 200_000_000

    asyncio.run(main())


def test_settings_from_config_name_the_line_of_each_key() -> None:
    where = {"": "c.yaml:5", "faults": "c.yaml:7", "faults.p_5xx": "c.yaml:8", "profile": "c.yaml:6"}
    plain = {"profile": "vllm-like", "faults": {"p_5xx": 1.5}}
    with pytest.raises(ConfigError) as err:
        SimSettings.build(located(plain, where, "c.yaml:5"), "endpoints.a.embedded")
    assert (
        str(err.value)
        == "c.yaml:8: endpoints.a.embedded.faults.p_5xx: must be at least 0 and at most 1, got 1.5"
    )
    with pytest.raises(
        ConfigError, match=r"^c.yaml:6: endpoints.a.embedded.profile: expected fast, gpt-4o-like"
    ):
        SimSettings.build(located({"profile": "gpt-5-like"}, where, "c.yaml:5"), "endpoints.a.embedded")
    # a profile's values are the defaults; a nested setting given overrides only its own keys
    settings = SimSettings.build(located({"profile": "vllm-like", "max_num_seqs": 8}, where, "c.yaml:5"))
    assert (settings.max_num_seqs, settings.batch_half_speed) == (8, 128.0)
