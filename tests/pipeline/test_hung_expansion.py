"""One hung persona-expansion request does not stall the run: with the built-in personas
(expanded through the endpoint) and the first expansion held back for an hour, the run goes
on sending and reaches its target while that request still hangs. Prints the longest gap with
no request sent against how long the request was held (run with -s to see it)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from pipeline.sources import seed_personas
from service.validate import validate_run
from tests.conftest import FAST_SIM, cli, simulator, write_config
from tests.loopback import Loopback, is_expansion, loopback

HANG_S = 3600.0


def test_one_hung_expansion_request_does_not_stall_the_run(tmp_path: Path) -> None:
    n = len(seed_personas()) + 30  # more than the seeds: the run needs expanded personas
    held: list[float] = []

    async def hang_the_first_expansion(server: Loopback, request: web.Request, body: bytes) -> web.Response:
        if is_expansion(body) and not held:
            held.append(time.monotonic())
            await asyncio.sleep(HANG_S)
        return await server.forward(request, body, sim)

    with simulator(FAST_SIM) as sim, loopback(hang_the_first_expansion) as provider:
        endpoint = {"base_url": provider.url, "timeout_s": HANG_S}  # no timeout cuts the hang short
        config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim")
        result = cli("run", "--config", str(config), "-n", str(n), "--out", str(tmp_path / "run"))
        ended = time.monotonic()
        arrivals = list(provider.arrivals)

    assert result.returncode == 0, result.stderr
    assert f"accepted: {n} / {n}" in result.stdout and validate_run(tmp_path / "run").ok
    [hung_at] = held
    after = [t for t in arrivals if t >= hung_at]
    gaps = [b - a for a, b in zip([hung_at, *after], after, strict=False)]
    assert len(after) > n  # requests kept going out while the expansion hung ...
    assert ended - hung_at < HANG_S  # ... and the run ended before it was answered
    print(
        f"\nlongest gap with no request sent: {max(gaps):.2f} s, while one expansion request hung "
        f"for the rest of the run ({after[-1] - hung_at:.1f} s to the last request sent; it was held "
        f"for up to {HANG_S:.0f} s); {len(after)} requests sent meanwhile"
    )
