"""Workspace events (SPEC §7): who gets them, their payloads, their order, resume; and
``PUT /api/workspaces/:id/members/:user_id``.

Streams are real SSE connections to the realtime listener (on the cluster: node 2, while
HTTP goes to node 1, so every event crosses nodes through the outbox and JetStream).
"""

from __future__ import annotations

from typing import Any

import trio

from fechatter.app import ServerInfo
from tests.conftest import Api, User, make_workspace
from tests.realtime.clients import Received, SseClient

WS_EVENTS = (
    "workspace.updated",
    "workspace.deleted",
    "workspace.member_added",
    "workspace.member_removed",
    "workspace.member_updated",
)


async def stream(server: ServerInfo, user: User, last_event_id: str | None = None) -> SseClient:
    sse = await SseClient.connect(server.realtime_url, user.api.token, last_event_id=last_event_id)
    assert sse.status == 200
    await sse.next_of("ready")
    return sse


async def next_ws(sse: SseClient) -> Received:
    return await sse.next_of(*WS_EVENTS)


async def test_every_change_reaches_members_and_the_affected_user(
    server: ServerInfo, api: Api
) -> None:
    owner, member, joiner = await api.signup(), await api.signup(), await api.signup()
    outsider = await api.signup()
    ws = await make_workspace(owner, member)
    with trio.fail_after(20):
        s_owner, s_member = await stream(server, owner), await stream(server, member)
        s_joiner, s_outsider = await stream(server, joiner), await stream(server, outsider)

        # Added: every member and the new one (who had no workspace: no reload needed).
        r = await owner.api.post(f"/api/workspaces/{ws}/members", json={"email": joiner.email})
        assert r.status_code == 201
        for sse in (s_owner, s_member, s_joiner):
            got = await next_ws(sse)
            assert got.event == "workspace.member_added"
            assert got.id
            assert (got.data["workspace_id"], got.data["role"]) == (ws, "member")
            assert (got.data["user"]["id"], got.data["user"]["email"]) == (joiner.id, joiner.email)

        # Role changed (owner only).
        url = f"/api/workspaces/{ws}/members/{joiner.id}"
        r = await owner.api.put(url, json={"role": "admin"})
        assert (r.status_code, r.json()["role"], r.json()["user"]["id"]) == (
            200,
            "admin",
            joiner.id,
        )
        for sse in (s_owner, s_member, s_joiner):
            got = await next_ws(sse)
            assert (got.event, got.data) == (
                "workspace.member_updated",
                {"workspace_id": ws, "user_id": joiner.id, "role": "admin"},
            )

        # Renamed.
        r = await joiner.api.put(f"/api/workspaces/{ws}", json={"name": "Renamed"})
        assert r.status_code == 200
        for sse in (s_owner, s_member, s_joiner):
            got = await next_ws(sse)
            assert (got.event, got.data) == ("workspace.updated", r.json())

        # Removed: the remaining members and the removed one.
        r = await owner.api.delete(f"/api/workspaces/{ws}/members/{member.id}")
        assert r.status_code == 204
        for sse in (s_owner, s_member, s_joiner):
            got = await next_ws(sse)
            assert (got.event, got.data) == (
                "workspace.member_removed",
                {"workspace_id": ws, "user_id": member.id},
            )

        # Deleted: the members at that moment; the former member hears nothing more.
        assert (await owner.api.delete(f"/api/workspaces/{ws}")).status_code == 204
        for sse in (s_owner, s_joiner):
            got = await next_ws(sse)
            assert (got.event, got.data) == ("workspace.deleted", {"id": ws})

        # Sentinel: a change of another workspace shared by member and outsider is the very
        # next workspace event each of them sees (nothing of ws leaked to them).
        other = await make_workspace(outsider)
        r = await outsider.api.post(
            f"/api/workspaces/{other}/members", json={"email": member.email}
        )
        assert r.status_code == 201
        for sse in (s_member, s_outsider):
            got = await next_ws(sse)
            assert (got.event, got.data["workspace_id"]) == ("workspace.member_added", other)
        for sse in (s_owner, s_member, s_joiner, s_outsider):
            await sse.aclose()


async def test_role_changes_are_owner_only_and_checked(api: Api) -> None:
    owner, admin, member, outsider = [await api.signup() for _ in range(4)]
    ws = await make_workspace(owner, member)
    body = {"email": admin.email, "role": "admin"}
    assert (await owner.api.post(f"/api/workspaces/{ws}/members", json=body)).status_code == 201
    url = f"/api/workspaces/{ws}/members"
    r = await admin.api.put(f"{url}/{member.id}", json={"role": "admin"})
    assert (r.status_code, r.json()["code"]) == (403, "not_workspace_owner")
    r = await outsider.api.put(f"{url}/{member.id}", json={"role": "admin"})
    assert r.status_code == 404
    r = await owner.api.put(f"{url}/{outsider.id}", json={"role": "admin"})
    assert (r.status_code, r.json()["code"]) == (404, "member_not_found")
    r = await owner.api.put(f"{url}/{owner.id}", json={"role": "member"})
    assert (r.status_code, r.json()["code"]) == (409, "owner_role")
    for bad in ({"role": "owner"}, {"role": 1}, {}):
        r = await owner.api.put(f"{url}/{member.id}", json=bad)
        assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "role"), bad
    r = await owner.api.put(f"{url}/{admin.id}", json={"role": "member"})
    assert (r.status_code, r.json()["role"]) == (200, "member")
    r = await owner.api.put(f"{url}/{admin.id}", json={"role": "member"})  # the same: 200
    assert (r.status_code, r.json()["role"]) == (200, "member")
    r = await owner.api.get(url)
    assert {m["user"]["id"]: m["role"] for m in r.json()} == {
        owner.id: "owner",
        member.id: "member",
        admin.id: "member",
    }
    # An admin may no longer add admins directly either (only the owner grants admin).
    r = await owner.api.put(f"{url}/{member.id}", json={"role": "admin"})
    assert r.status_code == 200
    r = await member.api.post(url, json={"email": outsider.email, "role": "admin"})
    assert (r.status_code, r.json()["code"]) == (403, "not_workspace_owner")


async def test_concurrent_changes_arrive_in_commit_order(server: ServerInfo, api: Api) -> None:
    """Eight renames at once: each stream sees them in one order, the same on every stream,
    ending with the name the workspace has (a late push of an older commit would end on a
    stale name)."""
    owner, member = await api.signup(), await api.signup()
    ws = await make_workspace(owner, member)
    names = [f"name-{i}" for i in range(8)]
    with trio.fail_after(30):
        streams = [await stream(server, owner), await stream(server, member)]

        async def rename(name: str) -> None:
            r = await owner.api.put(f"/api/workspaces/{ws}", json={"name": name})
            assert r.status_code == 200

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(rename, name)
        final = (await owner.api.get(f"/api/workspaces/{ws}")).json()
        orders = []
        for sse in streams:
            seen = [(await next_ws(sse)).data for _ in names]
            assert sorted(d["name"] for d in seen) == sorted(names)
            assert seen[-1] == final
            orders.append([d["name"] for d in seen])
            await sse.aclose()
        assert orders[0] == orders[1]


async def test_workspace_events_resume_exactly(server: ServerInfo, api: Api) -> None:
    owner, member = await api.signup(), await api.signup()
    ws = await make_workspace(owner, member)
    people = [await api.signup() for _ in range(3)]
    with trio.fail_after(30):
        sse = await stream(server, member)
        r = await owner.api.put(f"/api/workspaces/{ws}", json={"description": "first"})
        assert r.status_code == 200
        last = await next_ws(sse)
        assert last.data["description"] == "first"
        await sse.aclose()
        # Missed while away: three joins and a role change.
        for p in people:
            r = await owner.api.post(f"/api/workspaces/{ws}/members", json={"email": p.email})
            assert r.status_code == 201
        r = await owner.api.put(
            f"/api/workspaces/{ws}/members/{people[0].id}", json={"role": "admin"}
        )
        assert r.status_code == 200
        again = await SseClient.connect(
            server.realtime_url, member.api.token, last_event_id=last.id
        )
        ready = await again.next_event()
        assert ready.event == "ready"
        replayed: list[tuple[str, Any]] = []
        ids: list[str] = []
        for _ in range(4):
            got = await again.next_of(*WS_EVENTS, "resync")
            assert got.event != "resync", got
            assert got.id is not None
            ids.append(got.id)
            replayed.append(
                (got.event, got.data.get("user", {}).get("id", got.data.get("user_id")))
            )
        assert replayed == [
            *[("workspace.member_added", p.id) for p in people],
            ("workspace.member_updated", people[0].id),
        ]
        assert len(set(ids)) == 4
        # Nothing doubled: the next live event follows directly.
        r = await owner.api.put(f"/api/workspaces/{ws}", json={"description": "sentinel"})
        assert r.status_code == 200
        nxt = await next_ws(again)
        assert (nxt.event, nxt.data["description"]) == ("workspace.updated", "sentinel")
        await again.aclose()


async def test_an_invited_person_is_told_at_once(server: ServerInfo, api: Api) -> None:
    """The person who had no workspace accepts a link: their own stream (open before) and the
    inviter's both get ``workspace.member_added`` — the client needs no reload."""
    owner, guest = await api.signup(), await api.signup()
    ws = await make_workspace(owner)
    r = await owner.api.post(f"/api/workspaces/{ws}/invites", json={})
    token = r.json()["token"]
    with trio.fail_after(20):
        s_owner, s_guest = await stream(server, owner), await stream(server, guest)
        r = await guest.api.post(f"/api/invites/{token}/accept")
        assert r.status_code == 200
        for sse in (s_owner, s_guest):
            got = await next_ws(sse)
            assert (got.event, got.data["workspace_id"], got.data["user"]["id"]) == (
                "workspace.member_added",
                ws,
                guest.id,
            )
        # Accepting again (already a member) changes nothing and says nothing.
        assert (await guest.api.post(f"/api/invites/{token}/accept")).status_code == 200
        r = await owner.api.put(f"/api/workspaces/{ws}", json={"description": "next"})
        for sse in (s_owner, s_guest):
            assert (await next_ws(sse)).event == "workspace.updated"
            await sse.aclose()
