"""Workspace routes: roles, 404 for outsiders, membership cascade into chats."""

from __future__ import annotations

from tests.conftest import Api, make_chat, make_workspace


async def test_create_get_update_delete(api: Api) -> None:
    owner = await api.signup()
    r = await owner.api.post("/api/workspaces", json={"name": "Team", "description": "d"})
    assert r.status_code == 201
    ws = r.json()
    assert (ws["name"], ws["owner_id"], ws["description"]) == ("Team", owner.id, "d")
    r = await owner.api.get(f"/api/workspaces/{ws['id']}")
    assert r.json()["name"] == "Team"
    r = await owner.api.put(f"/api/workspaces/{ws['id']}", json={"name": "Team 2"})
    assert (r.status_code, r.json()["name"]) == (200, "Team 2")
    assert (await owner.api.delete(f"/api/workspaces/{ws['id']}")).status_code == 204
    assert (await owner.api.get(f"/api/workspaces/{ws['id']}")).status_code == 404


async def test_duplicate_name_conflicts(api: Api) -> None:
    owner = await api.signup()
    await make_workspace(owner, name="Same")
    r = await owner.api.post("/api/workspaces", json={"name": "same"})
    assert (r.status_code, r.json()["code"]) == (409, "workspace_name_taken")


async def test_outsider_gets_404_member_gets_403(api: Api) -> None:
    owner, member, outsider = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(owner, member)
    assert (await outsider.api.get(f"/api/workspaces/{ws}")).status_code == 404
    assert (await outsider.api.get(f"/api/workspaces/{ws}/members")).status_code == 404
    assert (await member.api.get(f"/api/workspaces/{ws}")).status_code == 200
    r = await member.api.put(f"/api/workspaces/{ws}", json={"name": "x"})
    assert (r.status_code, r.json()["code"]) == (403, "not_workspace_admin")
    r = await member.api.delete(f"/api/workspaces/{ws}")
    assert (r.status_code, r.json()["code"]) == (403, "not_workspace_owner")
    r = await member.api.post(f"/api/workspaces/{ws}/members", json={"email": outsider.email})
    assert r.status_code == 403


async def test_members_add_list_remove(api: Api) -> None:
    owner, a, b = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(owner)
    r = await owner.api.post(
        f"/api/workspaces/{ws}/members", json={"email": a.email, "role": "admin"}
    )
    assert (r.status_code, r.json()["role"]) == (201, "admin")
    for role in ("owner", "god", 1):  # one owner, set at creation; the 422 names the field
        r = await owner.api.post(
            f"/api/workspaces/{ws}/members", json={"email": b.email, "role": role}
        )
        assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "role"), r.text
        assert "owner" not in r.json()["errors"][0]["message"]
    r = await owner.api.post(f"/api/workspaces/{ws}/members", json={"email": a.email})
    assert (r.status_code, r.json()["code"]) == (409, "already_member")
    r = await owner.api.post(f"/api/workspaces/{ws}/members", json={"email": "no@example.com"})
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "email")
    r = await a.api.post(f"/api/workspaces/{ws}/members", json={"email": b.email})
    assert r.status_code == 201  # admins may add
    r = await owner.api.get(f"/api/workspaces/{ws}/members")
    assert [(m["user"]["id"], m["role"]) for m in r.json()] == [
        (owner.id, "owner"),
        (a.id, "admin"),
        (b.id, "member"),
    ]
    # A member may leave; an admin may not remove the owner; the owner cannot leave.
    assert (await b.api.delete(f"/api/workspaces/{ws}/members/{b.id}")).status_code == 204
    r = await a.api.delete(f"/api/workspaces/{ws}/members/{owner.id}")
    assert (r.status_code, r.json()["code"]) == (409, "owner_cannot_leave")
    r = await owner.api.delete(f"/api/workspaces/{ws}/members/{b.id}")
    assert r.status_code == 404


async def test_removed_member_leaves_the_workspace_chats(api: Api) -> None:
    owner, a, b = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(owner, a, b)
    group = await make_chat(owner, ws, "Group", a, b)
    assert (await owner.api.delete(f"/api/workspaces/{ws}/members/{a.id}")).status_code == 204
    r = await owner.api.get(f"/api/chats/{group}/members")
    assert sorted(m["user_id"] for m in r.json()) == sorted([owner.id, b.id])
    assert (await a.api.get(f"/api/chats/{group}")).status_code == 404


async def test_delete_workspace_removes_chats(api: Api) -> None:
    owner, a = await api.signup(), await api.signup()
    ws = await make_workspace(owner, a)
    chat = await make_chat(owner, ws, "PrivateChannel", a)
    r = await owner.api.post(f"/api/chats/{chat}/messages", json={"content": "hi"})
    assert r.status_code == 201
    assert (await owner.api.delete(f"/api/workspaces/{ws}")).status_code == 204
    assert (await owner.api.get(f"/api/chats/{chat}")).status_code == 404
    r = await owner.api.post(f"/api/chats/{chat}/messages", json={"content": "hi"})
    assert r.status_code == 404
    assert (await owner.api.get("/api/chats")).json() == []


async def test_public_channel_discovery(api: Api) -> None:
    owner, a, outsider = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(owner, a)
    pub = await make_chat(owner, ws, "PublicChannel", name="general")
    await make_chat(owner, ws, "PrivateChannel", name="secret")
    r = await a.api.get(f"/api/workspaces/{ws}/chats?type=PublicChannel")
    assert [c["id"] for c in r.json()] == [pub]
    r = await a.api.get(f"/api/workspaces/{ws}/chats?type=Group")
    assert (r.status_code, r.json()["errors"][0]["field"]) == (400, "type")
    assert (await outsider.api.get(f"/api/workspaces/{ws}/chats")).status_code == 404
