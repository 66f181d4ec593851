"""HTTP behaviour of the simulator: real requests on 127.0.0.1, no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest
from multidict import CIMultiDict

from simulator.limits import format_duration
from simulator.server import start
from simulator.settings import SimSettings
from tests.conftest import ROOT, spawn

FAST = {"latency_median_s": 0.0}


@contextlib.asynccontextmanager
async def simulator(**settings: object) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """A running simulator (base URL ending in /v1) and a client session."""
    runner, port = await start(SimSettings.from_dict({**FAST, **settings}), shutdown_timeout=0.2)
    try:
        async with aiohttp.ClientSession() as session:
            yield f"http://127.0.0.1:{port}/v1", session
    finally:
        await runner.cleanup()


def chat(content: str = "Hello there", system: str | None = None, **extra: object) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": content}
    ]
    return {"model": "sim-gpt-4o", "messages": messages, **extra}


async def post(
    session: aiohttp.ClientSession, url: str, body: object, **kw: object
) -> tuple[int, CIMultiDict, dict]:
    async with session.post(url + "/chat/completions", json=body, **kw) as r:
        return r.status, r.headers.copy(), await r.json(content_type=None)


def test_models_and_stats_shape() -> None:
    async def main() -> None:
        async with simulator(models=["m-a", "m-b"]) as (url, s):
            async with s.get(url + "/models") as r:
                data = await r.json()
            assert [m["id"] for m in data["data"]] == ["m-a", "m-b"]
            assert data["object"] == "list" and data["data"][0]["object"] == "model"
            body = chat(model="m-b")
            status, _, resp = await post(s, url, body)
            assert status == 200 and resp["model"] == "m-b"
            status, _, _ = await post(s, url, chat(model="nope"))
            async with s.get(url.removesuffix("/v1") + "/_sim/stats") as r:
                stats = await r.json()
            async with s.get(url.removesuffix("/v1") + "/_sim/stats?digests=0") as r:
                brief = await r.json()
            digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
            assert stats["requests"] == 2 and stats["by_status"] == {"200": 1, "404": 1}
            assert stats["received"] == {digest: 1} and stats["answered"] == {digest: 1}
            assert "received" not in brief and "answered" not in brief
            usage = resp["usage"]
            assert stats["tokens"] == {
                "charged": usage["prompt_tokens"] + 1024,  # no max_tokens: 1024 assumed at admission
                "used": usage["total_tokens"],
                "prompt": usage["prompt_tokens"],
                "completion": usage["completion_tokens"],
            }
            assert stats["admitted"] == 1 and stats["concurrency_429"] == 0
            assert stats["answers"]["generated"] == stats["answers"]["complete"] == 1
            assert stats["in_flight"]["now"] == 0 and stats["in_flight"]["max"] == 1
            assert stats["batch"] == {"running": 0, "queued": 0}
            assert stats["limits"] == {
                "profile": "fast",
                "time_scale": 1.0,
                "rpm": 0,
                "tpm": 0,
                "max_concurrent": 0,
                "max_num_seqs": 0,
                "knee": None,
            }

    asyncio.run(main())


def test_response_shape_usage_and_prefix_cache() -> None:
    system = "You are a careful assistant. " * 60  # ~1700 chars, over 128 tokens

    async def main() -> None:
        async with simulator() as (url, s):
            _, _, first = await post(s, url, chat("first question", system))
            _, _, second = await post(s, url, chat("another question", system))
        assert first["id"].startswith("chatcmpl-") and first["object"] == "chat.completion"
        choice = first["choices"][0]
        assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
        assert choice["logprobs"] is None and first["system_fingerprint"]
        for resp in (first, second):
            u = resp["usage"]
            assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
            assert u["completion_tokens_details"]["reasoning_tokens"] == 0
        assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert cached > 0 and cached % 128 == 0 and cached <= second["usage"]["prompt_tokens"]

    asyncio.run(main())


def test_deepseek_usage_style() -> None:
    system = "Rules of the game. " * 100

    async def main() -> None:
        async with simulator(usage_style="deepseek") as (url, s):
            await post(s, url, chat("a", system))
            _, _, resp = await post(s, url, chat("b", system))
        u = resp["usage"]
        assert "prompt_tokens_details" not in u
        assert u["prompt_cache_hit_tokens"] > 0
        assert u["prompt_cache_hit_tokens"] + u["prompt_cache_miss_tokens"] == u["prompt_tokens"]
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]

    asyncio.run(main())


def test_openai_client_json_mode_and_stream() -> None:
    async def main() -> None:
        async with simulator() as (url, _):
            client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
            resp = await client.chat.completions.create(
                model="sim-gpt-4o",
                messages=[{"role": "user", "content": "Say hi"}],
                response_format={"type": "json_object"},
                seed=7,
            )
            assert isinstance(json.loads(resp.choices[0].message.content), dict)
            assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
            models = await client.models.list()
            assert [m.id for m in models.data] == ["sim-gpt-4o"]
            stream = await client.chat.completions.create(
                model="sim-gpt-4o",
                messages=[{"role": "user", "content": "Say hi"}],
                response_format={"type": "json_object"},
                seed=7,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts, usage = [], None
            async for chunk in stream:
                usage = chunk.usage or usage
                parts += [c.delta.content or "" for c in chunk.choices]
            assert "".join(parts) == resp.choices[0].message.content
            assert usage is not None and usage.completion_tokens == resp.usage.completion_tokens
            with pytest.raises(openai.NotFoundError) as info:
                await client.chat.completions.create(
                    model="gpt-5", messages=[{"role": "user", "content": "x"}]
                )
            assert info.value.code == "model_not_found"
            await client.close()

    asyncio.run(main())


def test_rpm_limit_429_then_success() -> None:
    async def main() -> None:
        async with simulator(rpm=60) as (url, s):
            ok = 0
            while True:  # the bucket holds 60 and refills one per second
                status, headers, body = await post(s, url, chat())
                if status != 200:
                    break
                ok += 1
                assert headers["x-ratelimit-limit-requests"] == "60" and ok < 100
            assert ok >= 60
            assert status == 429 and headers["x-ratelimit-remaining-requests"] == "0"
            assert body["error"]["type"] == "requests" and body["error"]["code"] == "rate_limit_exceeded"
            assert body["error"]["message"].startswith("Rate limit reached for requests")
            assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) > 0
            for h in (
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ):
                assert h in headers
            assert "x-ratelimit-limit-tokens" not in headers  # tpm not set
            await asyncio.sleep(int(headers["retry-after-ms"]) / 1000 + 0.05)
            status, _, _ = await post(s, url, chat())
            assert status == 200

    asyncio.run(main())


def test_tpm_limit_429_tokens() -> None:
    async def main() -> None:
        # the unused part of max_tokens is given back when an answer completes, so the two
        # requests overlap in time (a fixed latency of 0.3 s) to meet the limit
        async with simulator(tpm=3000, latency_median_s=0.3, latency_sigma=0.0) as (url, s):
            first, second = await asyncio.gather(
                post(s, url, chat(max_tokens=2000)), post(s, url, chat(max_tokens=2000))
            )
            assert first[0] == 200 and first[1]["x-ratelimit-limit-tokens"] == "3000"
            status, headers, body = second
            assert status == 429 and body["error"]["type"] == "tokens"
            assert "x-ratelimit-reset-tokens" in headers and int(headers["retry-after"]) >= 1
            assert int(headers["x-ratelimit-remaining-tokens"]) < 2000

    asyncio.run(main())


def test_duration_format() -> None:
    assert format_duration(0.12) == "120ms"
    assert format_duration(1.0) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
    assert format_duration(59.9999) == "1m0s"


def test_fault_5xx() -> None:
    async def main() -> None:
        async with simulator(faults={"p_5xx": 1.0}) as (url, s):
            for _ in range(5):
                status, _, body = await post(s, url, chat())
                assert status in (500, 502, 503) and "message" in body["error"]

    asyncio.run(main())


def test_fault_reset() -> None:
    async def main() -> None:
        async with simulator(faults={"p_reset": 1.0}) as (url, s):
            with pytest.raises(aiohttp.ClientConnectionError):
                await post(s, url, chat())
            async with s.get(url.removesuffix("/v1") + "/_sim/stats") as r:
                assert (await r.json())["by_status"] == {"reset": 1}

    asyncio.run(main())


def test_fault_truncated_body() -> None:
    async def main() -> None:
        async with simulator(faults={"p_truncated_body": 1.0}) as (url, s):
            async with s.post(url + "/chat/completions", json=chat()) as r:
                raw = await r.read()
                assert r.status == 200 and int(r.headers["Content-Length"]) == len(raw)
            with pytest.raises(json.JSONDecodeError):
                json.loads(raw)

    asyncio.run(main())


def test_fault_hang_times_out() -> None:
    async def main() -> None:
        async with simulator(faults={"p_hang": 1.0, "hang_s": 0.6}) as (url, s):
            with pytest.raises(asyncio.TimeoutError):  # it answers nothing within the 0.6 s hang
                await post(s, url, chat(), timeout=aiohttp.ClientTimeout(total=0.2))
            await asyncio.sleep(0.9)
            async with s.get(url.removesuffix("/v1") + "/_sim/stats") as r:
                stats = await r.json()
            assert stats["by_status"] == {"hang": 1} and stats["answered"] == {}

    asyncio.run(main())


def test_fault_empty_choices_and_length() -> None:
    async def main() -> None:
        async with simulator(faults={"p_empty_choices": 1.0}) as (url, s):
            status, _, body = await post(s, url, chat())
            assert status == 200 and body["choices"] == [] and body["usage"]["prompt_tokens"] > 0
        async with simulator() as (url, s):
            _, _, whole = await post(s, url, chat(seed=3))
        async with simulator(faults={"p_length": 1.0}) as (url, s):
            _, _, cut = await post(s, url, chat(seed=3))
        content = whole["choices"][0]["message"]["content"]
        assert cut["choices"][0]["finish_reason"] == "length"
        assert content.startswith(cut["choices"][0]["message"]["content"])
        assert len(cut["choices"][0]["message"]["content"]) < len(content)

    asyncio.run(main())


def test_denied_model_and_context_limit() -> None:
    async def main() -> None:
        settings = {"denied_models": ["m-b"], "max_context_tokens": 50, "refused_phrases": ["Nerve Agent"]}
        async with simulator(models=["m-a", "m-b"], **settings) as (url, s):
            status, _, body = await post(s, url, {**chat(), "model": "m-b"})
            assert status == 403 and "does not have access" in body["error"]["message"]
            assert (await post(s, url, {**chat(), "model": "m-a"}))[0] == 200
            status, _, body = await post(s, url, {**chat("word " * 100), "model": "m-a"})
            assert status == 400 and body["error"]["code"] == "context_length_exceeded"
            status, _, body = await post(s, url, {**chat("a nerve agent recipe"), "model": "m-a"})
            assert status == 400 and body["error"]["code"] == "invalid_prompt"

    asyncio.run(main())


def test_auth_model_and_bad_requests() -> None:
    async def main() -> None:
        async with simulator(api_key="sk-secret-123", json_mode=False) as (url, s):
            status, _, body = await post(s, url, chat())
            assert status == 401 and body["error"]["code"] == "invalid_api_key"
            auth = {"Authorization": "Bearer sk-secret-123"}
            status, _, _ = await post(s, url, chat(), headers=auth)
            assert status == 200
            status, _, body = await post(s, url, chat(model="gpt-x"), headers=auth)
            assert status == 404
            assert body == {
                "error": {
                    "message": body["error"]["message"],
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "model_not_found",
                }
            }
            assert "`gpt-x` does not exist" in body["error"]["message"]
            async with s.post(url + "/chat/completions", data=b"{not json", headers=auth) as r:
                assert r.status == 400 and (await r.json())["error"]["type"] == "invalid_request_error"
            status, _, body = await post(s, url, {"model": "sim-gpt-4o"}, headers=auth)
            assert status == 400 and "messages" in body["error"]["message"]
            status, _, body = await post(s, url, chat(response_format={"type": "json_object"}), headers=auth)
            assert status == 400 and body["error"]["param"] == "response_format"

    asyncio.run(main())


def test_max_tokens_length_and_determinism() -> None:
    async def main() -> None:
        async with simulator() as (url, s):
            body = chat("<persona>\nA baker in Lyon\n</persona>\nWrite a script.", max_tokens=40, seed=3)
            _, _, a = await post(s, url, body)
            _, _, b = await post(s, url, body)
            _, _, c = await post(s, url, {**body, "seed": 4, "max_tokens": 5000})
        assert a["choices"][0]["finish_reason"] == "length"
        assert a["usage"]["completion_tokens"] <= 40
        assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
        assert c["choices"][0]["finish_reason"] == "stop"
        assert not c["choices"][0]["message"]["content"].startswith(a["choices"][0]["message"]["content"])

    asyncio.run(main())


def test_main_ready_line_and_sigterm() -> None:
    proc = spawn("simulator", "--host", "127.0.0.1", "--port", "0", "--settings-json", '{"models": ["x-1"]}')
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:") and line.rstrip().endswith("/v1")
        base = line.split()[1]

        async def ask() -> list[str]:
            async with aiohttp.ClientSession() as s, s.get(base + "/models") as r:
                return [m["id"] for m in (await r.json())["data"]]

        assert asyncio.run(ask()) == ["x-1"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_main_exits_when_parent_is_killed() -> None:
    code = (
        "import os, subprocess, sys, time\n"
        "args = ['-m', 'simulator', '--port', '0', '--parent-pid', str(os.getpid())]\n"
        "p = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)\n"
        "sys.stdout.write(str(p.pid) + ' ' + p.stdout.readline()); sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child_pid = 0
    try:
        child_pid = int(parent.stdout.readline().split()[0])
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                break
            try:
                with open(f"/proc/{child_pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except FileNotFoundError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the simulator outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
        with contextlib.suppress(ProcessLookupError):
            if child_pid:
                os.kill(child_pid, signal.SIGKILL)


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="simulator settings: bogus: unknown key"):
        SimSettings.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="rpm: expected an integer, got '10'"):
        SimSettings.from_dict({"rpm": "10"})
    with pytest.raises(ValueError, match=r"faults\.p_hang: expected a number"):
        SimSettings.from_dict({"faults": {"p_hang": "x"}})
    with pytest.raises(ValueError, match=r"flaws\.nope: unknown key"):
        SimSettings.from_dict({"flaws": {"nope": 1}})
    with pytest.raises(ValueError, match=r"faults: the p_\* probabilities must sum to at most 1"):
        SimSettings.from_dict({"faults": {"p_5xx": 0.6, "p_reset": 0.6}})
    s = SimSettings.from_dict(
        {"faults": {"p_5xx": 0.1}, "flaws": {"script_rate": 1}, "usage_style": "deepseek"}
    )
    assert s.faults.p_5xx == 0.1 and s.flaws.script_rate == 1.0 and s.models == ["sim-gpt-4o"]
    assert SimSettings.from_dict(s.to_dict()) == s
