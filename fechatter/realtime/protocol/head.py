"""The realtime listener's HTTP/1.1 request head, read by feeding bytes (h11); plain responses.

Only the head is ever parsed: after it, a connection becomes an SSE or WebSocket stream of
pre-encoded bytes. ``HeadReader.feed`` takes what the socket gave (``b""`` at end of file) and
answers ``NEED_DATA``, the parsed ``Head``, or a ``HeadError`` whose ``status`` says how to
answer (431 too large, 400 malformed, 0 just close). The head is bounded in size here
(``max_bytes``, whether it arrives whole or in pieces); the caller bounds the time.

Sans-I/O: no socket, no trio, no clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11

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
    raw_query: str = ""  # the query string as sent (the access log redacts it)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def wants_websocket(self) -> bool:
        connection = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "upgrade" in connection and self.headers.get("upgrade", "").lower() == "websocket"


@dataclass(frozen=True, slots=True)
class HeadError:
    """The head cannot be read: answer ``status`` (431 or 400) with ``detail``, or 0: close."""

    status: int
    detail: str


class NeedData(enum.Enum):
    NEED_DATA = "need data"


NEED_DATA = NeedData.NEED_DATA


class HeadReader:
    """Feed it a connection's first bytes until it answers a ``Head`` or a ``HeadError``."""

    __slots__ = ("_conn", "_done", "_fed", "max_bytes")

    def __init__(self, max_bytes: int = MAX_HEAD_BYTES) -> None:
        self.max_bytes = max_bytes
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_bytes)
        self._fed = 0
        self._done = False

    def feed(self, data: bytes) -> Head | HeadError | NeedData:
        """Take the next bytes (``b""``: the peer closed); the head, an error, or NEED_DATA.

        Once it has answered a head or an error, the reader is spent (``RuntimeError``).
        """
        if self._done:
            raise RuntimeError("the head was already read")
        if not data:
            return self._end(HeadError(0, "connection closed before the request head"))
        self._fed += len(data)
        self._conn.receive_data(data)
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            hint = exc.error_status_hint
            detail = "request head too large" if hint == 431 else "malformed request head"
            return self._end(HeadError(hint, detail))
        if event is h11.NEED_DATA:
            return NEED_DATA
        if not isinstance(event, h11.Request):  # pragma: no cover - h11 yields Request first
            return self._end(HeadError(400, "expected a request"))
        trailing, _ = self._conn.trailing_data
        if self._fed - len(trailing) > self.max_bytes:  # h11 only bounds heads in pieces
            return self._end(HeadError(431, "request head too large"))
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        target = urlsplit(event.target.decode("latin-1"))
        query = {k: v[-1] for k, v in parse_qs(target.query, keep_blank_values=True).items()}
        method = event.method.decode("ascii").upper()
        return self._end(
            Head(method, target.path, query, headers, bytes(trailing), raw_query=target.query)
        )

    @property
    def done(self) -> bool:
        """Whether it has answered (a head or an error): spent."""
        return self._done

    def _end(self, answer: Head | HeadError) -> Head | HeadError:
        self._done = True
        return answer


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """``HTTP/1.1 <status> <phrase>`` and ``headers``, ending with the blank line."""
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
