"""The request-head reader fed bytes: whole, in pieces, too large, malformed, cut short."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fechatter.errors import NotFound
from fechatter.realtime.protocol.head import (
    MAX_HEAD_BYTES,
    NEED_DATA,
    Head,
    HeadError,
    HeadReader,
    problem_response,
    response_head,
)

REQUEST = (
    b"GET /api/notifications/ws?access_token=abc&x=1&x=2&empty= HTTP/1.1\r\n"
    b"Host: example\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
    b"X-Twice: a\r\nx-twice: b\r\n\r\n"
)


def test_a_whole_head_parses_with_its_trailing_bytes() -> None:
    head = HeadReader().feed(REQUEST + b"\x81\x85frame")
    assert isinstance(head, Head)
    assert (head.method, head.path) == ("GET", "/api/notifications/ws")
    assert head.query == {"access_token": "abc", "x": "2", "empty": ""}
    assert head.header("x-twice") == "a, b"
    assert head.header("missing") is None
    assert head.wants_websocket
    assert head.trailing == b"\x81\x85frame"


def test_a_head_fed_one_byte_at_a_time() -> None:
    reader = HeadReader()
    answers = [reader.feed(REQUEST[i : i + 1]) for i in range(len(REQUEST))]
    assert answers[:-1] == [NEED_DATA] * (len(REQUEST) - 1)
    head = answers[-1]
    assert isinstance(head, Head)
    assert head.trailing == b""
    with pytest.raises(RuntimeError):
        reader.feed(b"more")  # spent


def test_a_plain_get_does_not_want_a_websocket() -> None:
    head = HeadReader().feed(b"get /api/notifications/events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(head, Head)
    assert (head.method, head.wants_websocket, head.query) == ("GET", False, {})


@pytest.mark.parametrize("pieces", [1, 64], ids=["whole", "in-pieces"])
def test_a_head_past_the_limit_is_431(pieces: int) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    reader = HeadReader()
    step = -(-len(big) // pieces)
    answer: object = NEED_DATA
    for start in range(0, len(big), step):
        answer = reader.feed(big[start : start + step])
        if answer is not NEED_DATA:
            break
    assert answer == HeadError(431, "request head too large")


@pytest.mark.parametrize(
    "raw",
    [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"\x16\x03\x01\x00"],
    ids=["garbage", "bad-header", "tls-hello"],
)
def test_a_malformed_head_is_400(raw: bytes) -> None:
    reader = HeadReader()
    answer = reader.feed(raw)
    if answer is NEED_DATA:  # a prefix h11 cannot judge yet: the end decides
        answer = reader.feed(b"\r\n\r\n")
    assert answer == HeadError(400, "malformed request head")


def test_a_connection_closed_before_the_head_is_just_closed() -> None:
    reader = HeadReader()
    assert reader.feed(b"GET / HTTP/1.1\r\n") is NEED_DATA
    assert reader.feed(b"") == HeadError(0, "connection closed before the request head")


def test_responses_are_complete_http_heads() -> None:
    assert response_head(204, [("Content-Length", "0")]) == (
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    )
    assert response_head(599, []) == b"HTTP/1.1 599 \r\n\r\n"
    raw = problem_response(NotFound("no such stream route", code="route_not_found"), [("A", "b")])
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"Content-Type: application/problem+json" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert head.endswith(b"\r\nA: b")
    assert b'"code":"route_not_found"' in body


def test_the_protocol_core_imports_no_trio() -> None:
    code = (
        "import sys\n"
        "import fechatter.close_reasons, fechatter.realtime.protocol.head\n"
        "import fechatter.realtime.protocol.outbox, fechatter.realtime.protocol.timers\n"
        "import fechatter.realtime.protocol.ws\n"
        "print(sorted(m for m in sys.modules if m == 'trio' or m.startswith('trio.')))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
