"""Parsers with limits on the realtime listener (issue 9, kind 3): ids, tokens, frames.

Each input a client controls is bounded where it enters; what cannot be parsed is answered
(resync, a problem document, an ``error`` frame or a protocol close), never a silent close or
a traceback in the server log.
"""

from __future__ import annotations

import json
import logging
import os
import struct

import pytest
import trio

from fechatter.app import ServerInfo
from tests.conftest import Api, make_pair
from tests.realtime.clients import RawWs, SseClient, exchange, problem_of

HUGE_SEQ = "9" * 5000


def _server_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.direct_listener(
    reason="its 10 kB Last-Event-ID passes nginx's 8 kB header line buffer: nginx answers 400"
)
async def test_oversized_last_event_id_opens_with_resync(
    server: ServerInfo, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    _, b, _ = await make_pair(api)
    with trio.fail_after(10):
        first = await SseClient.connect(server.realtime_url, b.api.token)
        ready = await first.next_event()
        await first.aclose()
        assert ready.id is not None
        epoch = ready.id.split("-")[0]
        for bogus in (f"{epoch}-{HUGE_SEQ}", f"{epoch}-1" + "0" * 40, "x" * 10000):
            sse = await SseClient.connect(server.realtime_url, b.api.token, last_event_id=bogus)
            assert (await sse.next_event()).event == "ready"
            resync = await sse.next_event()
            assert (resync.event, resync.data) == ("resync", {"reason": "unknown_event_id"})
            await sse.aclose()
        # The query parameter, on the WebSocket route.
        ws = await RawWs.connect(
            server.realtime_url, b.api.token, last_event_id=f"{epoch}-{HUGE_SEQ}"
        )
        assert (await ws.next_message())["event"] == "ready"
        resync_frame = await ws.next_message()
        assert resync_frame["event"] == "resync"
        assert resync_frame["data"] == {"reason": "unknown_event_id"}
        await ws.aclose()
    assert _server_errors(caplog) == []


@pytest.mark.direct_listener(
    reason="a 10 kB token passes nginx's 8 kB request-line and header-line buffers: nginx"
    " answers 414 or 400 itself"
)
@pytest.mark.parametrize("where", ["header", "query"])
async def test_oversized_access_token_is_401(server: ServerInfo, where: str) -> None:
    token = "a" * 5000 + "." + "b" * 5000 + ".c"
    auth = f"Authorization: Bearer {token}\r\n" if where == "header" else ""
    query = f"?access_token={token}" if where == "query" else ""
    request = f"GET /api/notifications/events{query} HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
    with trio.fail_after(10):
        status, problem, head = problem_of(await exchange(server.realtime_url, request.encode()))
    assert (status, problem["code"]) == (401, "invalid_token")
    assert b"www-authenticate: bearer" in head


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """One client frame built by hand (wsproto will not send an invalid one)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return header + mask + masked


async def test_malformed_json_frames_get_error_frames_and_the_socket_stays_usable(
    server: ServerInfo, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    a, _, chat = await make_pair(api)
    cases = [
        ("{not json", "malformed_json"),
        ("[" * 30000 + "]" * 30000, "json_too_deep"),
        ('{"op": "send", "chat_id": ' + "9" * 5000 + ', "content": "hi"}', "number_out_of_range"),
        ('{"op": "typing", "chat_id": ' + "1" * 5000 + "}", "number_out_of_range"),
        ("[" * 100000 + "]" * 100000, "frame_too_large"),  # past ws_max_message first
    ]
    with trio.fail_after(20):
        ws = await RawWs.connect(server.realtime_url, a.api.token)
        assert (await ws.next_message())["event"] == "ready"
        for text, code in cases:
            await ws.send_text(text)
            frame = await ws.next_message()
            assert frame["event"] == "error", text[:40]
            assert (frame["data"]["status"], frame["data"]["code"]) == (
                413 if code == "frame_too_large" else 400,
                code,
            )
            if code == "malformed_json":  # a frame, not a request body
                assert frame["data"]["detail"] == "frame is not valid JSON"
            await ws.send_text('{"op": "ping"}')
            assert await ws.next_message() == {"event": "pong"}
        await ws.send_text(json.dumps({"op": "send", "chat_id": chat, "content": "still here"}))
        assert (await ws.next_message())["event"] in ("ack", "message.created")
        await ws.aclose()
    assert _server_errors(caplog) == []


@pytest.mark.one_stream_node(
    reason="reads bad_requests of node 2; behind nginx the WebSocket may be on node 1"
)
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (_masked_frame(0x1, b'{"op": "\xff\xfe"}'), 1007),  # text frame, invalid UTF-8
        (_masked_frame(0x3, b"x"), 1002),  # reserved opcode
        (b"\x81\x05hello", 1002),  # a client frame without a mask
    ],
    ids=["invalid-utf8", "reserved-opcode", "unmasked"],
)
async def test_websocket_protocol_violation_closes_with_its_code(
    server: ServerInfo, api: Api, caplog: pytest.LogCaptureFixture, frame: bytes, code: int
) -> None:
    user = await api.signup()
    with trio.fail_after(10):
        ws = await RawWs.connect(server.realtime_url, user.api.token)
        assert (await ws.next_message())["event"] == "ready"
        await ws.send_raw(frame)
        assert await ws.until_closed() == []
        assert ws.closed is not None
        assert ws.closed.code == code
        await ws.aclose()
    assert server.realtime.bad_requests == 1
    assert _server_errors(caplog) == []
