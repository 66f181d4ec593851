"""Our HTTP/1.1 transport against a real server on loopback that answers in the ways HTTP
allows (and breaks in the ways networks do): connections are kept alive and reused, a
`Connection: close` or a server closing an idle connection is honoured without a failed
request, chunked and close-delimited bodies are read whole, only silence times out, a
connection cut mid-answer is a reset, and https verifies the server against the CA store.
(The fault, 429, refusal and keep-alive-line tests of tests/test_llm.py run on it too.)"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from workers.http import Reply, TransportError
from workers.http1 import HTTP1Endpoint

JSON = b'{"choices": []}'

Answer = Callable[[asyncio.StreamWriter, bytes], Awaitable[None]]


class Server:
    """An HTTP/1.1 server on 127.0.0.1 whose answer to each request is chosen by the test."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://localhost:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(writer, self.requests[-1])
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def fixed(*parts: bytes, pause_s: float = 0.0, close: bool = False) -> Answer:
    """An answer written as `parts`, `pause_s` apart; the connection closed after it if `close`."""

    async def answer(writer: asyncio.StreamWriter, _: bytes) -> None:
        for i, part in enumerate(parts):
            if i and pause_s:
                await asyncio.sleep(pause_s)
            writer.write(part)
            await writer.drain()
        if close:
            writer.close()

    return answer


def ok(body: bytes = JSON, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def post(url: str, count: int = 1, timeout_s: float = 5.0, pause_s: float = 0.0) -> list[Reply]:
    """`count` requests one after the other through one transport."""

    async def go() -> list[Reply]:
        http = HTTP1Endpoint(url, "sk-test", timeout_s, connections=4)
        try:
            replies = []
            for i in range(count):
                replies.append(await http.post_chat(b'{"n": %d}' % i))
                await asyncio.sleep(pause_s)
            return replies
        finally:
            await http.aclose()

    return asyncio.run(go())


def serve_and_post(answer: Answer, **kwargs: float) -> tuple[Server, list[Reply] | TransportError]:
    server = Server(answer)

    async def go() -> list[Reply] | TransportError:
        async with server as url:
            try:
                return await asyncio.to_thread(post, url, **kwargs)
            except TransportError as exc:
                return exc

    return server, asyncio.run(go())


def test_one_connection_carries_every_request_with_the_request_as_sent() -> None:
    server, replies = serve_and_post(fixed(ok(extra=b"X-RateLimit-Remaining-Requests: 7\r\n")), count=5)
    assert server.connections == 1
    assert [r.status for r in replies] == [200] * 5 and replies[0].body == JSON
    assert replies[0].headers["x-ratelimit-remaining-requests"] == "7"  # names read in lower case
    head, body = server.requests[0].split(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer sk-test\r\n" in head and body == b'{"n": 0}'


def test_a_connection_the_server_closes_is_not_reused() -> None:
    server, replies = serve_and_post(fixed(ok(extra=b"Connection: close\r\n"), close=True), count=3)
    assert [r.status for r in replies] == [200] * 3 and server.connections == 3
    # closed while idle, without a word: the next request opens a new one instead of failing
    server, replies = serve_and_post(fixed(ok(), close=True), count=3, pause_s=0.1)
    assert [r.body for r in replies] == [JSON] * 3 and server.connections == 3


def test_chunked_close_delimited_and_informational_answers_are_read_whole() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n\n\n\r\nf\r\n%s\r\n0\r\n\r\n" % JSON
    _, [reply] = serve_and_post(fixed(chunked))
    assert reply.body == b"\n\n" + JSON  # DeepSeek's keep-alive lines, then the JSON
    _, [reply] = serve_and_post(fixed(b"HTTP/1.0 200 OK\r\n\r\n", JSON, pause_s=0.05, close=True))
    assert reply.body == JSON
    _, [reply] = serve_and_post(fixed(b"HTTP/1.1 100 Continue\r\n\r\n", ok(b"{}")))
    assert (reply.status, reply.body) == (200, b"{}")


def test_an_answer_compressed_unasked_is_decoded() -> None:
    gzipped = gzip.compress(JSON)
    _, [reply] = serve_and_post(fixed(ok(gzipped, b"Content-Encoding: gzip\r\n")))
    assert reply.body == JSON
    _, error = serve_and_post(fixed(ok(gzipped[:-9], b"Content-Encoding: gzip\r\n")))
    assert isinstance(error, TransportError) and "unreadable compressed answer" in str(error)


def test_only_silence_times_out() -> None:
    dripping = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(JSON) + 4), b"\n", b"\n", b"\n", b"\n"
    _, [reply] = serve_and_post(fixed(*dripping, JSON, pause_s=0.15), timeout_s=0.3)
    assert reply.body == b"\n\n\n\n" + JSON  # 0.75 s in all, never 0.3 s silent
    _, error = serve_and_post(
        fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{", b"}", pause_s=1.0), timeout_s=0.3
    )
    assert isinstance(error, TransportError) and error.kind == "timeout"


def test_an_answer_cut_short_and_a_refused_connection_are_resets() -> None:
    _, error = serve_and_post(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{", close=True))
    assert isinstance(error, TransportError) and error.kind == "reset"
    assert "connection closed" in str(error)
    with pytest.raises(TransportError) as refused:
        post("http://127.0.0.1:9/v1")  # the discard port: nothing listens
    assert refused.value.kind == "reset" and "\n" not in str(refused.value)


def test_https_verifies_the_server_against_the_ca_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    async def go() -> list[Reply] | TransportError:
        async with Server(fixed(ok()), tls) as url:
            try:
                return await asyncio.to_thread(post, url, 2)
            except TransportError as exc:
                return exc

    untrusted = asyncio.run(go())  # a self-signed certificate the CA store does not know
    assert isinstance(untrusted, TransportError) and "CERTIFICATE_VERIFY_FAILED" in str(untrusted)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trusted = asyncio.run(go())
    assert [r.body for r in trusted] == [JSON, JSON]  # type: ignore[union-attr]
