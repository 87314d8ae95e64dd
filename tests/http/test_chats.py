"""Chat routes: the four kinds and their rules, members, join, leave, ownership hand-over."""

from __future__ import annotations

from tests.conftest import Api, make_chat, make_workspace


async def test_single_chat_rules_and_reuse(api: Api) -> None:
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    r = await a.api.post(
        "/api/chats", json={"workspace_id": ws, "type": "Single", "members": [b.id, b.id]}
    )
    assert r.status_code == 201
    chat = r.json()
    assert (chat["type"], chat["name"], chat["members_count"]) == ("Single", None, 2)
    # The same pair, from either side, gets the existing chat back with 200.
    r = await b.api.post(
        "/api/chats", json={"workspace_id": ws, "type": "Single", "members": [a.id]}
    )
    assert (r.status_code, r.json()["id"]) == (200, chat["id"])
    r = await a.api.post(
        "/api/chats", json={"workspace_id": ws, "type": "Single", "members": [b.id, c.id]}
    )
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "members")
    r = await a.api.post(
        "/api/chats", json={"workspace_id": ws, "type": "Single", "members": [b.id], "name": "x"}
    )
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "name")
    r = await a.api.post(f"/api/chats/{chat['id']}/members", json={"user_ids": [c.id]})
    assert r.status_code == 422


async def test_group_needs_three(api: Api) -> None:
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    r = await a.api.post(
        "/api/chats", json={"workspace_id": ws, "type": "Group", "members": [b.id]}
    )
    assert r.status_code == 422
    r = await a.api.post(
        "/api/chats", json={"workspace_id": ws, "type": "Group", "members": [b.id, c.id]}
    )
    assert r.status_code == 201
    assert r.json()["owner_id"] == a.id


async def test_channel_needs_unique_name(api: Api) -> None:
    a = await api.signup()
    ws = await make_workspace(a)
    r = await a.api.post("/api/chats", json={"workspace_id": ws, "type": "PrivateChannel"})
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "name")
    await make_chat(a, ws, "PublicChannel", name="Dev")
    r = await a.api.post(
        "/api/chats", json={"workspace_id": ws, "type": "PrivateChannel", "name": "dev"}
    )
    assert (r.status_code, r.json()["code"]) == (409, "chat_name_taken")


async def test_members_must_belong_to_workspace(api: Api) -> None:
    a, b, outsider = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    r = await a.api.post(
        "/api/chats", json={"workspace_id": ws, "type": "Group", "members": [b.id, outsider.id]}
    )
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "not_workspace_members"
    assert str(outsider.id) in body["errors"][0]["message"]
    # Not a member of the workspace at all: 404.
    r = await outsider.api.post(
        "/api/chats", json={"workspace_id": ws, "type": "Group", "members": [a.id, b.id]}
    )
    assert r.status_code == 404


async def test_private_chat_is_404_for_others_public_is_visible(api: Api) -> None:
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    private = await make_chat(a, ws, "PrivateChannel", b)
    public = await make_chat(a, ws, "PublicChannel")
    assert (await c.api.get(f"/api/chats/{private}")).status_code == 404
    assert (await c.api.get(f"/api/chats/{private}/messages")).status_code == 404
    r = await c.api.post(f"/api/chats/{private}/messages", json={"content": "x"})
    assert r.status_code == 404
    assert (await c.api.post(f"/api/chats/{private}/join")).status_code == 404
    assert (await c.api.get(f"/api/chats/{public}")).status_code == 200
    r = await c.api.post(f"/api/chats/{public}/messages", json={"content": "x"})
    assert (r.status_code, r.json()["code"]) == (403, "not_a_member")
    r = await c.api.post(f"/api/chats/{public}/join")
    assert (r.status_code, r.json()["user_id"], r.json()["role"]) == (200, c.id, "member")
    again = await c.api.post(f"/api/chats/{public}/join")  # joining twice: the same membership
    assert (again.status_code, again.json()) == (200, r.json())
    r = await c.api.post(f"/api/chats/{public}/messages", json={"content": "x"})
    assert r.status_code == 201


async def test_update_and_delete_roles(api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    chat = await make_chat(a, ws, "PrivateChannel", b, name="ops")
    r = await b.api.put(f"/api/chats/{chat}", json={"name": "x"})
    assert (r.status_code, r.json()["code"]) == (403, "not_chat_admin")
    r = await a.api.put(f"/api/chats/{chat}", json={"name": "ops2", "description": "d"})
    assert (r.status_code, r.json()["name"], r.json()["description"]) == (200, "ops2", "d")
    assert (await b.api.delete(f"/api/chats/{chat}")).status_code == 403
    r = await a.api.delete(f"/api/chats/{chat}")
    # No content, so no Content-Type (Quart's default was text/html) and no Content-Length
    # (RFC 9110 §8.6).
    assert (r.status_code, r.content) == (204, b"")
    assert {"content-type", "content-length"}.isdisjoint(r.headers), r.headers
    assert (await a.api.get(f"/api/chats/{chat}")).status_code == 404


async def test_add_members_group_any_member_channel_admin_only(api: Api) -> None:
    a, b, c, d = [await api.signup() for _ in range(4)]
    ws = await make_workspace(a, b, c, d)
    group = await make_chat(a, ws, "Group", b, c)
    r = await b.api.post(f"/api/chats/{group}/members", json={"user_ids": [d.id, d.id]})
    assert r.status_code == 201
    assert [m["user_id"] for m in r.json()] == [d.id]
    chan = await make_chat(a, ws, "PrivateChannel", b)
    r = await b.api.post(f"/api/chats/{chan}/members", json={"user_ids": [c.id]})
    assert r.status_code == 403
    r = await a.api.post(f"/api/chats/{chan}/members", json={"user_ids": [c.id]})
    assert r.status_code == 201
    r = await a.api.get(f"/api/chats/{chan}/members")
    assert sorted(m["user_id"] for m in r.json()) == sorted([a.id, b.id, c.id])


async def test_owner_leaving_hands_over_and_last_leaving_deletes(api: Api) -> None:
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    group = await make_chat(a, ws, "Group", b, c)
    r = await b.api.delete(f"/api/chats/{group}/members/{c.id}")
    assert r.status_code == 403  # a plain member cannot remove others
    assert (await a.api.delete(f"/api/chats/{group}/members/{a.id}")).status_code == 204
    r = await b.api.get(f"/api/chats/{group}")
    assert r.json()["owner_id"] == b.id  # the oldest remaining member
    members = {
        m["user_id"]: m["role"] for m in (await b.api.get(f"/api/chats/{group}/members")).json()
    }
    assert members == {b.id: "owner", c.id: "member"}
    assert (await b.api.delete(f"/api/chats/{group}/members/{b.id}")).status_code == 204
    assert (await c.api.delete(f"/api/chats/{group}/members/{c.id}")).status_code == 204
    assert (await c.api.get(f"/api/chats/{group}")).status_code == 404


async def test_chat_list_order_last_message_unread(api: Api) -> None:
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    first = await make_chat(a, ws, "Group", b, c)
    second = await make_chat(a, ws, "PrivateChannel", b)
    r = await b.api.post(f"/api/chats/{first}/messages", json={"content": "one"})
    await b.api.post(f"/api/chats/{first}/messages", json={"content": "two"})
    chats = (await a.api.get("/api/chats")).json()
    assert [ch["id"] for ch in chats] == [first, second]
    assert chats[0]["last_message"]["content"] == "two"
    assert chats[0]["unread_count"] == 2
    mine = (await b.api.get(f"/api/chats?workspace_id={ws}")).json()
    assert mine[0]["unread_count"] == 0  # your own messages are read
    r = await a.api.post(f"/api/chats/{first}/read", json={"message_id": r.json()["id"]})
    assert r.status_code == 204
    chats = (await a.api.get("/api/chats")).json()
    assert chats[0]["unread_count"] == 1


async def test_single_chat_reopens_after_leaving_the_workspace(api: Api) -> None:
    """Issue 9 kind 8: A and B's direct chat; B leaves the workspace and is added back; either
    of them opening the chat again gets the same chat (200) with both in it, and they talk."""
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    chat = await make_chat(a, ws, "Single", b)
    r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "before"})
    assert r.status_code == 201
    r = await b.api.delete(f"/api/workspaces/{ws}/members/{b.id}")
    assert r.status_code == 204
    assert (await b.api.get(f"/api/chats/{chat}")).status_code == 404
    r = await a.api.post(f"/api/workspaces/{ws}/members", json={"email": b.email})
    assert r.status_code == 201
    for opener, other in ((a, b), (b, a)):
        r = await opener.api.post(
            "/api/chats", json={"workspace_id": ws, "type": "Single", "members": [other.id]}
        )
        assert (r.status_code, r.json()["id"], r.json()["members_count"]) == (200, chat, 2)
    r = await b.api.post(f"/api/chats/{chat}/messages", json={"content": "after"})
    assert r.status_code == 201, r.text
    page = (await a.api.get(f"/api/chats/{chat}/messages")).json()["items"]
    assert [m["content"] for m in page] == ["after", "before"]
