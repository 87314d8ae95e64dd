"""The inbound WebSocket op parser fed bytes: ops, answers, refusals and protocol closes."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from fechatter.close_reasons import CloseReason
from fechatter.realtime.protocol.head import Head
from fechatter.realtime.protocol.ws import (
    PING_PAYLOAD,
    PONG,
    ClientOp,
    Closing,
    OpRefused,
    Reply,
    WsEvent,
    WsProtocol,
    handshake_response,
)

LIMIT = 100


def _client() -> Connection:
    return Connection(ConnectionType.CLIENT)


def _feed(protocol: WsProtocol, data: bytes) -> list[WsEvent]:
    protocol.receive_data(data)
    return list(protocol.events())


def _as_client(data: bytes) -> list[Event]:
    """What a client makes of bytes the server sent."""
    client = _client()
    client.receive_data(data)
    return list(client.events())


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + body


def _refused(event: WsEvent) -> tuple[int, str, str | None]:
    assert isinstance(event, OpRefused)
    (answer,) = _as_client(event.frame())
    assert isinstance(answer, TextMessage)
    frame: dict[str, Any] = json.loads(answer.data)
    assert frame["event"] == "error"
    return event.error.status, frame["data"]["code"], frame["data"].get("op")


def test_ops_are_decoded_and_ping_is_answered_here() -> None:
    client, protocol = _client(), WsProtocol(LIMIT)
    sent = client.send(TextMessage('{"op": "typing", "chat_id": 7}'))
    sent += client.send(TextMessage('{"op": "ping"}'))
    sent += client.send(Ping(b"hi"))
    sent += client.send(Pong(b"alive"))
    typing, pong, ping_answer = _feed(protocol, sent)
    assert typing == ClientOp("typing", {"op": "typing", "chat_id": 7})
    assert pong == Reply(PONG)
    assert isinstance(ping_answer, Reply)
    assert _as_client(ping_answer.data) == [Pong(b"hi")]


def test_fragments_are_reassembled_across_feeds() -> None:
    client, protocol = _client(), WsProtocol(LIMIT)
    first = client.send(TextMessage('{"op": "read", ', message_finished=False))
    rest = client.send(TextMessage('"chat_id": 1, "message_id": 2}', message_finished=True))
    assert _feed(protocol, first) == []
    assert _feed(protocol, rest[:3]) == []  # half a frame header
    assert _feed(protocol, rest[3:]) == [
        ClientOp("read", {"op": "read", "chat_id": 1, "message_id": 2})
    ]


def test_a_message_past_the_limit_is_refused_and_the_next_one_works() -> None:
    client, protocol = _client(), WsProtocol(LIMIT)
    parts = client.send(TextMessage("[" + " " * 60, message_finished=False))
    parts += client.send(TextMessage(" " * 60 + "]", message_finished=True))
    parts += client.send(TextMessage('{"op": "send", "chat_id": 1}'))
    too_large, op = _feed(protocol, parts)
    assert _refused(too_large) == (413, "frame_too_large", None)
    assert op == ClientOp("send", {"op": "send", "chat_id": 1})
    exactly = client.send(TextMessage('{"op": "ping"}' + " " * (LIMIT - 14)))
    assert _feed(protocol, exactly) == [Reply(PONG)]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (BytesMessage(b"\x00\x01"), (400, "unsupported_frame", None)),
        (TextMessage("{nope"), (400, "malformed_json", None)),
        (TextMessage("[1, 2]"), (422, "validation_error", None)),
        (TextMessage('{"chat_id": 1}'), (422, "validation_error", None)),
        (TextMessage('{"op": 5}'), (422, "validation_error", None)),
        (TextMessage('{"op": "dance"}'), (422, "validation_error", "dance")),
        (TextMessage("[" * 2000), (400, "json_too_deep", None)),
    ],
    ids=["binary", "not-json", "not-object", "no-op", "op-not-text", "unknown-op", "deep"],
)
def test_what_is_not_an_op_is_refused_and_the_connection_stays(
    message: Event, expected: tuple[int, str, str | None]
) -> None:
    client, protocol = _client(), WsProtocol(10_000)
    (refused,) = _feed(protocol, client.send(message))
    assert _refused(refused) == expected
    assert _feed(protocol, client.send(TextMessage('{"op":"ping"}'))) == [Reply(PONG)]


@pytest.mark.parametrize(
    ("frame", "reason", "code"),
    [
        (_masked(0x1, b'{"op": "\xff\xfe"}'), CloseReason.INVALID_DATA, 1007),
        (_masked(0x3, b"x"), CloseReason.PROTOCOL_ERROR, 1002),
        (b"\x81\x05hello", CloseReason.PROTOCOL_ERROR, 1002),  # unmasked client frame
    ],
    ids=["invalid-utf8", "reserved-opcode", "unmasked"],
)
def test_a_protocol_violation_closes_with_its_code(
    frame: bytes, reason: CloseReason, code: int
) -> None:
    client, protocol = _client(), WsProtocol(LIMIT)
    ping = client.send(TextMessage('{"op":"ping"}'))
    events = _feed(protocol, ping + frame + ping)
    assert events[0] == Reply(PONG)
    closing = events[1]
    assert isinstance(closing, Closing)
    assert closing.reason is reason
    (close,) = _as_client(closing.data)
    assert isinstance(close, CloseConnection)
    assert close.code == code
    assert events[2:] == []  # nothing after a close, not even what followed it
    assert _feed(protocol, ping) == []
    assert protocol.ping() == b""


def test_a_peer_close_is_echoed_and_eof_ends_quietly() -> None:
    client, protocol = _client(), WsProtocol(LIMIT)
    (closing,) = _feed(protocol, client.send(CloseConnection(1000, "bye")))
    assert isinstance(closing, Closing)
    assert closing.reason is CloseReason.CLOSED_BY_PEER
    assert _as_client(closing.data) == [CloseConnection(1000, "bye")]
    assert protocol.close(CloseReason.GOING_AWAY) == b""  # already answered

    eof = WsProtocol(LIMIT)
    assert _feed(eof, b"") == [Closing(CloseReason.CLOSED_BY_PEER, b"")]
    assert _feed(eof, b"") == []


def test_server_frames_ping_and_close_with_the_reason_code() -> None:
    protocol = WsProtocol(LIMIT)
    assert _as_client(protocol.ping()) == [Ping(PING_PAYLOAD)]
    (close,) = _as_client(protocol.close(CloseReason.SLOW_CONSUMER))
    assert close == CloseConnection(4008, "slow consumer")
    assert protocol.ping() == b""
    assert protocol.close(CloseReason.SLOW_CONSUMER) == b""


def test_handshake_needs_version_13_and_a_key() -> None:
    def head(**headers: str) -> Head:
        return Head("GET", "/api/notifications/ws", {}, headers, b"")

    key = "dGhlIHNhbXBsZSBub25jZQ=="
    accept = handshake_response(
        head(**{"sec-websocket-version": "13", "sec-websocket-key": key}), [("Vary", "Origin")]
    )
    assert accept is not None
    assert accept.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in accept  # RFC 6455 §1.3
    assert accept.endswith(b"Vary: Origin\r\n\r\n")
    assert handshake_response(head(**{"sec-websocket-key": key}), []) is None
    assert handshake_response(head(**{"sec-websocket-version": "13"}), []) is None
