"""Bad input on the realtime listener: a clear answer, no crash, nothing leaked."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing

from fechatter.app import ServerInfo
from tests.conftest import Api, make_chat, make_workspace
from tests.realtime.clients import RawWs, SseClient, exchange, problem_of


async def _raw(server: ServerInfo, payload: bytes, *, half_close: bool = False) -> bytes:
    return await exchange(server.realtime_url, payload, half_close=half_close)


def _problem(reply: bytes) -> tuple[int, dict[str, object]]:
    status, problem, _ = problem_of(reply)
    return status, problem


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        pytest.param(
            b"GARBAGE\r\n\r\n",
            400,
            marks=pytest.mark.direct_listener(reason="a garbage head is nginx's to answer"),
        ),
        pytest.param(
            b"GET /api/notifications/events HTTP/1.1\r\nHost: x\r\nX: "
            + b"a" * 20000
            + b"\r\n\r\n",
            431,
            marks=pytest.mark.direct_listener(
                reason="nginx's header buffers refuse it first (its own HTML 400)"
            ),
        ),
        pytest.param(
            b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
            404,
            marks=pytest.mark.direct_listener(
                reason="behind the proxy /nope is routed to the API listener, not this one"
            ),
        ),
        (b"POST /api/notifications/events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET /api/notifications/events HTTP/1.1\r\nHost: x\r\n\r\n", 401),
        (b"GET /api/notifications/events?access_token=forged HTTP/1.1\r\nHost: x\r\n\r\n", 401),
        (
            b"GET /api/notifications/events HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n"
            b"\r\n",
            403,
        ),
    ],
)
async def test_bad_requests_get_problem_documents(
    server: ServerInfo, payload: bytes, status: int
) -> None:
    with trio.fail_after(10):
        reply = await _raw(server, payload)
    got, problem = _problem(reply)
    assert (got, problem["status"]) == (status, status)
    if status == 401:
        assert b"www-authenticate: bearer" in reply.lower()
    await trio.testing.wait_all_tasks_blocked()
    assert server.realtime.active == 0


@pytest.mark.direct_listener(
    reason="a half-closed partial head: TLS has no half-close and nginx holds partial heads"
)
async def test_connection_closed_mid_head_frees_everything(server: ServerInfo) -> None:
    with trio.fail_after(10):
        reply = await _raw(
            server, b"GET /api/notifications/events HTTP/1.1\r\nHost", half_close=True
        )
    assert reply == b""
    await trio.testing.wait_all_tasks_blocked()
    assert server.realtime.active == 0


async def test_websocket_without_upgrade_headers(server: ServerInfo, api: Api) -> None:
    user = await api.signup()
    request = (
        f"GET /api/notifications/ws?access_token={user.api.token} HTTP/1.1\r\nHost: x\r\n\r\n"
    ).encode()
    with trio.fail_after(10):
        status, problem = _problem(await _raw(server, request))
    assert (status, problem["code"]) == (400, "websocket_upgrade_required")


@pytest.mark.single_process(
    reason=(
        "the default allowed origins are the same process's API port; node 1's API is another"
        " origin for node 2's streams (a cluster configures allowed_origins)"
    )
)
@pytest.mark.direct_listener(
    reason="the default allowed origins are the API listener's own origin; behind the proxy"
    " the pages' origin is the proxy's (docs/deploy.md: allowed_origins is configured)"
)
async def test_only_the_default_origins_are_allowed(server: ServerInfo, api: Api) -> None:
    """Issue 9, kind 9: an origin is never derived from the request's own Host header."""
    user = await api.signup()
    api_port = server.api_url.rsplit(":", 1)[1]
    rt_port = server.realtime_url.rsplit(":", 1)[1]
    for host, origin, allowed in [
        (f"evil.example:{rt_port}", f"http://evil.example:{api_port}", False),
        (f"chat.example:{rt_port}", f"http://chat.example:{api_port}", False),
        (f"127.0.0.1:{rt_port}", "http://127.0.0.1:1", False),
        (f"localhost:{rt_port}", f"https://localhost:{api_port}", False),
        (f"localhost:{rt_port}", f"http://localhost:{api_port}", True),
        (f"127.0.0.1:{rt_port}", f"http://127.0.0.1:{api_port}", True),
        (f"[::1]:{rt_port}", f"http://[::1]:{api_port}", True),
    ]:
        request = (
            f"GET /api/notifications/events?access_token={user.api.token} HTTP/1.1\r\n"
            f"Host: {host}\r\nOrigin: {origin}\r\n\r\n"
        ).encode()
        with trio.fail_after(10):
            parts = urlsplit(server.realtime_url)
            assert parts.hostname is not None
            assert parts.port is not None
            stream = await trio.open_tcp_stream(parts.hostname, parts.port)
            await stream.send_all(request)
            reply = await stream.receive_some(4096)
            await stream.aclose()
        assert reply.startswith(b"HTTP/1.1 200" if allowed else b"HTTP/1.1 403"), (origin, reply)
        if not allowed:
            assert b'"code":"origin_not_allowed"' in reply


@pytest.mark.single_process(
    reason=(
        "the default allowed origins are the same process's API port; node 1's API is another"
        " origin for node 2's streams (a cluster configures allowed_origins)"
    )
)
@pytest.mark.direct_listener(
    reason="the default allowed origins are the API listener's own origin; behind the proxy"
    " the pages' origin is the proxy's (docs/deploy.md: allowed_origins is configured)"
)
async def test_cors_for_allowed_origin_and_preflight(server: ServerInfo, api: Api) -> None:
    user = await api.signup()
    origin = server.api_url  # the API listener's own origin is allowed by default
    with trio.fail_after(10):
        sse = await SseClient.connect(server.realtime_url, user.api.token, origin=origin)
        assert sse.status == 200
        assert sse.headers["access-control-allow-origin"] == origin
        await sse.aclose()
        reply = await _raw(
            server,
            (
                "OPTIONS /api/notifications/events HTTP/1.1\r\nHost: x\r\n"
                f"Origin: {origin}\r\nAccess-Control-Request-Method: GET\r\n\r\n"
            ).encode(),
        )
    assert reply.startswith(b"HTTP/1.1 204")
    assert f"access-control-allow-origin: {origin}".encode() in reply.lower()
    assert b"authorization" in reply.lower()


async def test_malformed_websocket_frames_get_error_frames(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws_id = await make_workspace(a, b)
    chat = await make_chat(a, ws_id, "Single", b)
    outsider = await api.signup()
    with trio.fail_after(10):
        ws = await RawWs.connect(server.realtime_url, a.api.token)
        assert (await ws.next_message())["event"] == "ready"

        async def answer(text: str) -> dict[str, object]:
            await ws.send_text(text)
            while True:
                frame: dict[str, object] = await ws.next_message()
                if frame["event"] in ("error", "ack", "pong"):
                    return frame

        cases = [
            ("{not json", "malformed_json"),
            ("[1, 2]", "validation_error"),
            ('{"op": "dance"}', "validation_error"),
            ('{"op": "send", "chat_id": "x", "content": "hi"}', "validation_error"),
            ('{"op": "send", "chat_id": 999999, "content": "hi"}', "chat_not_found"),
            (json.dumps({"op": "send", "chat_id": chat, "content": "   "}), "validation_error"),
            ("x" * 70000, "frame_too_large"),
        ]
        for text, code in cases:
            frame = await answer(text)
            assert frame["event"] == "error", text
            assert isinstance(frame["data"], dict)
            assert frame["data"]["code"] == code, (text, frame)
        # Still alive: ping and a real send work.
        assert (await answer('{"op": "ping"}')) == {"event": "pong"}
        ack = await answer(
            json.dumps({"op": "send", "chat_id": chat, "content": "hi", "client_id": "w-1"})
        )
        assert ack["event"] == "ack"
        assert isinstance(ack["data"], dict)
        assert ack["data"]["client_id"] == "w-1"
        await ws.aclose()

        intruder = await RawWs.connect(server.realtime_url, outsider.api.token)
        await intruder.next_message()
        await intruder.send_text(json.dumps({"op": "send", "chat_id": chat, "content": "x"}))
        frame = await intruder.next_message()
        assert (frame["event"], frame["data"]["status"]) == ("error", 404)
        await intruder.aclose()


async def test_websocket_ops_typing_read_and_send(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws_id = await make_workspace(a, b)
    chat = await make_chat(a, ws_id, "Single", b)
    with trio.fail_after(10):
        sse_b = await SseClient.connect(server.realtime_url, b.api.token)
        await sse_b.next_of("ready")
        ws = await RawWs.connect(server.realtime_url, a.api.token)
        await ws.next_message()
        await ws.send_text(json.dumps({"op": "typing", "chat_id": chat}))
        typing = await sse_b.next_of("typing")
        assert typing.data == {"chat_id": chat, "user_id": a.id}
        await ws.send_text(
            json.dumps({"op": "send", "chat_id": chat, "content": "via ws", "client_id": "k1"})
        )
        # Presence may come in between (a presence flush is not ordered with the send).
        frames = [await ws.next_of("ack", "message.created") for _ in range(2)]
        kinds = {f["event"]: f for f in frames}
        assert set(kinds) == {"ack", "message.created"}  # the sender's own stream gets it too
        message = kinds["ack"]["data"]["message"]
        assert kinds["message.created"]["data"] == message
        assert (await sse_b.next_of("message.created")).data == message
        # A retried send with the same client_id acks the original and emits nothing new.
        await ws.send_text(
            json.dumps({"op": "send", "chat_id": chat, "content": "via ws", "client_id": "k1"})
        )
        again = await ws.next_of("ack", "message.created")
        assert (again["event"], again["data"]["message"]) == ("ack", message)
        sse_a_read = await SseClient.connect(server.realtime_url, a.api.token)
        await sse_a_read.next_of("ready")
        reply = (await b.api.post(f"/api/chats/{chat}/messages", json={"content": "yo"})).json()
        await ws.send_text(json.dumps({"op": "read", "chat_id": chat, "message_id": reply["id"]}))
        read = await sse_a_read.next_of("read")
        assert read.data == {"chat_id": chat, "user_id": a.id, "message_id": reply["id"]}
        await ws.aclose()
        await sse_a_read.aclose()
        await sse_b.aclose()
