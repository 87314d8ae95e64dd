"""Thread replies and mentions through the API and the realtime streams (SPEC §6)."""

from __future__ import annotations

import json
from typing import Any

import trio

from fechatter.app import ServerInfo
from tests.conftest import Api, User, make_chat, make_workspace
from tests.realtime.clients import RawWs, SseClient


async def _post(user: User, chat: int, **body: Any) -> dict[str, Any]:
    r = await user.api.post(f"/api/chats/{chat}/messages", json=body)
    assert r.status_code == 201, r.text
    message: dict[str, Any] = r.json()
    return message


async def _history(user: User, chat: int) -> dict[int, dict[str, Any]]:
    r = await user.api.get(f"/api/chats/{chat}/messages")
    assert r.status_code == 200, r.text
    return {m["id"]: m for m in r.json()["items"]}


async def _chat_row(user: User, chat: int) -> dict[str, Any]:
    r = await user.api.get("/api/chats")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = [c for c in r.json() if c["id"] == chat]
    assert len(rows) == 1
    return rows[0]


async def _group(api: Api, members: int = 2) -> tuple[list[User], int, int]:
    """Users (the first owns everything), their workspace and a Group chat of them all."""
    users = [await api.signup() for _ in range(members + 1)]
    ws = await make_workspace(users[0], *users[1:])
    return users, ws, await make_chat(users[0], ws, "Group", *users[1:])


# -- threads -------------------------------------------------------------------------------
async def test_thread_reply_is_a_message_and_counts_on_its_root(api: Api) -> None:
    (a, b, _c), _ws, chat = await _group(api)
    root = await _post(a, chat, content="root")
    assert (root["thread_id"], root["reply_count"], root["last_reply_at"]) == (None, 0, None)
    reply = await _post(b, chat, content="in the thread", thread_id=root["id"])
    assert (reply["thread_id"], reply["seq"], reply["reply_to"]) == (root["id"], 2, None)
    assert (reply["reply_count"], reply["last_reply_at"]) == (0, None)
    # A quote-reply inside a thread: reply_to and thread_id are independent.
    quote = await _post(a, chat, content="quote", thread_id=root["id"], reply_to=reply["id"])
    assert (quote["thread_id"], quote["reply_to"], quote["seq"]) == (root["id"], reply["id"], 3)
    history = await _history(b, chat)
    assert history[reply["id"]] == reply
    assert history[quote["id"]] == quote
    now = history[root["id"]]
    assert (now["reply_count"], now["last_reply_at"]) == (2, quote["created_at"])
    assert {k: v for k, v in now.items() if k not in ("reply_count", "last_reply_at")} == {
        k: v for k, v in root.items() if k not in ("reply_count", "last_reply_at")
    }


async def test_bad_thread_id_is_422_naming_the_field(api: Api) -> None:
    (a, b, _c), ws, chat = await _group(api)
    other = await make_chat(a, ws, "PrivateChannel", b)
    foreign = await _post(a, other, content="elsewhere")
    root = await _post(a, chat, content="root")
    reply = await _post(a, chat, content="reply", thread_id=root["id"])
    for thread_id in (foreign["id"], reply["id"], 999_999, "1", 0, -3, True, 2**63):
        r = await b.api.post(
            f"/api/chats/{chat}/messages", json={"content": "x", "thread_id": thread_id}
        )
        assert r.status_code == 422, (thread_id, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["field"] == "thread_id", (thread_id, r.text)
    r = await b.api.post(f"/api/chats/{chat}/messages", json={"content": "x", "thread_id": 999})
    # The detail names the field once ("thread_id thread_id must…" before).
    assert r.json()["detail"] == (
        "thread_id must be a message of this chat that is not deleted nor a thread reply"
    )
    # Nothing was stored for the refused sends, and the root's counters did not move.
    history = await _history(a, chat)
    assert [m["seq"] for m in sorted(history.values(), key=lambda m: m["seq"])] == [1, 2]
    assert history[root["id"]]["reply_count"] == 1
    # thread_id: null is a top-level send.
    top = await _post(b, chat, content="top", thread_id=None)
    assert (top["thread_id"], top["seq"]) == (None, 3)


async def test_reply_created_then_root_updated_on_the_streams(server: ServerInfo, api: Api) -> None:
    (a, b, _c), _ws, chat = await _group(api)
    with trio.fail_after(15):
        sse = await SseClient.connect(server.realtime_url, b.api.token)
        await sse.next_of("ready")
        root = await _post(a, chat, content="root")
        created = await sse.next_of("message.created")
        assert created.data == root
        for n in (1, 2):
            reply = await _post(a, chat, content=f"reply {n}", thread_id=root["id"])
            first = await sse.next_of("message.created", "message.updated")
            second = await sse.next_of("message.created", "message.updated")
            assert (first.event, first.data) == ("message.created", reply)
            assert second.event == "message.updated"
            assert {k: second.data[k] for k in ("id", "seq", "reply_count", "last_reply_at")} == {
                "id": root["id"],
                "seq": root["seq"],
                "reply_count": n,
                "last_reply_at": reply["created_at"],
            }
            assert second.data["content"] == "root"
        await sse.aclose()
        # Resumable like any event: from the last reply's id, the root's update follows.
        assert first.id is not None
        again = await SseClient.connect(server.realtime_url, b.api.token, last_event_id=first.id)
        assert (await again.next_event()).event == "ready"
        resumed = await again.next_of("message.created", "message.updated")
        assert (resumed.event, resumed.id, resumed.data) == (
            "message.updated",
            second.id,
            second.data,
        )
        await again.aclose()


async def test_websocket_send_accepts_thread_id(server: ServerInfo, api: Api) -> None:
    (a, _b, _c), _ws, chat = await _group(api)
    root = await _post(a, chat, content="root")
    with trio.fail_after(15):
        ws = await RawWs.connect(server.realtime_url, a.api.token)
        assert (await ws.next_message())["event"] == "ready"

        async def answer(frame: dict[str, Any]) -> dict[str, Any]:
            await ws.send_text(json.dumps({"op": "send", "chat_id": chat, **frame}))
            while True:
                got: dict[str, Any] = await ws.next_message()
                if got["event"] in ("ack", "error"):
                    return got

        ack = await answer({"content": "via ws", "thread_id": root["id"], "client_id": "w"})
        assert ack["event"] == "ack"
        assert ack["data"]["message"]["thread_id"] == root["id"]
        refused = await answer({"content": "x", "thread_id": ack["data"]["message"]["id"]})
        assert (refused["event"], refused["data"]["status"]) == ("error", 422)
        assert refused["data"]["errors"][0]["field"] == "thread_id"
        await ws.aclose()


# -- mentions ------------------------------------------------------------------------------
async def test_mentions_name_only_members(api: Api) -> None:
    (a, b, c), ws, chat = await _group(api)
    outsider = await api.signup()  # in the workspace, not in the chat
    await a.api.post(f"/api/workspaces/{ws}/members", json={"email": outsider.email})
    text = f"hi <@{b.id}> and <@{outsider.id}>, <@{b.id}> again, <@{c.id}>, <@99999999>"
    m = await _post(a, chat, content=text)
    # The content is kept as written; only members become mentions (ascending, distinct).
    assert m["content"] == text
    assert (m["mentions"], m["mentions_channel"]) == (sorted([b.id, c.id]), False)
    plain = await _post(a, chat, content="no one here <@abc> <@0> @everyone")
    assert (plain["mentions"], plain["mentions_channel"]) == ([], False)
    history = await _history(b, chat)
    assert history[m["id"]]["mentions"] == sorted([b.id, c.id])


async def test_channel_mention_sets_the_flag_not_the_ids(api: Api) -> None:
    (a, b, _c), _ws, chat = await _group(api)
    m = await _post(a, chat, content=f"<!channel> look, <@{b.id}>")
    assert (m["mentions"], m["mentions_channel"]) == ([b.id], True)
    only = await _post(a, chat, content="<!channel>")
    assert (only["mentions"], only["mentions_channel"]) == ([], True)


async def test_mention_count_for_the_mentioned_until_read(api: Api) -> None:
    (a, b, c), _ws, chat = await _group(api)
    assert (await _chat_row(b, chat))["mention_count"] == 0
    await _post(a, chat, content=f"<@{b.id}> ping")
    await _post(a, chat, content="nothing")
    last = await _post(a, chat, content="<!channel> all of you")
    row_b = await _chat_row(b, chat)
    assert (row_b["unread_count"], row_b["mention_count"]) == (3, 2)
    row_c = await _chat_row(c, chat)
    assert (row_c["unread_count"], row_c["mention_count"]) == (3, 1)
    row_a = await _chat_row(a, chat)  # the sender's own messages are read, never counted
    assert (row_a["unread_count"], row_a["mention_count"]) == (0, 0)
    single = await b.api.get(f"/api/chats/{chat}")
    assert single.json()["mention_count"] == 2
    r = await b.api.post(f"/api/chats/{chat}/read", json={"message_id": last["id"]})
    assert r.status_code in (200, 204), r.text
    row_b = await _chat_row(b, chat)
    assert (row_b["unread_count"], row_b["mention_count"]) == (0, 0)
    assert (await _chat_row(c, chat))["mention_count"] == 1  # per viewer
    # A thread reply that mentions counts like any message.
    await _post(a, chat, content=f"<@{b.id}> in a thread", thread_id=last["id"])
    assert (await _chat_row(b, chat))["mention_count"] == 1
