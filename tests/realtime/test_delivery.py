"""Delivery over real sockets: every event reaches every stream, in order, once."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import open_websocket_url

from fechatter.app import ServerInfo
from tests.conftest import Api, User, make_chat, make_workspace, tls_context
from tests.realtime.clients import Received, SseClient
from tests.realtime.schema_check import check_ws_text


async def _ws_url(server: ServerInfo, user: User, extra: str = "") -> str:
    base = server.realtime_url.replace("http", "ws", 1)  # https (proxy mode): wss
    return f"{base}/api/notifications/ws?access_token={user.api.token}{extra}"


async def test_sse_ready_then_message_events(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    chat = await make_chat(a, ws, "Single", b)
    with trio.fail_after(10):
        sse_b = await SseClient.connect(server.realtime_url, b.api.token)
        assert sse_b.status == 200
        assert sse_b.headers["content-type"].startswith("text/event-stream")
        ready = await sse_b.next_event()
        assert ready.event == "ready"
        assert ready.data["user_id"] == b.id
        assert ready.id is not None
        sse_a = await SseClient.connect(server.realtime_url, a.api.token)
        await sse_a.next_of("ready")
        r = await a.api.post(
            f"/api/chats/{chat}/messages", json={"content": "hello", "client_id": "c-9"}
        )
        assert r.status_code == 201
        for client in (sse_b, sse_a):  # the sender's own stream included
            got = await client.next_of("message.created")
            assert got.data == r.json()
            assert got.data["client_id"] == "c-9"
            assert got.id is not None
        await sse_a.aclose()
        await sse_b.aclose()


async def test_sse_and_websocket_carry_identical_events(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws_id = await make_workspace(a, b)
    chat = await make_chat(a, ws_id, "Single", b)
    with trio.fail_after(10):
        sse = await SseClient.connect(server.realtime_url, b.api.token)
        await sse.next_of("ready")
        async with open_websocket_url(
            await _ws_url(server, b), tls_context(server.realtime_url)
        ) as ws:
            first = check_ws_text(await ws.get_message())
            assert first["event"] == "ready"
            await a.api.post(f"/api/chats/{chat}/messages", json={"content": "x"})
            await a.api.post(f"/api/chats/{chat}/typing")
            await a.api.put(f"/api/workspaces/{ws_id}", json={"description": "d"})
            from_sse = [await sse.next_of("message.created", "typing") for _ in range(2)]
            from_ws: list[Received] = []
            while len(from_ws) < 2:
                frame = check_ws_text(await ws.get_message())
                if frame["event"] in ("message.created", "typing"):
                    # typing has no id in a cluster (ephemeral, docs/api.md): absent on both
                    from_ws.append(Received(frame.get("id"), frame["event"], frame["data"]))
            assert from_ws == from_sse
        await sse.aclose()


async def test_order_per_chat_under_concurrent_senders(server: ServerInfo, api: Api) -> None:
    users = [await api.signup() for _ in range(5)]
    ws = await make_workspace(users[0], *users[1:])
    chat = await make_chat(users[0], ws, "Group", *users[1:])
    reader = await api.signup()
    await users[0].api.post(f"/api/workspaces/{ws}/members", json={"email": reader.email})
    await users[0].api.post(f"/api/chats/{chat}/members", json={"user_ids": [reader.id]})
    with trio.fail_after(20):
        sse = await SseClient.connect(server.realtime_url, reader.api.token)
        await sse.next_of("ready")

        async def send(user: User) -> None:
            for i in range(20):
                r = await user.api.post(f"/api/chats/{chat}/messages", json={"content": str(i)})
                assert r.status_code == 201

        async with trio.open_nursery() as n:
            for user in users:
                n.start_soon(send, user)
        seqs = [(await sse.next_of("message.created")).data["seq"] for _ in range(100)]
        assert seqs == list(range(1, 101))
        await sse.aclose()


async def test_membership_changes_take_effect_at_once(server: ServerInfo, api: Api) -> None:
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    group = await make_chat(a, ws, "Group", b, c)
    other = await make_chat(a, ws, "Single", c)
    channel = await make_chat(a, ws, "PrivateChannel", b)
    with trio.fail_after(10):
        sse_c = await SseClient.connect(server.realtime_url, c.api.token)
        await sse_c.next_of("ready")
        assert (await a.api.delete(f"/api/chats/{group}/members/{c.id}")).status_code == 204
        removed = await sse_c.next_of("chat.member_removed")
        assert removed.data == {"chat_id": group, "user_id": c.id, "by": a.id}
        await a.api.post(f"/api/chats/{group}/messages", json={"content": "after removal"})
        await a.api.post(f"/api/chats/{other}/messages", json={"content": "still here"})
        nxt = await sse_c.next_of("message.created")
        assert (nxt.data["chat_id"], nxt.data["content"]) == (other, "still here")

        r = await a.api.post(f"/api/chats/{channel}/members", json={"user_ids": [c.id]})
        assert r.status_code == 201
        added = await sse_c.next_of("chat.member_added")
        assert added.data == {"chat_id": channel, "user_ids": [c.id], "by": a.id}
        await a.api.post(f"/api/chats/{channel}/messages", json={"content": "welcome"})
        nxt = await sse_c.next_of("message.created")
        assert (nxt.data["chat_id"], nxt.data["content"]) == (channel, "welcome")
        await sse_c.aclose()


async def test_chat_lifecycle_events(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    with trio.fail_after(10):
        sse_b = await SseClient.connect(server.realtime_url, b.api.token)
        await sse_b.next_of("ready")
        chat = await make_chat(a, ws, "PrivateChannel", b, name="news")
        created = await sse_b.next_of("chat.created")
        assert (created.data["id"], created.data["name"]) == (chat, "news")
        await a.api.put(f"/api/chats/{chat}", json={"name": "news-2"})
        updated = await sse_b.next_of("chat.updated")
        assert updated.data["name"] == "news-2"
        msg = (await a.api.post(f"/api/chats/{chat}/messages", json={"content": "x"})).json()
        await b.api.post(f"/api/chats/{chat}/read", json={"message_id": msg["id"]})
        read = await sse_b.next_of("read")
        assert read.data == {"chat_id": chat, "user_id": b.id, "message_id": msg["id"]}
        await a.api.delete(f"/api/chats/{chat}")
        deleted = await sse_b.next_of("chat.deleted")
        assert deleted.data == {"id": chat}
        await sse_b.aclose()


async def test_rejected_send_pushes_nothing(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    chat = await make_chat(a, ws, "Single", b)
    with trio.fail_after(10):
        sse = await SseClient.connect(server.realtime_url, b.api.token)
        await sse.next_of("ready")
        r = await a.api.post(
            f"/api/chats/{chat}/messages", json={"content": "x", "reply_to": 10**12}
        )
        assert r.status_code == 422
        r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "ok"})
        got = await sse.next_of("message.created")
        assert (got.data["content"], got.data["seq"]) == ("ok", 1)
        await sse.aclose()


async def test_typing_and_presence(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    chat = await make_chat(a, ws, "Single", b)
    with trio.fail_after(10):
        sse_a = await SseClient.connect(server.realtime_url, a.api.token)
        await sse_a.next_of("ready")
        sse_b = await SseClient.connect(server.realtime_url, b.api.token)
        presence = await sse_a.next_of("presence")
        assert presence.data == {"user_id": b.id, "status": "online"}
        r = await a.api.get(f"/api/online-users?chat_id={chat}")
        assert sorted(r.json()["user_ids"]) == sorted([a.id, b.id])
        await b.api.post(f"/api/chats/{chat}/typing")
        typing = await sse_a.next_of("typing")
        assert typing.data == {"chat_id": chat, "user_id": b.id}
        await sse_a.aclose()
        await sse_b.aclose()


@pytest.mark.single_process(
    reason=(
        "the counts are the answering node's own streams; in the cluster modes the HTTP "
        "request goes to node 1 and the streams to node 2"
    )
)
async def test_sse_health_counts_this_process_streams(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    with trio.fail_after(10):
        sse_a = await SseClient.connect(server.realtime_url, a.api.token)
        await sse_a.next_of("ready")
        sse_b = await SseClient.connect(server.realtime_url, b.api.token)
        await sse_b.next_of("ready")
        health = (await a.api.get("/api/sse/health")).json()
        assert (health["connected_users"], health["connections"]) == (2, 2)
        await sse_a.aclose()
        await sse_b.aclose()
