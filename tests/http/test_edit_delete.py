"""Edit, tombstone delete, one message, ``around``, thread and top-level pages (SPEC §6).

Every rule and error of those routes, their events over a real SSE stream (in commit order,
resumable with ``Last-Event-ID``), and the write rate limit they share with sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from fechatter.app import ServerInfo
from fechatter.storage import open_storage
from tests.conftest import Api, ApiFactory, User, make_chat, make_workspace, upload_file
from tests.realtime.clients import SseClient

CEILING = 20  # seconds for one test's requests


async def _send(user: User, chat: int, content: str, **extra: Any) -> dict[str, Any]:
    r = await user.api.post(f"/api/chats/{chat}/messages", json={"content": content, **extra})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


@asynccontextmanager
async def _stream(server: ServerInfo, user: User, **kw: Any) -> AsyncIterator[SseClient]:
    """An SSE stream of ``user``'s events, closed however the test ends."""
    sse = await SseClient.connect(server.realtime_url, user.api.token, **kw)
    try:
        yield sse
    finally:
        await sse.aclose()


def _url(chat: int, message: int | None = None) -> str:
    base = f"/api/chats/{chat}/messages"
    return base if message is None else f"{base}/{message}"


def _problem(r: httpx.Response) -> tuple[int, str, str | None]:
    """(status, code, first field) of a problem document."""
    doc = r.json()
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    errors = doc.get("errors") or [{}]
    return r.status_code, doc["code"], errors[0].get("field")


async def _set_role(owner: User, chat: int, user: User, role: str) -> None:
    """The owner gives ``user`` ``role`` through ``PUT /api/chats/:id/members/:user_id``."""
    r = await owner.api.put(f"/api/chats/{chat}/members/{user.id}", json={"role": role})
    assert (r.status_code, r.json()["role"]) == (200, role), r.text


async def _add_reaction(database_url: str, chat: int, message: int, user: User) -> None:
    async with open_storage(database_url) as storage:
        await storage.add_reaction(chat, message, user.id, "👍", 50)


async def _group(api: Api) -> tuple[User, User, User, int, int]:
    """Owner ``a`` and members ``b``, ``c`` of a Group; (a, b, c, workspace, chat)."""
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    return a, b, c, ws, await make_chat(a, ws, "Group", b, c)


# -- edit ----------------------------------------------------------------------------------
async def test_sender_edits_and_mentions_are_recomputed(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, _, chat = await _group(api)
        stranger = await api.signup()
        m = await _send(a, chat, "frist")
        r = await a.api.patch(
            _url(chat, m["id"]),
            json={"content": f"  first <@{b.id}> <@{stranger.id}> <@{b.id}> <!channel>  "},
        )
        assert r.status_code == 200, r.text
        edited = r.json()
        assert edited["content"] == f"first <@{b.id}> <@{stranger.id}> <@{b.id}> <!channel>"
        assert (edited["mentions"], edited["mentions_channel"]) == ([b.id], True)
        assert edited["edited_at"] is not None
        assert edited["edited_at"] >= m["created_at"]
        unchanged = ("id", "seq", "sender_id", "created_at", "client_id", "deleted", "thread_id")
        assert {k: edited[k] for k in unchanged} == {k: m[k] for k in unchanged}
        assert (await c.api.get(_url(chat))).json()["items"] == [edited]
        r = await a.api.patch(_url(chat, m["id"]), json={"content": "plain"})
        assert (r.json()["mentions"], r.json()["mentions_channel"]) == ([], False)


async def test_edit_refusals(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, ws, chat = await _group(api)
        outsider, watcher = await api.signup(), await api.signup()
        await make_workspace(outsider)
        r = await a.api.post(f"/api/workspaces/{ws}/members", json={"email": watcher.email})
        assert r.status_code == 201
        public = await make_chat(a, ws, "PublicChannel")
        other = await make_chat(a, ws, "Group", b, watcher)
        m = await _send(a, chat, "mine")
        in_public = await _send(a, public, "announcement")
        elsewhere = await _send(a, other, "elsewhere")
        ok = {"content": "new"}
        assert _problem(await b.api.patch(_url(chat, m["id"]), json=ok))[:2] == (
            403,
            "not_message_sender",
        )
        # Outsiders learn nothing about the message, whether or not it exists.
        for mid in (m["id"], 999_999):
            r = await outsider.api.patch(_url(chat, mid), json=ok)
            assert _problem(r)[:2] == (404, "chat_not_found")
        r = await watcher.api.patch(_url(public, in_public["id"]), json=ok)
        assert _problem(r)[:2] == (403, "not_a_member")
        for mid in (999_999, elsewhere["id"]):
            r = await a.api.patch(_url(chat, mid), json=ok)
            assert _problem(r)[:2] == (404, "message_not_found")
        for body in [{"content": "   "}, {"content": "x" * 4001}, {}, {"content": 5},
                     {"content": "a\x00b"}, {"content": None}]:  # fmt: skip
            r = await a.api.patch(_url(chat, m["id"]), json=body)
            assert _problem(r)[::2] == (422, "content"), body
        r = await a.api.patch(_url(chat, m["id"]), content=b"{", headers={"Content-Type":
                              "application/json"})  # fmt: skip
        assert r.status_code == 400
        r = await api.patch(_url(chat, m["id"]), json=ok)
        assert r.status_code == 401
        # Nothing refused above changed the message.
        r = await a.api.get(_url(chat, m["id"]))
        assert (r.json()["content"], r.json()["edited_at"]) == ("mine", None)


# -- delete --------------------------------------------------------------------------------
async def test_who_may_delete(server: ServerInfo, api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, _, chat = await _group(api)
        outsider = await api.signup()
        by_a = await _send(a, chat, "owner's")
        by_b = [await _send(b, chat, f"b{i}") for i in range(3)]
        by_c = await _send(c, chat, "admin's")
        r = await c.api.delete(_url(chat, by_b[0]["id"]))
        assert _problem(r)[:2] == (403, "forbidden")  # not an admin yet
        await _set_role(a, chat, c, "admin")
        r = await b.api.delete(_url(chat, by_a["id"]))
        assert _problem(r)[:2] == (403, "forbidden")
        r = await b.api.delete(_url(chat, by_c["id"]))
        assert _problem(r)[:2] == (403, "forbidden")
        for mid in (by_b[0]["id"], 999_999):
            r = await outsider.api.delete(_url(chat, mid))
            assert _problem(r)[:2] == (404, "chat_not_found")
        # An admin deletes others' messages but edits only their own.
        r = await c.api.patch(_url(chat, by_b[0]["id"]), json={"content": "no"})
        assert _problem(r)[:2] == (403, "not_message_sender")
        async with _stream(server, b) as sse:
            await sse.next_of("ready")
            assert (await c.api.delete(_url(chat, by_b[0]["id"]))).status_code == 204
            deleted = await sse.next_of("message.deleted")
            assert deleted.data == {"id": by_b[0]["id"], "chat_id": chat, "seq": by_b[0]["seq"]}
        tombstone = (await b.api.get(_url(chat, by_b[0]["id"]))).json()
        assert (tombstone["deleted"], tombstone["content"]) == (True, "")
        assert (await a.api.delete(_url(chat, by_b[1]["id"]))).status_code == 204  # the owner
        assert (await b.api.delete(_url(chat, by_b[2]["id"]))).status_code == 204  # the sender
        assert (await c.api.delete(_url(chat, by_a["id"]))).status_code == 204  # even the owner's
        # Deleting a tombstone again is a 404, not a no-op.
        r = await b.api.delete(_url(chat, by_b[2]["id"]))
        assert _problem(r)[:2] == (404, "message_not_found")
        r = await a.api.delete(_url(chat, 999_999))
        assert _problem(r)[:2] == (404, "message_not_found")
        # Demoted, the same user may delete only their own messages again.
        await _set_role(a, chat, c, "member")
        by_b.append(await _send(b, chat, "b3"))
        r = await c.api.delete(_url(chat, by_b[3]["id"]))
        assert _problem(r)[:2] == (403, "forbidden")
        items = (await a.api.get(_url(chat))).json()["items"]
        assert [(m["content"], m["deleted"]) for m in reversed(items)] == [
            ("", True),
            ("", True),
            ("", True),
            ("", True),
            ("admin's", False),
            ("b3", False),
        ]


async def test_tombstone_shape_and_gapless_seq(api: Api, test_database_url: str) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await _group(api)
        url = await upload_file(a)  # a message's files are the sender's uploads (SPEC §8)
        first = await _send(a, chat, f"hello <@{b.id}>", files=[url], client_id="k")
        second = await _send(b, chat, "second", reply_to=first["id"])
        await _add_reaction(test_database_url, chat, first["id"], b)
        assert [
            x["emoji"] for x in (await b.api.get(_url(chat, first["id"]))).json()["reactions"]
        ] == ["👍"]
        assert (await a.api.delete(_url(chat, first["id"]))).status_code == 204
        tomb = (await b.api.get(_url(chat, first["id"]))).json()
        assert tomb == {
            **first,
            "deleted": True,
            "content": "",
            "files": [],
            "reactions": [],
            "mentions": [],
            "mentions_channel": False,
        }
        third = await _send(b, chat, "third")
        items = (await b.api.get(_url(chat))).json()["items"]
        assert [m["seq"] for m in items] == [3, 2, 1]
        assert items == [third, second, tomb]  # a quote-reply keeps pointing at the tombstone
        r = await a.api.patch(_url(chat, first["id"]), json={"content": "resurrect"})
        assert _problem(r)[:2] == (404, "message_not_found")
        r = await b.api.put(f"{_url(chat, first['id'])}/reactions/%F0%9F%91%8D")
        assert _problem(r)[:2] == (404, "message_not_found")


async def test_client_id_retry_returns_the_message_as_it_is_now(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, _, _, _, chat = await _group(api)
        body = {"content": "draft", "client_id": "retry-1"}
        m = (await a.api.post(_url(chat), json=body)).json()
        edited = (await a.api.patch(_url(chat, m["id"]), json={"content": "final"})).json()
        r = await a.api.post(_url(chat), json=body)
        assert (r.status_code, r.json()) == (200, edited)  # never the old text
        assert (await a.api.delete(_url(chat, m["id"]))).status_code == 204
        r = await a.api.post(_url(chat), json=body)
        assert r.status_code == 200
        assert (r.json()["id"], r.json()["deleted"], r.json()["content"]) == (m["id"], True, "")


# -- reads ---------------------------------------------------------------------------------
async def test_get_one_message(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, ws, chat = await _group(api)
        outsider, watcher = await api.signup(), await api.signup()
        r = await a.api.post(f"/api/workspaces/{ws}/members", json={"email": watcher.email})
        assert r.status_code == 201
        public = await make_chat(a, ws, "PublicChannel")
        m = await _send(a, chat, "one")
        news = await _send(a, public, "news")
        assert (await b.api.get(_url(chat, m["id"]))).json() == m
        # A workspace member reads a public channel without joining, as its history.
        assert (await watcher.api.get(_url(public, news["id"]))).json() == news
        r = await a.api.get(_url(chat, news["id"]))
        assert _problem(r)[:2] == (404, "message_not_found")
        r = await a.api.get(_url(chat, 999_999))
        assert _problem(r)[:2] == (404, "message_not_found")
        for mid in (m["id"], 999_999):
            r = await outsider.api.get(_url(chat, mid))
            assert _problem(r)[:2] == (404, "chat_not_found")
        await a.api.delete(_url(chat, m["id"]))
        tomb = (await b.api.get(_url(chat, m["id"]))).json()
        assert (tomb["id"], tomb["seq"], tomb["deleted"]) == (m["id"], m["seq"], True)


async def test_around(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, ws, chat = await _group(api)
        other = await make_chat(a, ws, "Group", b, c)
        ms = [await _send(a, chat, str(i)) for i in range(1, 11)]
        elsewhere = await _send(a, other, "elsewhere")
        outsider = await api.signup()

        async def around(index: int, limit: int) -> tuple[list[str], bool, bool]:
            r = await b.api.get(_url(chat), params={"around": ms[index]["id"], "limit": limit})
            assert r.status_code == 200, r.text
            doc = r.json()
            assert set(doc) == {"items", "has_more_before", "has_more_after"}
            return (
                [m["content"] for m in doc["items"]],
                doc["has_more_before"],
                doc["has_more_after"],
            )

        assert await around(4, 4) == (["3", "4", "5", "6"], True, True)
        assert await around(0, 4) == (["1", "2"], False, True)
        assert await around(9, 4) == (["8", "9", "10"], True, False)
        assert await around(4, 1) == (["5"], True, True)
        assert await around(4, 200) == ([str(i) for i in range(1, 11)], False, False)
        r = await b.api.get(_url(chat), params={"around": ms[4]["id"]})  # default limit 50
        assert len(r.json()["items"]) == 10
        for mid in (elsewhere["id"], 999_999):
            r = await b.api.get(_url(chat), params={"around": mid})
            assert _problem(r)[:2] == (404, "message_not_found")
        r = await outsider.api.get(_url(chat), params={"around": 999_999})
        assert _problem(r)[:2] == (404, "chat_not_found")
        mid = ms[4]["id"]
        for extra, field in [
            ({"before": mid}, "before"),
            ({"after": mid}, "after"),
            ({"thread_id": mid}, "thread_id"),
            ({"top_level": "true"}, "top_level"),
        ]:
            r = await b.api.get(_url(chat), params={"around": mid, **extra})
            assert _problem(r) == (400, "invalid_query", field), extra
        for bad in ["x", "0", "-1", str(2**63)]:
            r = await b.api.get(_url(chat), params={"around": bad})
            assert _problem(r) == (400, "invalid_query", "around"), bad


async def test_thread_and_top_level_pages(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, ws, chat = await _group(api)
        other = await make_chat(a, ws, "Group", b, c)
        root = await _send(a, chat, "root")
        r1 = await _send(b, chat, "r1", thread_id=root["id"])
        top = await _send(a, chat, "top")
        r2 = await _send(a, chat, "r2", thread_id=root["id"])
        r3 = await _send(b, chat, "r3", thread_id=root["id"])
        elsewhere = await _send(a, other, "elsewhere")
        assert [m["seq"] for m in (root, r1, top, r2, r3)] == [1, 2, 3, 4, 5]

        async def page(**params: Any) -> tuple[list[str], bool]:
            r = await b.api.get(_url(chat), params=params)
            assert r.status_code == 200, r.text
            return [m["content"] for m in r.json()["items"]], r.json()["has_more"]

        tid = root["id"]
        assert await page(thread_id=tid) == (["r3", "r2", "r1"], False)
        assert await page(thread_id=tid, limit=2) == (["r3", "r2"], True)
        assert await page(thread_id=tid, before=r2["id"]) == (["r1"], False)
        assert await page(thread_id=tid, after=r1["id"], limit=1) == (["r2"], True)
        assert await page(top_level="true") == (["top", "root"], False)
        assert await page(top_level="true", limit=1) == (["top"], True)
        assert await page(top_level="false") == (["r3", "r2", "top", "r1", "root"], False)
        for bad in [r1["id"], elsewhere["id"], 999_999]:
            r = await b.api.get(_url(chat), params={"thread_id": bad})
            assert _problem(r) == (422, "validation_error", "thread_id"), bad
        for bad in ["yes", "1", "TRUE"]:
            r = await b.api.get(_url(chat), params={"top_level": bad})
            assert _problem(r) == (400, "invalid_query", "top_level"), bad
        r = await b.api.get(_url(chat), params={"thread_id": tid, "top_level": "true"})
        assert _problem(r) == (400, "invalid_query", "top_level")
        # A deleted root keeps its thread: its replies are still paged.
        assert (await a.api.delete(_url(chat, tid))).status_code == 204
        assert await page(thread_id=tid) == (["r3", "r2", "r1"], False)
        tomb = (await b.api.get(_url(chat, tid))).json()
        assert (tomb["deleted"], tomb["reply_count"]) == (True, 3)


# -- events --------------------------------------------------------------------------------
async def test_edit_and_delete_events_in_order_and_resume(server: ServerInfo, api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await _group(api)
        async with _stream(server, b) as sse:
            await sse.next_of("ready")
            names = ("message.created", "message.updated", "message.deleted")
            m1 = await _send(a, chat, "one")
            edited = (await a.api.patch(_url(chat, m1["id"]), json={"content": "uno"})).json()
            m2 = await _send(a, chat, "two")
            assert (await a.api.delete(_url(chat, m1["id"]))).status_code == 204
            m3 = await _send(a, chat, "three")
            seen = [await sse.next_of(*names) for _ in range(5)]
            assert [(e.event, e.data) for e in seen] == [
                ("message.created", m1),
                ("message.updated", edited),
                ("message.created", m2),
                ("message.deleted", {"id": m1["id"], "chat_id": chat, "seq": m1["seq"]}),
                ("message.created", m3),
            ]
        # Resume after the edit: exactly what followed it, in order, nothing doubled.
        async with _stream(server, b, last_event_id=seen[1].id) as again:
            assert (await again.next_event()).event == "ready"
            replayed = [await again.next_of(*names, "resync") for _ in range(3)]
            assert [(e.id, e.event, e.data) for e in replayed] == [
                (e.id, e.event, e.data) for e in seen[2:]
            ]
            await a.api.patch(_url(chat, m2["id"]), json={"content": "dos"})
            live = await again.next_of(*names)
            assert (live.event, live.data["content"]) == ("message.updated", "dos")


async def test_deleting_a_reply_updates_its_root(server: ServerInfo, api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await _group(api)
        root = await _send(a, chat, "root")
        r1 = await _send(b, chat, "r1", thread_id=root["id"])
        r2 = await _send(b, chat, "r2", thread_id=root["id"])
        async with _stream(server, a) as sse:
            await sse.next_of("ready")
            assert (await b.api.delete(_url(chat, r2["id"]))).status_code == 204
            deleted = await sse.next_of("message.deleted", "message.updated")
            updated = await sse.next_of("message.deleted", "message.updated")
            assert (deleted.event, deleted.data) == (
                "message.deleted",
                {"id": r2["id"], "chat_id": chat, "seq": r2["seq"]},
            )
            assert updated.event == "message.updated"
            assert (updated.data["id"], updated.data["reply_count"]) == (root["id"], 1)
            assert updated.data["last_reply_at"] == r1["created_at"]
            assert (await a.api.get(_url(chat, root["id"]))).json() == updated.data
            # Deleting a top-level message publishes no root update: the next event is the send.
            assert (await a.api.delete(_url(chat, root["id"]))).status_code == 204
            assert (
                await sse.next_of("message.deleted", "message.updated")
            ).event == "message.deleted"
            await _send(a, chat, "after")
            nxt = await sse.next_of("message.deleted", "message.updated", "message.created")
            assert nxt.event == "message.created"


# -- the write rate limit ------------------------------------------------------------------
@pytest.mark.single_process(
    reason=(
        "exact counts of one process's write limit; in a cluster each node enforces its "
        "share (docs/api.md, "
        "tests/cluster/test_presence.py::test_each_node_enforces_its_share_of_the_per_user_write_limit)"
    )
)
async def test_edits_and_deletes_share_the_write_limit(api_with: ApiFactory) -> None:
    with trio.fail_after(CEILING):
        limited_api = await api_with(send_burst=3, send_rate=0.01)
        a, _, _, _, chat = await _group(limited_api)
        m = await _send(a, chat, "one")
        # A refused edit uses no token.
        r = await a.api.patch(_url(chat, m["id"]), json={"content": " "})
        assert r.status_code == 422
        assert (await a.api.patch(_url(chat, m["id"]), json={"content": "1"})).status_code == 200
        assert (await a.api.delete(_url(chat, m["id"]))).status_code == 204
        r = await a.api.post(_url(chat), json={"content": "two"})
        assert _problem(r)[:2] == (429, "rate_limited")
        r = await a.api.delete(_url(chat, m["id"]))
        assert _problem(r)[:2] == (429, "rate_limited")
        r = await a.api.patch(_url(chat, m["id"]), json={"content": "2"})
        assert _problem(r)[:2] == (429, "rate_limited")
