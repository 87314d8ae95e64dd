"""Reactions and chat roles through the API (SPEC §6), with their events over a real stream.

Reactions: ``PUT``/``DELETE /api/chats/:id/messages/:mid/reactions/:emoji`` (percent-encoded
emoji, canonical forms, idempotency, limits, the shared per-user write limit). Roles:
``PUT /api/chats/:id/members/:user_id`` by the owner, and the admin rules it makes reachable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import pytest
import trio

from fechatter.app import ServerInfo
from tests.conftest import Api, ApiFactory, User, make_chat, make_workspace
from tests.realtime.clients import Received, SseClient

CEILING = 20  # seconds for any one test's I/O
FAMILY = "👨‍👩‍👧‍👦"
REACTION_EVENTS = ("reaction.added", "reaction.removed")


def reaction_url(chat: int, message: int, emoji: str) -> str:
    """The route with ``emoji`` percent-encoded as a browser would (every byte but unreserved)."""
    return f"/api/chats/{chat}/messages/{message}/reactions/{quote(emoji, safe='')}"


async def post_message(user: User, chat: int, content: str = "hello") -> dict[str, Any]:
    r = await user.api.post(f"/api/chats/{chat}/messages", json={"content": content})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def reactions_in_history(user: User, chat: int, message: int) -> list[dict[str, Any]]:
    r = await user.api.get(f"/api/chats/{chat}/messages")
    assert r.status_code == 200, r.text
    (found,) = [m for m in r.json()["items"] if m["id"] == message]
    reactions: list[dict[str, Any]] = found["reactions"]
    return reactions


async def group_of_three(api: Api, kind: str = "Group") -> tuple[User, User, User, int, int]:
    """Owner a, members b and c of a fresh chat of ``kind``; the workspace id and chat id."""
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    return a, b, c, ws, await make_chat(a, ws, kind, b, c)


@asynccontextmanager
async def stream_of(server: ServerInfo, user: User) -> AsyncIterator[SseClient]:
    """An SSE stream of ``user``, past its ``ready``; closed however the test ends."""
    sse = await SseClient.connect(server.realtime_url, user.api.token)
    try:
        await sse.next_of("ready")
        yield sse
    finally:
        await sse.aclose()


# -- reactions -----------------------------------------------------------------------------
async def test_put_and_delete_are_idempotent_and_evented_once(server: ServerInfo, api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, _, chat = await group_of_three(api)
        async with stream_of(server, c) as sse:
            m = await post_message(a, chat)
            url = reaction_url(chat, m["id"], "👍")
            assert url.endswith("/reactions/%F0%9F%91%8D")
            for _ in range(2):
                r = await b.api.put(url)
                assert (r.status_code, r.content) == (204, b"")
            assert await reactions_in_history(c, chat, m["id"]) == [
                {"emoji": "👍", "count": 1, "user_ids": [b.id]}
            ]
            for _ in range(2):
                assert (await b.api.delete(url)).status_code == 204
            assert await reactions_in_history(c, chat, m["id"]) == []
            # Removing a reaction one never made is a no-op too.
            assert (await a.api.delete(reaction_url(chat, m["id"], "🎉"))).status_code == 204
            assert (await a.api.put(reaction_url(chat, m["id"], "🎉"))).status_code == 204
            got = [await sse.next_of(*REACTION_EVENTS) for _ in range(3)]
            base = {"chat_id": chat, "message_id": m["id"]}
            assert [(e.event, e.data) for e in got] == [
                ("reaction.added", {**base, "emoji": "👍", "user_id": b.id}),
                ("reaction.removed", {**base, "emoji": "👍", "user_id": b.id}),
                ("reaction.added", {**base, "emoji": "🎉", "user_id": a.id}),
            ]
            # In commit order with the chat's other events, and with resumable ids.
            assert all(e.id is not None for e in got)


async def test_emoji_forms_name_one_reaction(server: ServerInfo, api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, _, chat = await group_of_three(api)
        m = await post_message(a, chat)
        mid = m["id"]
        put: list[tuple[User, str]] = [
            (a, reaction_url(chat, mid, "❤")),  # unqualified
            (b, reaction_url(chat, mid, "❤️")),  # fully qualified: the same reaction
            (a, f"/api/chats/{chat}/messages/{mid}/reactions/%3A%2B1%3A"),  # :+1:
            (b, f"/api/chats/{chat}/messages/{mid}/reactions/:thumbsup:"),  # not encoded
            (c, reaction_url(chat, mid, "👍")),
            (c, reaction_url(chat, mid, FAMILY)),  # a ZWJ sequence
            (c, reaction_url(chat, mid, "🇫🇷")),  # a flag
            (c, reaction_url(chat, mid, "👍🏽")),  # a skin tone: an emoji of its own
            (c, reaction_url(chat, mid, ":partyparrot:")),  # unknown: a custom emoji
        ]
        for user, url in put:
            r = await user.api.put(url)
            assert r.status_code == 204, (url, r.text)
        reactions = await reactions_in_history(a, chat, mid)
        assert [(x["emoji"], x["count"], x["user_ids"]) for x in reactions] == [
            ("❤️", 2, [a.id, b.id]),
            ("👍", 3, [a.id, b.id, c.id]),
            (FAMILY, 1, [c.id]),
            ("🇫🇷", 1, [c.id]),
            ("👍🏽", 1, [c.id]),
            (":partyparrot:", 1, [c.id]),
        ]
        # Any form of a name removes the caller's reaction of that name.
        assert (await a.api.delete(reaction_url(chat, mid, ":heart:"))).status_code == 204
        assert (await b.api.delete(reaction_url(chat, mid, ":+1:"))).status_code == 204
        reactions = await reactions_in_history(a, chat, mid)
        assert [(x["emoji"], x["user_ids"]) for x in reactions[:2]] == [
            ("❤️", [b.id]),
            ("👍", [a.id, c.id]),
        ]


@pytest.mark.parametrize(
    "segment",
    [
        quote("hello"),
        quote("👍👍"),
        quote("🏽"),  # a bare skin-tone modifier
        quote("🇫"),  # a lone regional indicator
        quote(":Thumbsup:", safe=""),
        quote(":" + "x" * 33 + ":", safe=""),
        "x" * 65,  # over-long, refused before the emoji data is consulted
        quote("👍" * 40),
        pytest.param(
            "%00",
            marks=pytest.mark.direct_listener(reason="nginx refuses %00 in a path itself (400)"),
        ),
        "%C3%28",  # not UTF-8
        "%20",
    ],
)
async def test_not_an_emoji_is_422(api: Api, segment: str) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await group_of_three(api)
        m = await post_message(a, chat)
        for method in ("PUT", "DELETE"):
            url = f"/api/chats/{chat}/messages/{m['id']}/reactions/{segment}"
            r = await b.api.request(method, url)
            assert r.status_code == 422, (method, segment, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in r.json()["errors"]] == ["emoji"]


async def test_message_of_another_chat_and_outsiders(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, ws, chat = await group_of_three(api)
        other = await make_chat(a, ws, "Group", b, c)
        theirs = await post_message(a, other)
        m = await post_message(a, chat)
        for method in ("PUT", "DELETE"):
            for mid in (theirs["id"], 999_999):
                r = await b.api.request(method, reaction_url(chat, mid, "👍"))
                assert (r.status_code, r.json()["code"]) == (404, "message_not_found")
        # A user who may not know the chat learns nothing, the message least of all.
        stranger = await api.signup()
        for mid in (m["id"], 999_999):
            r = await stranger.api.put(reaction_url(chat, mid, "👍"))
            assert (r.status_code, r.json()["code"]) == (404, "chat_not_found")
        r = await stranger.api.put(reaction_url(999_999, m["id"], "👍"))
        assert (r.status_code, r.json()["code"]) == (404, "chat_not_found")
        # A workspace member outside a PublicChannel: join first (as for sends).
        d = await api.signup()
        ws2 = await make_workspace(a, d)
        channel = await make_chat(a, ws2, "PublicChannel")
        post = await post_message(a, channel)
        r = await d.api.put(reaction_url(channel, post["id"], "👍"))
        assert (r.status_code, r.json()["code"]) == (403, "not_a_member")
        assert await reactions_in_history(a, chat, m["id"]) == []
        assert (await api.get("/health")).status_code == 200


@pytest.fixture
async def tight_api(api_with: ApiFactory) -> Api:
    """A server whose write limit is 4 writes per user (no refill to speak of) and whose
    messages take at most 2 distinct emoji."""
    return await api_with(send_burst=4, send_rate=0.01, max_reactions_per_message=2)


@pytest.mark.single_process(
    reason=(
        "exact counts of one process's write limit; in a cluster each node enforces its "
        "share (docs/api.md, "
        "tests/cluster/test_presence.py::test_each_node_enforces_its_share_of_the_per_user_write_limit)"
    )
)
async def test_a_reaction_storm_shares_the_write_limit_with_sends(tight_api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await group_of_three(tight_api)
        m = await post_message(a, chat)
        # Refused names use no token.
        assert (await b.api.put(reaction_url(chat, m["id"], "nope"))).status_code == 422
        await post_message(b, chat, "one send")
        url = reaction_url(chat, m["id"], "👍")
        for method in ("PUT", "DELETE", "PUT"):
            assert (await b.api.request(method, url)).status_code == 204
        r = await b.api.delete(url)
        assert (r.status_code, r.json()["code"]) == (429, "rate_limited")
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) >= 1
        # One limiter: sends are refused now too, and the refused reaction did not land.
        r = await b.api.post(f"/api/chats/{chat}/messages", json={"content": "more"})
        assert r.status_code == 429
        reactions = await reactions_in_history(a, chat, m["id"])
        assert reactions == [{"emoji": "👍", "count": 1, "user_ids": [b.id]}]
        # Another user has a bucket of their own.
        assert (await a.api.put(url)).status_code == 204


async def test_distinct_emoji_per_message_are_limited(tight_api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, _, chat = await group_of_three(tight_api)
        m = await post_message(a, chat)
        assert (await a.api.put(reaction_url(chat, m["id"], "👍"))).status_code == 204
        assert (await b.api.put(reaction_url(chat, m["id"], "🎉"))).status_code == 204
        r = await c.api.put(reaction_url(chat, m["id"], "😀"))
        assert r.status_code == 422
        assert r.json()["code"] == "too_many_reactions"
        assert [e["field"] for e in r.json()["errors"]] == ["emoji"]
        # An emoji already there is not a new one.
        assert (await c.api.put(reaction_url(chat, m["id"], "🎉"))).status_code == 204


# -- roles ---------------------------------------------------------------------------------
def member_url(chat: int, user: User | int) -> str:
    return f"/api/chats/{chat}/members/{user if isinstance(user, int) else user.id}"


async def test_owner_makes_an_admin_who_manages_members(server: ServerInfo, api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, ws, chat = await group_of_three(api, "PrivateChannel")
        d = await api.signup()
        r = await a.api.post(f"/api/workspaces/{ws}/members", json={"email": d.email})
        assert r.status_code == 201
        async with stream_of(server, c) as sse:
            add_d = {"user_ids": [d.id]}
            r = await b.api.post(f"/api/chats/{chat}/members", json=add_d)
            assert (r.status_code, r.json()["code"]) == (403, "not_chat_admin")

            r = await a.api.put(member_url(chat, b), json={"role": "admin"})
            assert r.status_code == 200, r.text
            member = r.json()
            assert (member["user_id"], member["chat_id"], member["role"]) == (b.id, chat, "admin")
            assert member["fullname"]
            assert member["joined_at"]
            # The same role again: 200, and no second event.
            r = await a.api.put(member_url(chat, b), json={"role": "admin"})
            assert (r.status_code, r.json()["role"]) == (200, "admin")
            listed = (await c.api.get(f"/api/chats/{chat}/members")).json()
            roles = {m["user_id"]: m["role"] for m in listed}
            assert roles == {a.id: "owner", b.id: "admin", c.id: "member"}

            # The admin may now add and remove members; roles stay the owner's.
            r = await b.api.post(f"/api/chats/{chat}/members", json=add_d)
            assert r.status_code == 201, r.text
            assert (await b.api.delete(member_url(chat, d))).status_code == 204
            r = await b.api.put(member_url(chat, c), json={"role": "admin"})
            assert (r.status_code, r.json()["code"]) == (403, "forbidden")

            r = await a.api.put(member_url(chat, b), json={"role": "member"})
            assert (r.status_code, r.json()["role"]) == (200, "member")
            r = await b.api.post(f"/api/chats/{chat}/members", json=add_d)
            assert (r.status_code, r.json()["code"]) == (403, "not_chat_admin")

            names = ("chat.member_updated", "chat.member_added", "chat.member_removed")
            got: list[Received] = [await sse.next_of(*names) for _ in range(4)]
            updated = {"chat_id": chat, "user_id": b.id, "by": a.id}
            assert [(e.event, e.data) for e in got] == [
                ("chat.member_updated", {**updated, "role": "admin"}),
                ("chat.member_added", {"chat_id": chat, "user_ids": [d.id], "by": b.id}),
                ("chat.member_removed", {"chat_id": chat, "user_id": d.id, "by": b.id}),
                ("chat.member_updated", {**updated, "role": "member"}),
            ]


async def test_role_errors(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, ws, chat = await group_of_three(api)
        d = await api.signup()
        r = await a.api.post(f"/api/workspaces/{ws}/members", json={"email": d.email})
        assert r.status_code == 201
        for body in ({"role": "owner"}, {"role": "boss"}, {"role": 1}, {}):
            r = await a.api.put(member_url(chat, b), json=body)
            assert r.status_code == 422, body
            assert [e["field"] for e in r.json()["errors"]] == ["role"], body
        r = await a.api.put(member_url(chat, a), json={"role": "member"})
        assert r.status_code == 422
        assert [e["field"] for e in r.json()["errors"]] == ["user_id"]
        for target in (d.id, 999_999):
            r = await a.api.put(member_url(chat, target), json={"role": "admin"})
            assert (r.status_code, r.json()["code"]) == (404, "member_not_found")
        for promote in (False, True):  # a member, then an admin of the owner's making
            if promote:
                assert (await a.api.put(member_url(chat, b), json={"role": "admin"})).is_success
            r = await b.api.put(member_url(chat, c), json={"role": "admin"})
            assert (r.status_code, r.json()["code"]) == (403, "forbidden")
        # Someone who may not see the chat learns nothing, whatever the body.
        for body in ({"role": "admin"}, {"role": "owner"}):
            r = await d.api.put(member_url(chat, b), json=body)
            assert (r.status_code, r.json()["code"]) == (404, "chat_not_found")
        single = await make_chat(a, ws, "Single", d)
        r = await a.api.put(member_url(single, d), json={"role": "admin"})
        assert r.status_code == 422
        assert [e["field"] for e in r.json()["errors"]] == ["role"]
        assert r.json()["detail"] == "role cannot be set in a Single chat: it has no admins"
        r = await a.api.put(member_url(chat, b), content=b"{", headers={"Content-Type": "x"})
        assert r.status_code == 400
