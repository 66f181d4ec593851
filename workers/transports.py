"""The transports an endpoint can be spoken to with, by their name in `endpoints.X.transport`
(`service.config.TRANSPORTS`): each turns a prepared body into a `Reply` (`workers/http.py`)."""

from __future__ import annotations

from workers.http import SDKHTTP, EndpointHTTP, Transport
from workers.http1 import HTTP1Endpoint

BY_NAME: dict[str, type[HTTP1Endpoint | EndpointHTTP | SDKHTTP]] = {
    "http1": HTTP1Endpoint,
    "aiohttp": EndpointHTTP,
    "openai": SDKHTTP,
}


def open_transport(name: str, base_url: str, api_key: str, timeout_s: float, connections: int) -> Transport:
    """The transport called `name`, for one endpoint (its pool opens on the first request)."""
    return BY_NAME[name](base_url, api_key, timeout_s, connections)
