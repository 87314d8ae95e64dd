"""A lean load generator on trio: raw sockets speaking just enough HTTP, SSE and WebSocket.

Each stream parses only what the scenarios need: event ids (to resume, and to count
duplicates) and the ``bench#<n>#`` marker that senders put in message content (to time each
delivery). Bytes are scanned, not JSON-decoded, so the generator stays cheaper than the server.
Traffic goes only to the server's own loopback address. Stream clients do not answer
WebSocket pings (the harness sets ``ws_dead_after`` beyond any scenario's length).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass, field

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, TextMessage

MARK = re.compile(rb"bench#(\d+)#")
SSE_ID = re.compile(rb"(?:^|\n)id: ([0-9a-f]+-\d+)\n")
WS_ID = re.compile(rb'\{"id":"([0-9a-f]+-\d+)","event"')


@dataclass
class StreamClient:
    """One SSE or WebSocket stream and what it has seen."""

    transport: str  # "sse" | "ws"
    token: str
    expected: int = 0
    arrivals: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    last_id: str | None = None
    ready: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    tail: bytes = b""
    stream: trio.SocketStream | None = None
    # Events without a bench marker (reactions) are counted by a byte pattern of their name.
    count_pattern: bytes | None = None
    counted: int = 0

    def reset(self) -> None:
        """Fresh ready/closed events before the stream is opened again (resume)."""
        self.ready = trio.Event()
        self.closed = trio.Event()

    def expect(self, count: int) -> None:
        self.expected = count
        self.done = trio.Event()
        if len(self.arrivals) >= count:
            self.done.set()

    def expect_count(self, pattern: bytes, count: int) -> None:
        """Be ``done`` once ``count`` complete events containing ``pattern`` have arrived."""
        self.count_pattern = pattern
        self.expected = count
        self.done = trio.Event()
        if self.counted >= count:
            self.done.set()

    def feed(self, data: bytes, now: float) -> None:
        text = self.tail + data
        # Only complete events count: the tail keeps a partial one for the next chunk.
        cut = text.rfind(b"\n\n") + 2 if self.transport == "sse" else text.rfind(b"}}") + 2
        complete, self.tail = (text[:cut], text[cut:]) if cut >= 2 else (b"", text)
        if not complete:
            return
        for match in MARK.finditer(complete):
            n = int(match.group(1))
            if n in self.arrivals:
                self.duplicates += 1
            else:
                self.arrivals[n] = now
        ids = (SSE_ID if self.transport == "sse" else WS_ID).findall(complete)
        if ids:
            self.last_id = ids[-1].decode()
        if not self.ready.is_set() and b"ready" in complete:
            self.ready.set()
        if self.count_pattern is not None:
            self.counted += complete.count(self.count_pattern)
            if self.counted >= self.expected:
                self.done.set()
        elif self.expected and len(self.arrivals) >= self.expected:
            self.done.set()


def _request(transport: str, host: str, port: int, token: str, last_id: str | None) -> bytes:
    if transport == "sse":
        resume = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
        return (
            f"GET /api/notifications/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\n{resume}\r\n"
        ).encode()
    key = base64.b64encode(os.urandom(16)).decode()
    query = f"access_token={token}" + (f"&last_event_id={last_id}" if last_id else "")
    return (
        f"GET /api/notifications/ws?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def run_stream(client: StreamClient, host: str, port: int, *, resume: bool = False) -> None:
    """Hold one stream open until it is closed (by ``drop``) or the server ends it.

    Call ``client.reset()`` before reopening a stream that was dropped."""
    client.tail = b""
    stream = await trio.open_tcp_stream(host, port)
    client.stream = stream
    try:
        await stream.send_all(
            _request(client.transport, host, port, client.token, client.last_id if resume else None)
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            head += chunk
        _, rest = head.split(b"\r\n\r\n", 1)
        if rest:
            client.feed(rest, time.perf_counter())
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            client.feed(data, time.perf_counter())
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        client.closed.set()
        await stream.aclose()


async def drop(client: StreamClient) -> None:
    """Close a stream from the client side, as a network blip would."""
    if client.stream is not None:
        await client.stream.aclose()
    await client.closed.wait()


class WsSender:
    """A WebSocket connection used to send messages with the ``send`` op and read acks."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.ws = Connection(ConnectionType.CLIENT)
        self.stream: trio.SocketStream | None = None
        self.pending: dict[str, trio.Event] = {}
        self.acked: dict[str, float] = {}

    async def run(
        self, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        stream = await trio.open_tcp_stream(host, port)
        self.stream = stream
        try:
            await stream.send_all(_request("ws", host, port, self.token, None))
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some(65536)
            _, rest = buffer.split(b"\r\n\r\n", 1)
            self.ws.receive_data(rest)
            task_status.started()
            parts: list[str] = []
            while True:
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        parts.append(event.data)
                        if event.message_finished:
                            self._on_frame("".join(parts))
                            parts = []
                    elif isinstance(event, Ping):
                        await stream.send_all(self.ws.send(event.response()))
                data = await stream.receive_some(65536)
                if not data:
                    return
                self.ws.receive_data(data)
        finally:
            await stream.aclose()

    def _on_frame(self, text: str) -> None:
        if not text.startswith('{"event":"ack"') and not text.startswith('{"event":"error"'):
            return
        frame = json.loads(text)
        client_id = frame["data"].get("client_id")
        event = self.pending.pop(client_id, None)
        if event is not None:
            self.acked[client_id] = time.perf_counter()
            event.set()

    async def send(self, chat_id: int, client_id: str, content: str) -> float:
        """Send one message and wait for its ack; returns the ack latency in seconds."""
        assert self.stream is not None
        done = trio.Event()
        self.pending[client_id] = done
        frame = json.dumps(
            {"op": "send", "chat_id": chat_id, "content": content, "client_id": client_id}
        )
        start = time.perf_counter()
        await self.stream.send_all(self.ws.send(TextMessage(data=frame)))
        await done.wait()
        return self.acked[client_id] - start
