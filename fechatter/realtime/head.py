"""The realtime listener's HTTP/1.1 request head: parsing (h11), routing facts, plain responses.

Only the head is ever parsed: after it, a connection becomes an SSE or WebSocket stream of
pre-encoded bytes. Reading the head is bounded in size (h11's ``max_incomplete_event_size``)
and in time (the caller's deadline); anything malformed gets a problem document and a close.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11
import trio

from fechatter.errors import FechatterError
from fechatter.events import dumps

MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Head:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    trailing: bytes  # bytes received after the head (e.g. the first WebSocket frames)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def wants_websocket(self) -> bool:
        connection = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "upgrade" in connection and self.headers.get("upgrade", "").lower() == "websocket"


class HeadError(Exception):
    """The request head could not be read; ``status`` says how to answer (0: just close)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def recv_some(sock: socket.socket, size: int = 65536) -> bytes:
    """Receive from a non-blocking socket, waiting for readability with trio."""
    while True:
        try:
            return sock.recv(size)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


async def read_head(sock: socket.socket) -> Head:
    """Read and parse one request head; raises ``HeadError``."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    fed = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            hint = exc.error_status_hint
            detail = "request head too large" if hint == 431 else "malformed request head"
            raise HeadError(hint, detail) from None
        if event is h11.NEED_DATA:
            try:
                data = await recv_some(sock)
            except OSError:
                raise HeadError(0, "connection lost") from None
            if not data:
                raise HeadError(0, "connection closed before the request head")
            fed += len(data)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            break
        raise HeadError(400, "expected a request")  # pragma: no cover - h11 yields Request first
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = urlsplit(event.target.decode("latin-1"))
    query = {k: v[-1] for k, v in parse_qs(target.query, keep_blank_values=True).items()}
    trailing, _ = conn.trailing_data
    if fed - len(trailing) > MAX_HEAD_BYTES:  # h11 only bounds heads that arrive in pieces
        raise HeadError(431, "request head too large")
    return Head(event.method.decode("ascii").upper(), target.path, query, headers, bytes(trailing))


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def problem_response(error: FechatterError, extra: list[tuple[str, str]] | None = None) -> bytes:
    """A complete problem+json response that ends the connection."""
    body = dumps(error.problem())
    headers = [
        ("Content-Type", "application/problem+json"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        ("Cache-Control", "no-store"),
        *error.headers.items(),
        *(extra or []),
    ]
    return response_head(error.status, headers) + body


async def send_all(sock: socket.socket, data: bytes) -> bool:
    """Write everything; False if the peer is gone. The caller bounds the time."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except OSError:
            return False
        view = view[sent:]
    return True
