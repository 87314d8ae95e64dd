"""Per-chat mute (SPEC §7; docs/api.md "User status, profiles and mute"): the caller's own
flag on Chat, synced to their own streams with ``chat.muted``, never shown to others."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from fechatter.app import ServerInfo
from tests.conftest import Api, make_chat, make_workspace
from tests.realtime.clients import SseClient

CEILING = 20.0


async def test_a_member_mutes_and_unmutes_a_chat_for_themself(api: Api) -> None:
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    chat = await make_chat(a, ws, "Group", b, c)
    with trio.fail_after(CEILING):
        r = await b.api.put(f"/api/chats/{chat}/notifications", json={"muted": True})
        assert r.status_code == 200, r.text
        assert r.json()["id"] == chat
        assert r.json()["muted"] is True
        assert (await b.api.get(f"/api/chats/{chat}")).json()["muted"] is True
        listed = (await b.api.get(f"/api/chats?workspace_id={ws}")).json()
        assert [x["muted"] for x in listed if x["id"] == chat] == [True]
        # Another member's view is theirs: not muted.
        assert (await a.api.get(f"/api/chats/{chat}")).json()["muted"] is False
        r = await b.api.put(f"/api/chats/{chat}/notifications", json={"muted": False})
        assert r.json()["muted"] is False
        assert (await b.api.get(f"/api/chats/{chat}")).json()["muted"] is False


@pytest.mark.parametrize(
    "body", [{}, {"muted": "yes"}, {"muted": 1}, {"muted": None}, {"other": True}]
)
async def test_bad_mute_is_a_422_naming_the_field(api: Api, body: dict[str, Any]) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    chat = await make_chat(a, ws, "Single", b)
    with trio.fail_after(CEILING):
        r = await a.api.put(f"/api/chats/{chat}/notifications", json=body)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["muted"]


async def test_only_members_mute(api: Api) -> None:
    a, b, outsider = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, outsider)
    single = await make_chat(a, ws, "Single", b)
    channel = await make_chat(a, ws, "PublicChannel")
    with trio.fail_after(CEILING):
        r = await outsider.api.put(f"/api/chats/{single}/notifications", json={"muted": True})
        assert r.status_code == 404, r.text
        missing = await outsider.api.put(f"/api/chats/{10**12}/notifications", json={"muted": 1})
        assert missing.status_code == 404  # 404 before the body is looked at
        assert missing.json() == r.json()
        r = await outsider.api.put(f"/api/chats/{channel}/notifications", json={"muted": True})
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "not_a_member"
        r = await api.put(f"/api/chats/{single}/notifications", json={"muted": True})
        assert r.status_code == 401


async def test_mute_reaches_the_callers_other_devices_only(server: ServerInfo, api: Api) -> None:
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    chat = await make_chat(a, ws, "Group", b, c)
    with trio.fail_after(CEILING):
        mine = await SseClient.connect(server.realtime_url, a.api.token)
        await mine.next_of("ready")
        theirs = await SseClient.connect(server.realtime_url, b.api.token)
        await theirs.next_of("ready")
        r = await a.api.put(f"/api/chats/{chat}/notifications", json={"muted": True})
        assert r.status_code == 200, r.text
        got = await mine.next_of("chat.muted")
        assert got.data == {"chat_id": chat, "muted": True}
        # A rename reaches everyone without a's mute in it; b's next event is the rename.
        r = await a.api.put(f"/api/chats/{chat}", json={"name": "renamed"})
        assert r.status_code == 200, r.text
        assert r.json()["muted"] is True  # the caller's own view
        updated = await theirs.next_of("chat.updated", "chat.muted")
        assert updated.event == "chat.updated"
        assert "muted" not in updated.data
        assert "muted" not in (await mine.next_of("chat.updated")).data
        await mine.aclose()
        await theirs.aclose()
