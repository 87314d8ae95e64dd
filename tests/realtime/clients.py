"""Stream clients for the tests: a raw-socket SSE reader and a raw WebSocket peer.

The SSE client parses exactly the framing SPEC §4 promises (``id``/``event``/``data`` lines,
``:`` comments) so a framing bug fails a test. Every event or frame either client receives is
validated against the shipped JSON Schemas (``tests/realtime/schema_check.py``).
The WebSocket tests mostly use trio-websocket; ``RawWs`` is for what a well-behaved library
will not do (ignore pings, send garbage).
"""

from __future__ import annotations

import base64
import json
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, TextMessage

from tests.realtime.schema_check import check_event, check_ws_text


@dataclass(frozen=True)
class Received:
    id: str | None
    event: str
    data: Any


async def _open(base_url: str, rcvbuf: int | None) -> trio.abc.Stream:
    """A TCP stream to the listener, optionally with a small receive buffer (a slow reader).

    An ``https`` URL (nginx in front, ``FECHATTER_TEST_BACKEND=proxy``) gets TLS over it,
    trusting the tests' CA; the receive buffer is still the socket's.
    """
    host, port = _hostport(base_url)
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()  # not left to the garbage collector: its ResourceWarning failed the next test
        raise
    stream = trio.SocketStream(sock)
    if not base_url.startswith("https://"):
        return stream
    from tests.deploy.nginx import client_ssl_context

    tls = trio.SSLStream(stream, client_ssl_context(), server_hostname=host, https_compatible=True)
    await tls.do_handshake()
    return tls


def _hostport(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


async def exchange(base_url: str, payload: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes to the listener and read everything until it closes."""
    stream = await _open(base_url, None)
    try:
        await stream.send_all(payload)
        if half_close:
            # TLS has no half-close: a test that needs one is ``direct_listener``.
            assert isinstance(stream, trio.abc.HalfCloseableStream), base_url
            await stream.send_eof()
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
        return data
    finally:
        await stream.aclose()


def problem_of(reply: bytes) -> tuple[int, dict[str, Any], bytes]:
    """A problem+json reply's status, document and head (lower-cased)."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), reply
    return int(head.split()[1]), json.loads(body), head.lower()


class SseClient:
    """A minimal EventSource: one connection, events parsed as they arrive."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.comments: list[str] = []
        self.retry: int | None = None  # the last ``retry:`` field (milliseconds), if any
        self.eof = False

    @classmethod
    async def connect(
        cls,
        base_url: str,
        token: str | None,
        *,
        last_event_id: str | None = None,
        origin: str | None = None,
        rcvbuf: int | None = None,
        path: str = "/api/notifications/events",
        query: dict[str, str] | None = None,
    ) -> SseClient:
        host, port = _hostport(base_url)
        client = cls(await _open(base_url, rcvbuf))
        lines = [
            f"GET {path}{'?' + urlencode(query) if query else ''} HTTP/1.1",
            f"Host: {host}:{port}",
            "Accept: text/event-stream",
        ]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        if origin is not None:
            lines.append(f"Origin: {origin}")
        await client.stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        await client._read_head()
        return client

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def _read_head(self) -> None:
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise ConnectionError("closed before the response head")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    async def next_event(self) -> Received:
        """The next event; comments are recorded in ``comments``. EOFError at the end."""
        while True:
            while b"\n\n" not in self.buffer:
                if not await self._fill():
                    raise EOFError("stream closed")
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(": ")
                assert name not in fields, f"repeated field {name} in {block!r}"
                fields[name] = value
            if "retry" in fields:  # the reconnection time: dispatches no event by itself
                self.retry = int(fields.pop("retry"))
            if not fields:
                continue
            received = Received(fields.get("id"), fields["event"], json.loads(fields["data"]))
            check_event(received.event, received.data, received.id)
            return received

    async def next_of(self, *names: str) -> Received:
        """The next event whose name is in ``names`` (skipping presence, typing, ...)."""
        while True:
            event = await self.next_event()
            if event.event in names:
                return event

    async def read_to_eof(self) -> bytes:
        while await self._fill():
            pass
        return self.buffer

    async def aclose(self) -> None:
        await self.stream.aclose()


class RawWs:
    """A WebSocket client speaking through wsproto by hand."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        self.status = 0
        self.pending: list[Any] = []
        self.closed: CloseConnection | None = None

    @classmethod
    async def connect(
        cls,
        base_url: str,
        token: str | None,
        *,
        last_event_id: str | None = None,
        answer_pings: bool = True,
        rcvbuf: int | None = None,
    ) -> RawWs:
        host, port = _hostport(base_url)
        client = cls(await _open(base_url, rcvbuf))
        client.answer_pings = answer_pings
        key = base64.b64encode(os.urandom(16)).decode()
        query = {"access_token": token or ""}
        if last_event_id is not None:
            query["last_event_id"] = last_event_id
        request = (
            f"GET /api/notifications/ws?{urlencode(query)} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await client.stream.send_all(request.encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = await client.stream.receive_some(65536)
            assert chunk, "closed during the handshake"
            buffer += chunk
        head, rest = buffer.split(b"\r\n\r\n", 1)
        client.status = int(head.split()[1])
        assert client.status == 101, head
        if rest:
            client.ws.receive_data(rest)
        return client

    answer_pings = True

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_message(self) -> Any:
        """The next JSON text message; ``EOFError`` when the connection ends."""
        while True:
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self.pending.append(event.data)
                    if event.message_finished:
                        text = "".join(self.pending)
                        self.pending = []
                        return check_ws_text(text)
                elif isinstance(event, Ping) and self.answer_pings:
                    await self.stream.send_all(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.closed = event
                    raise EOFError(f"closed {event.code} {event.reason}")
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("connection ended without a close frame")
            self.ws.receive_data(bytes(data))

    async def next_of(self, *events: str) -> Any:
        """The next JSON message whose ``event`` is in ``events`` (skipping presence, typing,
        ... that may come in between at any time)."""
        while True:
            message = await self.next_message()
            if message.get("event") in events:
                return message

    async def until_closed(self) -> list[Any]:
        """Every message up to the end of the connection (``closed`` tells how it ended)."""
        frames = []
        while True:
            try:
                frames.append(await self.next_message())
            except EOFError:
                return frames

    async def aclose(self) -> None:
        await self.stream.aclose()
