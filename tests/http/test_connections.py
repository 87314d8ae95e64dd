"""Connection hygiene of the API listener (DESIGN "Pitfalls"): closes are honoured, idle
keep-alive connections time out, early answers do not wedge keep-alive connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest
import trio

from fechatter.app import ServerInfo, serve
from fechatter.config import Settings


@pytest.fixture
async def short_keepalive(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> AsyncIterator[tuple[str, int]]:
    shutdown = trio.Event()
    info: ServerInfo = await nursery.start(
        serve, settings_factory(keep_alive_timeout=0.5), shutdown
    )
    url = urlsplit(info.api_url)
    assert url.hostname is not None
    assert url.port is not None
    yield url.hostname, url.port
    shutdown.set()


async def _read_until_eof(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /health HTTP/1.0\r\n\r\n",
        b"GET /no/such/route HTTP/1.0\r\n\r\n",
    ],
)
async def test_server_closes_connection_when_asked(
    short_keepalive: tuple[str, int], request_bytes: bytes
) -> None:
    host, port = short_keepalive
    streams = []
    for _ in range(200):
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(request_bytes)
        streams.append(stream)
    # Each connection must reach EOF well before the keep-alive timeout could close it.
    with trio.fail_after(0.4 * 3):
        for stream in streams:
            reply = await _read_until_eof(stream)
            assert reply.startswith((b"HTTP/1.1 200", b"HTTP/1.1 404", b"HTTP/1.0"))
    for stream in streams:
        await stream.aclose()


async def test_idle_keepalive_connection_times_out(short_keepalive: tuple[str, int]) -> None:
    host, port = short_keepalive
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
    with trio.fail_after(5):
        reply = await _read_until_eof(stream)
    assert reply.startswith(b"HTTP/1.1 200")
    await stream.aclose()


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /health HTTP/1.1\r\nHost: t\r\n"],  # nothing at all; a head never finished
)
async def test_connection_without_a_complete_request_is_closed(
    short_keepalive: tuple[str, int], sent: bytes
) -> None:
    host, port = short_keepalive
    stream = await trio.open_tcp_stream(host, port)
    if sent:
        await stream.send_all(sent)
    with trio.fail_after(5):
        assert await _read_until_eof(stream) == b""
    await stream.aclose()
