"""The `/metrics` endpoint of a running service, served on the run's event loop (aiohttp).

Serving from the loop that owns the pipeline means the scrape-time collectors read the
queue and limiter state without crossing threads. The format follows the scraper's Accept
header (Prometheus text or OpenMetrics), as prometheus-client's own server does.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen (port 0: a free one) and return the URL of the endpoint."""
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        host, port = runner.addresses[0][:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _scrape(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})
