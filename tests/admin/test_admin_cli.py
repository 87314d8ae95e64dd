"""``fechatter admin …`` (issue 17): each command as a subprocess against a test's database,
a running server where the change must reach it, and the audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import argon2
import pytest
import trio

from fechatter.app import ServerInfo
from fechatter.domain.admin import Admin, ResetLink
from fechatter.models import UserStatus
from fechatter.storage import open_storage
from tests.admin.cli import fechatter, one_line_refusal
from tests.conftest import Api, User, make_workspace
from tests.realtime.clients import RawWs, SseClient

STREAM_CEILING = 10.0  # seconds: security_poll_interval (2 s) plus the command's own start


@pytest.fixture
def database(test_database_url: str) -> list[str]:
    """The ``--database-url`` flag of the test's server."""
    return ["--database-url", test_database_url]


async def admin_json(database: list[str], *args: str, stdin: bytes = b"") -> Any:
    done = await fechatter("admin", *args, *database, "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


async def open_streams(server: ServerInfo, user: User) -> tuple[SseClient, RawWs]:
    with trio.fail_after(STREAM_CEILING):
        sse = await SseClient.connect(server.realtime_url, user.api.token)
        await sse.next_of("ready")
        ws = await RawWs.connect(server.realtime_url, user.api.token)
        await ws.next_message()
    return sse, ws


async def closed_as_revoked(sse: SseClient, ws: RawWs) -> None:
    """Both streams end: SSE at end of stream, the WebSocket with 4001 "token revoked"."""
    with trio.fail_after(STREAM_CEILING):
        await sse.read_to_eof()
        await ws.until_closed()
    await sse.aclose()
    await ws.aclose()
    assert ws.closed is not None
    assert ws.closed.code == 4001


async def sign_in(api: Api, email: str, password: str = "correct horse") -> int:
    r = await api.post("/api/auth/signin", json={"email": email, "password": password})
    return r.status_code


async def test_suspend_closes_live_streams_and_reactivate_lets_them_back(
    server: ServerInfo, api: Api, database: list[str]
) -> None:
    user = await api.signup()
    sse, ws = await open_streams(server, user)
    out = await admin_json(database, "suspend", user.email)
    assert out == {"email": user.email, "status": "Suspended", "changed": True}
    await closed_as_revoked(sse, ws)
    # Sign-in and refresh are refused with their usual answers (docs/api.md "Admin command
    # line": a right password of a suspended account is not confirmed).
    r = await api.post("/api/auth/signin", json={"email": user.email, "password": "correct horse"})
    assert (r.status_code, r.json()["code"]) == (401, "invalid_credentials")
    r = await api.post("/api/auth/refresh", json={"refresh_token": user.auth["refresh_token"]})
    assert (r.status_code, r.json()["code"]) == (401, "invalid_refresh_token")
    again = await admin_json(database, "suspend", user.email)
    assert again["changed"] is False
    assert (await admin_json(database, "reactivate", user.email))["changed"] is True
    assert await sign_in(api, user.email) == 200
    entries = await admin_json(database, "audit")
    assert [(e["action"], e["target"]) for e in entries] == [
        ("reactivate", f"user:{user.email}"),
        ("suspend", f"user:{user.email}"),
    ]
    assert all(e["actor"].startswith("cli:") for e in entries)
    assert entries[0]["details"] == {"user_id": user.id}


async def test_create_user_with_a_password_from_stdin(
    server: ServerInfo, api: Api, database: list[str]
) -> None:
    out = await admin_json(
        database,
        "create-user",
        "New.Person@Example.com",
        "New Person",
        "--password-stdin",
        stdin=b"a fine password\n",
    )
    assert out["user"]["email"] == "new.person@example.com"
    assert out["reset_link"] is None
    assert await sign_in(api, "new.person@example.com", "a fine password") == 200
    [entry] = await admin_json(database, "audit")
    assert entry["action"] == "create-user"
    assert entry["details"] == {
        "user_id": out["user"]["id"],
        "fullname": "New Person",
        "reset_link": False,
    }


async def test_create_user_without_password_gets_a_one_time_link(
    server: ServerInfo, api: Api, database: list[str]
) -> None:
    out = await admin_json(database, "create-user", "linked@example.com", "Linked")
    url = out["reset_link"]["url"]
    token = url.rsplit("/reset-password/", 1)[1]
    assert url.startswith("http")
    assert (await api.get(f"/api/password-resets/{token}")).status_code == 204
    # The web client's form: the app page at the link, and its module.
    page = await api.get(f"/reset-password/{token}")
    assert (page.status_code, page.headers["content-type"].split(";")[0]) == (200, "text/html")
    assert (await api.get("/static/reset.js")).status_code == 200
    r = await api.post(f"/api/password-resets/{token}", json={"password": "short"})
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "password")
    r = await api.post(f"/api/password-resets/{token}", json={"password": "my own password"})
    assert r.status_code == 204
    assert await sign_in(api, "linked@example.com", "my own password") == 200
    # Single use.
    r = await api.post(f"/api/password-resets/{token}", json={"password": "another password"})
    assert (r.status_code, r.json()["code"]) == (404, "reset_link_not_found")
    assert (await api.get(f"/api/password-resets/{token}")).status_code == 404
    assert (await api.get("/api/password-resets/not*a*token")).status_code == 404


async def test_reset_link_ends_every_session_when_used(
    server: ServerInfo, api: Api, database: list[str]
) -> None:
    user = await api.signup()
    sse, ws = await open_streams(server, user)
    out = await admin_json(database, "reset-password", user.email)
    token = out["url"].rsplit("/", 1)[1]
    # The link alone changes nothing: the old password still works until it is used.
    assert await sign_in(api, user.email) == 200
    r = await api.post(f"/api/password-resets/{token}", json={"password": "brand new pass"})
    assert r.status_code == 204
    await closed_as_revoked(sse, ws)
    r = await api.post("/api/auth/refresh", json={"refresh_token": user.auth["refresh_token"]})
    assert r.status_code == 401
    assert await sign_in(api, user.email) == 401
    assert await sign_in(api, user.email, "brand new pass") == 200
    [entry] = await admin_json(database, "audit")
    assert (entry["action"], entry["details"]["user_id"]) == ("reset-password-link", user.id)


async def test_an_expired_link_is_refused(
    server: ServerInfo, api: Api, database: list[str]
) -> None:
    user = await api.signup()
    # The domain with a clock two days back makes a one-day link that is already dead.
    async with open_storage(database[1]) as storage:

        async def no_hash(password: str) -> str:
            raise AssertionError("a link needs no hash")

        admin = Admin(
            storage,
            no_hash,
            actor="cli:test",
            base_url="http://x",
            outbox=False,
            clock=lambda: trio_now_minus_days(2),
        )
        link = await admin.reset_link(user.email, expires_in=86_400)
    token = link.url.rsplit("/", 1)[1]
    r = await api.post(f"/api/password-resets/{token}", json={"password": "brand new pass"})
    assert (r.status_code, r.json()["code"]) == (404, "reset_link_not_found")
    assert await sign_in(api, user.email) == 200


def trio_now_minus_days(days: int) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) - timedelta(days=days)


async def test_reset_password_from_stdin_sets_it_and_closes_streams(
    server: ServerInfo, api: Api, database: list[str]
) -> None:
    user = await api.signup()
    sse, ws = await open_streams(server, user)
    out = await admin_json(
        database, "reset-password", user.email, "--password-stdin", stdin=b"set by admin 1\n"
    )
    assert out["password_set"] is True
    await closed_as_revoked(sse, ws)
    assert await sign_in(api, user.email) == 401
    assert await sign_in(api, user.email, "set by admin 1") == 200


async def test_workspaces_members_and_roles(
    server: ServerInfo, api: Api, database: list[str]
) -> None:
    owner, member = await api.signup(), await api.signup()
    ws = await make_workspace(owner, member, name="Admin Listed")
    listed = await admin_json(database, "workspaces")
    assert [(w["id"], w["name"], w["owner_email"], w["members"]) for w in listed] == [
        (ws, "Admin Listed", owner.email, 2)
    ]
    members = await admin_json(database, "members", str(ws))
    assert [(m["user"]["id"], m["role"]) for m in members] == [
        (owner.id, "owner"),
        (member.id, "member"),
    ]
    out = await admin_json(database, "set-role", str(ws), member.email, "admin")
    assert out["changed"] is True
    r = await owner.api.get(f"/api/workspaces/{ws}/members")
    assert [m["role"] for m in r.json()] == ["owner", "admin"]
    assert (await admin_json(database, "set-role", str(ws), member.email, "admin"))[
        "changed"
    ] is False
    # The owner's role does not change here.
    done = await fechatter("admin", "set-role", str(ws), owner.email, "member", *database)
    one_line_refusal(done, "fechatter admin: the owner's role cannot change")
    [entry] = await admin_json(database, "audit")
    assert (entry["action"], entry["target"]) == ("set-role", f"workspace:{ws}")
    assert entry["details"] == {"user": member.email, "user_id": member.id, "role": "admin"}
    # The human table: a header and one row per member.
    done = await fechatter("admin", "members", str(ws), *database)
    assert done.returncode == 0
    lines = done.stdout.decode().splitlines()
    assert lines[0].split() == ["user_id", "email", "fullname", "status", "role"]
    assert lines[2].split()[0:2] == [str(member.id), member.email]
    assert lines[2].split()[-1] == "admin"
    assert lines[2].split()[-2] == "Active"
    # A suspended member shows as such (the stored status, as it is).
    assert (await admin_json(database, "suspend", member.email))["changed"] is True
    done = await fechatter("admin", "members", str(ws), *database)
    assert done.stdout.decode().splitlines()[2].split()[-2:] == ["Suspended", "admin"]


async def test_bad_input_is_one_line_and_exit_1(
    server: ServerInfo, api: Api, database: list[str]
) -> None:
    user = await api.signup()
    for args, prefix in [
        (["suspend", "nobody@example.com"], "fechatter admin: no user with email"),
        (["reset-password", "nobody@example.com"], "fechatter admin: no user with email"),
        (["suspend", "not an email"], "fechatter admin: email: must be an email address"),
        (["members", "999999"], "fechatter admin: no workspace with id 999999"),
        (["members", "0"], "fechatter admin: workspace_id: must be 1 to"),
        (["set-role", "999999", user.email, "admin"], "fechatter admin: no workspace"),
        (["create-user", user.email, "Again"], "fechatter admin: "),
        (["create-user", "x@example.com", " "], "fechatter admin: fullname: must be 1 to 64"),
    ]:
        done = await fechatter("admin", *args, *database)
        one_line_refusal(done, prefix)
    done = await fechatter(
        "admin",
        "create-user",
        "y@example.com",
        "Y",
        "--password-stdin",
        *database,
        stdin=b"short\n",
    )
    one_line_refusal(done, "fechatter admin: password: must be 8 to 128 characters")
    # Nothing was audited for any of them.
    assert await admin_json(database, "audit") == []


async def test_a_missing_sqlite_database_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    done = await fechatter("admin", "workspaces", "--database-url", f"sqlite:///{missing}")
    one_line_refusal(done, f"fechatter admin: no database at {missing}")
    assert not missing.exists()
    done = await fechatter("admin", "set-role", "1", "a@example.com", "owner")
    assert done.returncode == 2  # argparse: owner is not a choice
    assert "Traceback" not in done.stderr.decode()


async def test_admin_commands_on_postgresql(pg_database: str) -> None:
    url = ["--database-url", pg_database]
    done = await fechatter(
        "admin",
        "create-user",
        "pg@example.com",
        "Pg User",
        "--password-stdin",
        *url,
        stdin=b"postgres password\n",
    )
    assert done.returncode == 0, done.stderr.decode()
    done = await fechatter("admin", "suspend", "pg@example.com", *url, "--json")
    assert json.loads(done.stdout)["changed"] is True
    done = await fechatter("admin", "audit", *url, "--json")
    assert [e["action"] for e in json.loads(done.stdout)] == ["suspend", "create-user"]
    async with open_storage(pg_database) as storage:
        creds = await storage.get_credentials("pg@example.com")
    assert creds is not None
    assert creds.user.status.value == "Suspended"
    done = await fechatter("admin", "reactivate", "ghost@example.com", *url)
    one_line_refusal(done, "fechatter admin: no user with email 'ghost@example.com'")


async def test_only_the_newest_link_of_an_unchanged_account_works(
    server: ServerInfo, api: Api, database: list[str]
) -> None:
    """A new link, a password change (the user's own, the admin's, another link's) and a
    suspension each spend every live link of the user (docs/api.md "Admin command line")."""
    user = await api.signup()

    async def live(link: ResetLink) -> bool:
        token = link.url.rsplit("/", 1)[1]
        r = await api.get(f"/api/password-resets/{token}")
        assert r.status_code in (204, 404), r.text
        return r.status_code == 204

    async def cheap_hash(password: str) -> str:
        return argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password)

    async with open_storage(database[1]) as storage:
        admin = Admin(storage, cheap_hash, actor="cli:test", base_url="http://x", outbox=False)
        first = await admin.reset_link(user.email, expires_in=3600)
        assert await live(first)
        second = await admin.reset_link(user.email, expires_in=3600)
        assert (await live(first), await live(second)) == (False, True)
        # The user changes their password themselves.
        r = await user.api.patch(
            "/api/users/me",
            json={"password": "changed by me", "current_password": "correct horse"},
        )
        assert r.status_code == 200, r.text
        assert not await live(second)
        # The admin sets one.
        third = await admin.reset_link(user.email, expires_in=3600)
        await admin.set_password(user.email, "set by the admin")
        assert not await live(third)
        # A suspension (and the reactivation after it).
        fourth = await admin.reset_link(user.email, expires_in=3600)
        assert await admin.set_status(user.email, UserStatus.SUSPENDED)
        assert not await live(fourth)
        fifth = await admin.reset_link(user.email, expires_in=3600)
        assert await admin.set_status(user.email, UserStatus.ACTIVE)
        assert not await live(fifth)
        # Using a link spends it; a link made after the use is the only live one.
        sixth = await admin.reset_link(user.email, expires_in=3600)
        token = sixth.url.rsplit("/", 1)[1]
        r = await api.post(f"/api/password-resets/{token}", json={"password": "through a link"})
        assert r.status_code == 204, r.text
        assert not await live(sixth)
    assert await sign_in(api, user.email, "through a link") == 200


@pytest.mark.parametrize("flag", ["0", "604801"])
async def test_expires_in_is_capped_at_seven_days(
    server: ServerInfo, api: Api, database: list[str], flag: str
) -> None:
    user = await api.signup()
    done = await fechatter("admin", "reset-password", user.email, "--expires-in", flag, *database)
    line = one_line_refusal(done, "fechatter admin: ")
    assert "expires-in: must be 1 to 604800" in line


async def test_a_reactivated_user_can_use_a_fresh_token_at_once(
    server: ServerInfo, api: Api, database: list[str]
) -> None:
    """Every process knows the suspension (the streams closed); right after the
    reactivation, a new sign-in's token works on the API and the streams — without waiting
    for the next security poll (the guard takes the state sign-in read, and a token newer
    than what a process knows makes it read the user again)."""
    user = await api.signup()
    sse, ws = await open_streams(server, user)

    async def no_hash(password: str) -> str:
        raise AssertionError("a status change needs no hash")

    async with open_storage(database[1]) as storage:
        admin = Admin(storage, no_hash, actor="cli:test", base_url="http://x", outbox=False)
        assert await admin.set_status(user.email, UserStatus.SUSPENDED)
        await closed_as_revoked(sse, ws)
        assert await admin.set_status(user.email, UserStatus.ACTIVE)
    r = await api.post("/api/auth/signin", json={"email": user.email, "password": "correct horse"})
    assert r.status_code == 200, r.text
    user.api.token = r.json()["token"]
    me = await user.api.get("/api/users/me")
    assert me.status_code == 200, me.text
    sse, ws = await open_streams(server, user)
    await sse.aclose()
    await ws.aclose()
