"""User status and profiles over HTTP (SPEC §7; docs/api.md "User status, profiles and
mute"): validation, the shown status, who may see a profile, persistence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from fechatter.app import ServerInfo
from fechatter.config import Settings
from tests.conftest import Api, api_client, make_workspace, running_server
from tests.realtime.clients import SseClient

CEILING = 20.0


def fields(r: Any) -> list[str]:
    assert r.headers["content-type"] == "application/problem+json", r.text
    return [e["field"] for e in r.json().get("errors", [])]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "status"),
        ({"status": "online"}, "status"),
        ({"status": "offline"}, "status"),
        ({"status": 1}, "status"),
        ({"status": "busy", "text": "x" * 101}, "text"),
        ({"status": "busy", "text": 5}, "text"),
        ({"status": "busy", "text": "a\u0000b"}, "text"),
        ({"status": "away", "expires_in": 0}, "expires_in"),
        ({"status": "away", "expires_in": -5}, "expires_in"),
        ({"status": "away", "expires_in": "60"}, "expires_in"),
        ({"status": "away", "expires_in": 1.5}, "expires_in"),
        ({"status": "away", "expires_in": 30 * 24 * 3600 + 1}, "expires_in"),
        ({"status": None, "text": "lunch"}, "status"),
        ({"status": None, "expires_in": 60}, "status"),
    ],
)
async def test_bad_status_is_a_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    user = await api.signup()
    with trio.fail_after(CEILING):
        r = await user.api.put("/api/users/me/status", json=body)
    assert r.status_code == 422, r.text
    assert field in fields(r)


async def test_status_needs_auth_and_json(api: Api) -> None:
    user = await api.signup()
    with trio.fail_after(CEILING):
        r = await api.put("/api/users/me/status", json={"status": "busy"})
        assert r.status_code == 401
        r = await user.api.put("/api/users/me/status", content=b"busy")
        assert r.status_code == 400


async def test_set_and_clear_a_status(api: Api) -> None:
    user = await api.signup()
    with trio.fail_after(CEILING):
        r = await user.api.put(
            "/api/users/me/status", json={"status": "busy", "text": "  In a meeting  "}
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "busy", "text": "In a meeting", "expires_at": None}
        r = await user.api.put("/api/users/me/status", json={"status": "away", "expires_in": 600})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "away"
        assert r.json()["text"] is None
        assert r.json()["expires_at"].endswith("Z")
        r = await user.api.put("/api/users/me/status", json={"status": "away", "text": ""})
        assert r.json() == {"status": "away", "text": None, "expires_at": None}
        r = await user.api.put("/api/users/me/status", json={"status": None})
        assert r.status_code == 200, r.text
        assert r.json() == {"status": None, "text": None, "expires_at": None}


async def test_profile_shows_the_shown_status(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    await make_workspace(a, b)
    with trio.fail_after(CEILING):
        r = await a.api.put("/api/users/me/status", json={"status": "busy", "text": "focus"})
        assert r.status_code == 200, r.text
        # No live stream: offline, whatever was chosen.
        r = await b.api.get(f"/api/users/{a.id}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["id"], body["email"]) == (a.id, a.email)
        assert body["fullname"]
        assert body["presence"] == {"status": "offline", "text": None, "expires_at": None}
        sse = await SseClient.connect(server.realtime_url, a.api.token)
        await sse.next_of("ready")
        r = await b.api.get(f"/api/users/{a.id}")
        assert r.json()["presence"] == {"status": "busy", "text": "focus", "expires_at": None}
        r = await b.api.get(f"/api/users/{a.id}")
        await a.api.put("/api/users/me/status", json={"status": None})
        r = await b.api.get(f"/api/users/{a.id}")
        assert r.json()["presence"] == {"status": "online", "text": None, "expires_at": None}
        await sse.aclose()


async def test_online_users_lists_chosen_statuses(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    with trio.fail_after(CEILING):
        await a.api.put("/api/users/me/status", json={"status": "away", "text": "brb"})
        await b.api.put("/api/users/me/status", json={"status": "busy"})
        sse = await SseClient.connect(server.realtime_url, a.api.token)
        await sse.next_of("ready")
        r = await b.api.get(f"/api/online-users?workspace_id={ws}")
        assert r.status_code == 200, r.text
        # b has no stream: not online, so not listed with a status either.
        assert r.json() == {
            "user_ids": [a.id],
            "statuses": {str(a.id): {"status": "away", "text": "brb", "expires_at": None}},
        }
        await sse.aclose()


async def test_a_profile_is_visible_only_within_a_shared_workspace(api: Api) -> None:
    a, b, stranger = await api.signup(), await api.signup(), await api.signup()
    await make_workspace(a, b)
    with trio.fail_after(CEILING):
        assert (await a.api.get(f"/api/users/{b.id}")).status_code == 200
        assert (await a.api.get(f"/api/users/{a.id}")).status_code == 200  # oneself
        hidden = await stranger.api.get(f"/api/users/{a.id}")
        missing = await stranger.api.get(f"/api/users/{10**12}")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json() == missing.json()  # reveals nothing
        assert (await api.get(f"/api/users/{a.id}")).status_code == 401


@pytest.mark.single_process(reason="restarts the one server on the same database")
async def test_a_chosen_status_survives_a_restart(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory()
    with trio.fail_after(CEILING):
        async with running_server(nursery, settings) as info, api_client(info) as api:
            a, b = await api.signup(), await api.signup()
            await make_workspace(a, b)
            busy = {"status": "busy", "text": "deep work"}
            r = await a.api.put("/api/users/me/status", json=busy)
            assert r.status_code == 200, r.text
        async with running_server(nursery, settings) as info, api_client(info) as api:
            b.api.client = api.client
            a.api.client = api.client
            sse = await SseClient.connect(info.realtime_url, a.api.token)
            await sse.next_of("ready")
            r = await b.api.get(f"/api/users/{a.id}")
            assert r.json()["presence"]["status"] == "busy"
            assert r.json()["presence"]["text"] == "deep work"
            await sse.aclose()
