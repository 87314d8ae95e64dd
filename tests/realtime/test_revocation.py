"""Issue 9 kind 5: tokens never outlive their user, their session or their security version.

Logout everywhere and a password change void every access token and close the user's
streams — also when the change is made by another process on the same database (an admin
command line, another node), which this server learns of by following the change log.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from fechatter.app import ServerInfo
from fechatter.config import Settings
from fechatter.models import UserStatus
from fechatter.storage import open_storage
from tests.conftest import Api, User, access_token, api_client, running_server
from tests.realtime.clients import RawWs, SseClient


@pytest.fixture
async def fast_follow(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> AsyncIterator[tuple[ServerInfo, Api, Settings]]:
    """A server that reads the security change log every 50 ms."""
    settings = settings_factory(security_poll_interval=0.05)
    async with running_server(nursery, settings) as info, api_client(info) as api:
        yield info, api, settings


async def _streams(server: ServerInfo, user: User) -> tuple[SseClient, RawWs]:
    token = user.api.token
    sse = await SseClient.connect(server.realtime_url, token)
    await sse.next_of("ready")
    ws = await RawWs.connect(server.realtime_url, token)
    await ws.next_message()
    return sse, ws


async def _closed_as_revoked(sse: SseClient, ws: RawWs) -> None:
    """Both streams end (within 10 s): the SSE one at EOF, the WebSocket one with 4001."""
    with trio.fail_after(10):
        await sse.read_to_eof()
        await ws.until_closed()
    await sse.aclose()
    await ws.aclose()
    assert ws.closed is not None
    assert ws.closed.code == 4001


async def test_token_of_a_user_that_does_not_exist_is_refused(server: ServerInfo, api: Api) -> None:
    ghost = access_token(987654, ttl=600, issued_at=time.time())
    r = await api.get("/api/workspaces", headers={"Authorization": f"Bearer {ghost}"})
    assert (r.status_code, r.json()["code"]) == (401, "invalid_token")
    with trio.fail_after(10):
        sse = await SseClient.connect(server.realtime_url, ghost)
        body = await sse.read_to_eof()
    await sse.aclose()
    assert sse.status == 401
    assert b"invalid_token" in body


async def test_logout_everywhere_voids_tokens_and_closes_streams(
    server: ServerInfo, api: Api
) -> None:
    user = await api.signup()
    second = await api.post(
        "/api/auth/signin", json={"email": user.email, "password": "correct horse"}
    )
    second_token = second.json()["token"]
    sse, ws = await _streams(server, user)
    r = await user.api.post(
        "/api/auth/logout",
        json={"refresh_token": user.auth["refresh_token"], "everywhere": True},
    )
    assert r.status_code == 204
    await _closed_as_revoked(sse, ws)
    for token in (user.api.token, second_token):
        r = await api.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()["code"]) == (401, "token_revoked")
    r = await api.post("/api/auth/refresh", json={"refresh_token": second.json()["refresh_token"]})
    assert r.status_code == 401
    # A new sign-in works, and its token opens streams again.
    r = await api.post("/api/auth/signin", json={"email": user.email, "password": "correct horse"})
    assert r.status_code == 200
    sse = await SseClient.connect(server.realtime_url, r.json()["token"])
    with trio.fail_after(10):
        assert (await sse.next_of("ready")).event == "ready"
    await sse.aclose()


async def test_plain_logout_ends_only_that_session(server: ServerInfo, api: Api) -> None:
    user = await api.signup()
    r = await user.api.post("/api/auth/logout", json={"refresh_token": user.auth["refresh_token"]})
    assert r.status_code == 204
    r = await api.post("/api/auth/refresh", json={"refresh_token": user.auth["refresh_token"]})
    assert r.status_code == 401
    assert (await user.api.get("/api/users/me")).status_code == 200


async def test_password_change_closes_streams(server: ServerInfo, api: Api) -> None:
    user = await api.signup()
    sse, ws = await _streams(server, user)
    r = await user.api.patch(
        "/api/users/me", json={"password": "new password", "current_password": "correct horse"}
    )
    assert r.status_code == 200
    await _closed_as_revoked(sse, ws)


@pytest.mark.single_process(
    reason=(
        "asserts the API refuses once the streams closed; in a cluster each node polls the "
        "security change log on its own (docs/cluster.md §6: within security_poll_interval), "
        "so node 1 may still accept for that long after node 2 closed the streams"
    )
)
async def test_a_change_made_by_another_process_reaches_this_one(
    fast_follow: tuple[ServerInfo, Api, Settings], tmp_path: Path
) -> None:
    server, api, settings = fast_follow
    user = await api.signup()
    sse, ws = await _streams(server, user)
    assert (await user.api.get("/api/users/me")).status_code == 200  # cached as valid
    # Another process (here: a second storage on the same database, as an admin command
    # line would open it) raises the user's security version.
    async with open_storage(settings.database_url) as other:
        await other.raise_security_version(user.id)
    await _closed_as_revoked(sse, ws)
    r = await user.api.get("/api/users/me")
    assert (r.status_code, r.json()["code"]) == (401, "token_revoked")
    r = await api.post("/api/auth/refresh", json={"refresh_token": user.auth["refresh_token"]})
    assert r.status_code == 401


async def test_suspended_user_is_signed_out_and_gets_no_tokens(
    fast_follow: tuple[ServerInfo, Api, Settings],
) -> None:
    server, api, settings = fast_follow
    user = await api.signup()
    sse, ws = await _streams(server, user)
    async with open_storage(settings.database_url) as other:
        await other.set_user_status(user.id, UserStatus.SUSPENDED)
    await _closed_as_revoked(sse, ws)
    r = await user.api.get("/api/users/me")
    assert r.status_code == 401
    r = await api.post("/api/auth/refresh", json={"refresh_token": user.auth["refresh_token"]})
    assert r.status_code == 401
    r = await api.post("/api/auth/signin", json={"email": user.email, "password": "correct horse"})
    assert r.status_code == 401
    # Reactivated, the user signs in again (old sessions stay revoked).
    async with open_storage(settings.database_url) as other:
        state = await other.set_user_status(user.id, UserStatus.ACTIVE)
    assert state.active
    r = await api.post("/api/auth/signin", json={"email": user.email, "password": "correct horse"})
    assert r.status_code == 200
    r = await api.post("/api/auth/refresh", json={"refresh_token": user.auth["refresh_token"]})
    assert r.status_code == 401
