"""Activating imported users (issue 17, docs/archive.md "Users"; docs/api.md "Activating
imported users"): a Slack export imported into the test server's database creates its users
``Pending``; they cannot sign in; a reset link or a sign-up through an invite bound to their
email activates them, and they see the imported history. A user an admin suspended is
activated by neither, and a sign-up with a pending email and no bound invite stays 409."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from fechatter.config import Settings
from fechatter.models import UserStatus
from fechatter.storage import open_storage
from fechatter.storage.archive import NO_PASSWORD
from tests.admin.cli import fechatter, one_line_refusal
from tests.admin.test_admin_cli import admin_json, sign_in
from tests.conftest import Api, User, make_workspace
from tests.http.test_invites import invite
from tests.test_archive import CEILING, db_flags, run_cli
from tests.test_slack_import import slack_export

WORKSPACE = "Acme Slack export"  # the imported workspace: the zip's file name


@pytest.fixture
def database(test_database_url: str) -> list[str]:
    """The ``--database-url`` flag of the test's server."""
    return ["--database-url", test_database_url]


async def import_slack(settings_factory: Callable[..., Settings], tmp_path: Path) -> int:
    """Import the Slack export of ``tests.test_slack_import`` into the server's database
    (users ada, bob, cy @example.com created Pending); the new workspace's id."""
    export = tmp_path / f"{WORKSPACE}.zip"
    slack_export(export)
    assert await run_cli("import", "--slack", str(export), *db_flags(settings_factory())) == 0
    async with open_storage(settings_factory().database_url) as storage:
        ada = await storage.get_user_by_email("ada@example.com")
        assert ada is not None
        (ws,) = await storage.list_workspaces(ada.id)
    return ws.id


async def status_of(settings: Settings, email: str) -> UserStatus:
    async with open_storage(settings.database_url) as storage:
        user = await storage.get_user_by_email(email)
        assert user is not None
        return user.status


async def member_statuses(database: list[str], ws: int) -> dict[str, str]:
    """``fechatter admin members`` as JSON and as the table, which agree: email → status."""
    listed = await admin_json(database, "members", str(ws))
    from_json = {m["user"]["email"]: m["user"]["status"] for m in listed}
    done = await fechatter("admin", "members", str(ws), *database)
    assert done.returncode == 0, done.stderr.decode()
    header, *rows = done.stdout.decode().splitlines()
    assert header.split()[-2] == "status"
    from_table = {row.split()[1]: row.split()[-2] for row in rows}
    assert from_table == from_json
    return from_json


async def general_contents(user: Api, ws: int) -> list[str]:
    r = await user.get("/api/chats", params={"workspace_id": ws})
    assert r.status_code == 200, r.text
    general = next(c["id"] for c in r.json() if c["name"] == "general")
    r = await user.get(f"/api/chats/{general}/messages")
    assert r.status_code == 200, r.text
    return [m["content"] for m in r.json()["items"][::-1]]


async def signup(
    api: Api, email: str, token: str | None = None, name: str = "Claimer"
) -> dict[str, Any]:
    """A sign-up's answer with its HTTP status under ``status``."""
    body = {"fullname": name, "email": email, "password": "a new password"}
    if token is not None:
        body["invite_token"] = token
    r = await api.post("/api/auth/signup", json=body)
    return {"status": r.status_code, **r.json()}


async def test_a_reset_link_activates_an_imported_user(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    database: list[str],
) -> None:
    with trio.fail_after(CEILING):
        ws = await import_slack(settings_factory, tmp_path)
        live = settings_factory()
        assert await status_of(live, "ada@example.com") is UserStatus.PENDING
        assert await sign_in(api, "ada@example.com", "anything at all") == 401
        statuses = await member_statuses(database, ws)
        assert statuses["ada@example.com"] == "Pending"
        # Reactivation would leave an account without a password: refused, pointing at the link.
        done = await fechatter("admin", "reactivate", "ada@example.com", *database)
        one_line_refusal(
            done, "fechatter admin: ada@example.com was imported and has no password yet"
        )
        assert "reset-password ada@example.com" in done.stderr.decode()
        assert await status_of(live, "ada@example.com") is UserStatus.PENDING

        out = await admin_json(database, "reset-password", "ada@example.com")
        token = out["url"].rsplit("/reset-password/", 1)[1]
        r = await api.post(f"/api/password-resets/{token}", json={"password": "ada's own pass"})
        assert r.status_code == 204, r.text
        assert await status_of(live, "ada@example.com") is UserStatus.ACTIVE
        r = await api.post(
            "/api/auth/signin", json={"email": "ada@example.com", "password": "ada's own pass"}
        )
        assert r.status_code == 200, r.text
        ada = Api(api.client, r.json()["token"])
        assert (await ada.get("/api/users/me")).json()["status"] == "Active"
        assert [w["name"] for w in (await ada.get("/api/workspaces")).json()] == [WORKSPACE]
        contents = await general_contents(ada, ws)
        assert contents[0].startswith("hello <@")
        assert "reply in thread" in contents
        statuses = await member_statuses(database, ws)
        assert (statuses["ada@example.com"], statuses["bob@example.com"]) == ("Active", "Pending")
        # The refused reactivation wrote nothing; the link's creation is the one audit row.
        entries = await admin_json(database, "audit")
        assert [e["action"] for e in entries] == ["reset-password-link"]


async def test_an_email_bound_invite_claims_an_imported_account(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    database: list[str],
) -> None:
    with trio.fail_after(CEILING):
        imported = await import_slack(settings_factory, tmp_path)
        live = settings_factory()
        async with open_storage(live.database_url) as storage:
            bob_before = await storage.get_user_by_email("bob@example.com")
            assert bob_before is not None
        # Ada, the imported workspace's owner, activated by her link, invites people.
        out = await admin_json(database, "reset-password", "ada@example.com")
        token = out["url"].rsplit("/reset-password/", 1)[1]
        r = await api.post(f"/api/password-resets/{token}", json={"password": "ada's own pass"})
        assert r.status_code == 204, r.text
        r = await api.post(
            "/api/auth/signin", json={"email": "ada@example.com", "password": "ada's own pass"}
        )
        ada = User(Api(api.client, r.json()["token"]), r.json()["user"]["id"], "ada@x", {})
        ws = await make_workspace(ada, name="Ada's")
        # A stranger (no workspace shared with bob) cannot vouch for him.
        olga = await api.signup("Olga")
        olgas = await make_workspace(olga, name="Olga's")
        # No account takeover: a plain sign-up, an unbound invite, an invite bound to
        # someone else, a stranger's bound invite — all 409, nothing used, still pending.
        assert (await signup(api, "bob@example.com"))["code"] == "email_taken"
        free = await invite(ada, ws, max_uses=5)
        other = await invite(ada, ws, email="cy@example.com")
        strangers = await invite(olga, olgas, email="bob@example.com")
        for token in (free["token"], other["token"], strangers["token"]):
            out = await signup(api, "bob@example.com", token)
            assert (out["status"], out["code"]) == (409, "email_taken")
        bound = await invite(ada, ws, email="Bob@Example.com", role="admin")
        listed = (await ada.api.get(f"/api/workspaces/{ws}/invites")).json()
        assert [i["uses"] for i in listed] == [0, 0, 0]
        assert await status_of(live, "bob@example.com") is UserStatus.PENDING

        # Through the invite bound to the email (any case): the imported account is claimed.
        out = await signup(api, "BOB@example.com", bound["token"], name="Robert")
        assert out["status"] == 201, out
        assert out["user"]["id"] == bob_before.id
        assert (out["user"]["fullname"], out["user"]["status"]) == ("Robert", "Active")
        bob = Api(api.client, out["token"])
        assert (await bob.get("/api/users/me")).status_code == 200  # the token works at once
        names = sorted(w["name"] for w in (await bob.get("/api/workspaces")).json())
        assert names == [WORKSPACE, "Ada's"]
        members = (await bob.get(f"/api/workspaces/{ws}/members")).json()
        roles = {m["user"]["id"]: m["role"] for m in members}
        assert roles[bob_before.id] == "admin"  # the invite's role
        assert "reply in thread" in await general_contents(bob, imported)
        assert await sign_in(api, "bob@example.com", "a new password") == 200
        listed = (await ada.api.get(f"/api/workspaces/{ws}/invites")).json()
        assert {i["id"]: i["uses"] for i in listed}[bound["id"]] == 1
        # Spent: the link is dead now (and bob is active: a sign-up would be 409 anyway).
        out = await signup(api, "bob@example.com", bound["token"])
        assert (out["status"], out["code"]) == (404, "invite_not_found")
        assert (await member_statuses(database, imported))["bob@example.com"] == "Active"
        # Invited into the imported workspace itself: claimed, role kept, one use spent.
        cy_bound = await invite(ada, imported, email="cy@example.com", role="admin")
        out = await signup(api, "cy@example.com", cy_bound["token"], name="Cy")
        assert out["status"] == 201, out
        cy = Api(api.client, out["token"])
        members = (await cy.get(f"/api/workspaces/{imported}/members")).json()
        assert {m["user"]["email"]: m["role"] for m in members}["cy@example.com"] == "member"
        listed = (await ada.api.get(f"/api/workspaces/{imported}/invites")).json()
        assert [i["uses"] for i in listed] == [1]


async def test_an_admin_suspended_user_is_activated_by_neither(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    database: list[str],
) -> None:
    with trio.fail_after(CEILING):
        await import_slack(settings_factory, tmp_path)
        live = settings_factory()
        olga = await api.signup("Olga")
        dee = await api.signup("Dee")
        ws = await make_workspace(olga, dee, name="Olga's")  # olga manages a workspace of dee's
        # A signed-up user suspended, and an imported one suspended before it was activated.
        for email in (dee.email, "cy@example.com"):
            assert (await admin_json(database, "suspend", email))["changed"] is True
            assert await status_of(live, email) is UserStatus.SUSPENDED
            out = await admin_json(database, "reset-password", email)
            token = out["url"].rsplit("/reset-password/", 1)[1]
            r = await api.post(f"/api/password-resets/{token}", json={"password": "via the link"})
            assert r.status_code == 204, r.text  # the password is set...
            assert await status_of(live, email) is UserStatus.SUSPENDED  # ...not the status
            assert await sign_in(api, email, "via the link") == 401
        # An invite bound to dee's email by the admin of dee's workspace: no claim either.
        bound = await invite(olga, ws, email=dee.email)
        out = await signup(api, dee.email, bound["token"])
        assert (out["status"], out["code"]) == (409, "email_taken")
        assert await status_of(live, dee.email) is UserStatus.SUSPENDED
        listed = (await olga.api.get(f"/api/workspaces/{ws}/invites")).json()
        assert [i["uses"] for i in listed] == [0]


async def test_the_migration_makes_earlier_imports_never_activated_users_pending(
    tmp_path: Path, pg_database: str
) -> None:
    """sqlite 0010 / postgres 0017: a user an earlier import left ``Suspended`` with the
    importer's hash becomes ``Pending``; a suspended user with a password stays suspended."""
    sqlite_url = f"sqlite:///{tmp_path / 'old.db'}"
    for url, version in ((sqlite_url, 10), (pg_database, 17)):
        with trio.fail_after(CEILING):
            async with open_storage(url) as storage:
                imported, _ = await storage.create_user("Old Import", "old@example.com", "x", None)
                suspended, _ = await storage.create_user("Suspended", "sus@example.com", "y", None)
            sql = [
                f"UPDATE users SET status = 'Suspended', password_hash = '{NO_PASSWORD}'"
                f" WHERE id = {imported.id}",
                f"UPDATE users SET status = 'Suspended' WHERE id = {suspended.id}",
                f"DELETE FROM schema_migrations WHERE version = {version}",  # as before it
            ]
            if url == sqlite_url:
                with sqlite3.connect(tmp_path / "old.db") as conn:
                    for statement in sql:
                        conn.execute(statement)
            else:
                with psycopg.connect(url, autocommit=True) as conn:
                    for statement in sql:
                        conn.execute(statement)
            async with open_storage(url) as storage:  # applies the missing migration
                again = await storage.get_users([imported.id, suspended.id])
            assert again[imported.id].status is UserStatus.PENDING, url
            assert again[suspended.id].status is UserStatus.SUSPENDED, url


async def activate(api: Api, database: list[str], email: str) -> User:
    """Activate an imported user through an admin's reset link; signed in."""
    out = await admin_json(database, "reset-password", email)
    token = out["url"].rsplit("/reset-password/", 1)[1]
    r = await api.post(f"/api/password-resets/{token}", json={"password": "their own pass"})
    assert r.status_code == 204, r.text
    r = await api.post("/api/auth/signin", json={"email": email, "password": "their own pass"})
    assert r.status_code == 200, r.text
    return User(Api(api.client, r.json()["token"]), r.json()["user"]["id"], email, {})


async def workspace_names_of(settings: Settings, email: str) -> list[str]:
    async with open_storage(settings.database_url) as storage:
        user = await storage.get_user_by_email(email)
        assert user is not None
        return sorted(w.name for w in await storage.list_workspaces(user.id))


async def test_a_stranger_cannot_add_a_pending_user_to_vouch_for_them(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    database: list[str],
) -> None:
    """The reviewer's takeover: a stranger adds imported bob (Pending) to their own
    workspace, binds an invite to bob's email and signs up with it. Adding a user who is not
    Active is refused with the answer an unknown email gets, so the stranger never manages
    a workspace of bob's: the sign-up is 409 ``email_taken`` and nothing changes."""
    with trio.fail_after(CEILING):
        await import_slack(settings_factory, tmp_path)
        live = settings_factory()
        olga = await api.signup("Olga")
        dee = await api.signup("Dee")
        olgas = await make_workspace(olga, name="Olga's")
        assert (await admin_json(database, "suspend", dee.email))["changed"] is True
        answers = []
        for email in ("bob@example.com", dee.email, "nobody@example.com"):
            r = await olga.api.post(f"/api/workspaces/{olgas}/members", json={"email": email})
            assert r.status_code == 422, r.text
            assert [e["field"] for e in r.json()["errors"]] == ["email"]
            answers.append({k: v for k, v in r.json().items() if k != "instance"})
        # Pending, Suspended and unknown answer alike: nothing more is revealed than before.
        assert answers[0] == answers[1] == answers[2]
        assert await workspace_names_of(live, "bob@example.com") == [WORKSPACE]
        members = (await olga.api.get(f"/api/workspaces/{olgas}/members")).json()
        assert [m["user"]["id"] for m in members] == [olga.id]

        bound = await invite(olga, olgas, email="bob@example.com")
        out = await signup(api, "bob@example.com", bound["token"], name="Mallory")
        assert (out["status"], out["code"]) == (409, "email_taken")
        assert await status_of(live, "bob@example.com") is UserStatus.PENDING
        assert await workspace_names_of(live, "bob@example.com") == [WORKSPACE]
        async with open_storage(live.database_url) as storage:
            bob = await storage.get_user_by_email("bob@example.com")
            assert bob is not None
            assert bob.fullname == "Bob"
        listed = (await olga.api.get(f"/api/workspaces/{olgas}/invites")).json()
        assert [i["uses"] for i in listed] == [0]


async def test_an_invite_whose_creator_is_no_longer_active_claims_nothing(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    database: list[str],
) -> None:
    """The invite's creator vouches only while Active: ada (the imported workspace's owner)
    binds an invite to bob's email and is then suspended — bob's sign-up is 409."""
    with trio.fail_after(CEILING):
        imported = await import_slack(settings_factory, tmp_path)
        live = settings_factory()
        ada = await activate(api, database, "ada@example.com")
        bound = await invite(ada, imported, email="bob@example.com")
        assert (await admin_json(database, "suspend", "ada@example.com"))["changed"] is True
        out = await signup(api, "bob@example.com", bound["token"])
        assert (out["status"], out["code"]) == (409, "email_taken")
        assert await status_of(live, "bob@example.com") is UserStatus.PENDING
        # Reactivated, she vouches again: the same invite claims the account.
        assert (await admin_json(database, "reactivate", "ada@example.com"))["changed"] is True
        out = await signup(api, "bob@example.com", bound["token"])
        assert out["status"] == 201, out
        assert await status_of(live, "bob@example.com") is UserStatus.ACTIVE


async def test_a_claim_spends_the_users_live_reset_links(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    database: list[str],
) -> None:
    """A link issued before the claim stops working with it (the claim sets the password):
    whoever holds the link cannot take the claimed account back."""
    with trio.fail_after(CEILING):
        imported = await import_slack(settings_factory, tmp_path)
        ada = await activate(api, database, "ada@example.com")
        out = await admin_json(database, "reset-password", "bob@example.com")
        link = out["url"].rsplit("/reset-password/", 1)[1]
        assert (await api.get(f"/api/password-resets/{link}")).status_code == 204
        bound = await invite(ada, imported, email="bob@example.com")
        out = await signup(api, "bob@example.com", bound["token"])
        assert out["status"] == 201, out
        r = await api.get(f"/api/password-resets/{link}")
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "reset_link_not_found"
        r = await api.post(f"/api/password-resets/{link}", json={"password": "taken back!"})
        assert r.status_code == 404, r.text
        assert await sign_in(api, "bob@example.com", "a new password") == 200
        assert await sign_in(api, "bob@example.com", "taken back!") == 401


@pytest.mark.parametrize(
    "email",
    ["x@slack-import.invalid", "U1@Slack-Import.INVALID", "slack-bot@slack-import.invalid."],
)
async def test_no_account_or_bound_invite_gets_a_reserved_invalid_email(
    api: Api, database: list[str], email: str
) -> None:
    """RFC 2606 reserves ``.invalid``; the Slack import's placeholders live there, so
    sign-up, an invite's bound email and ``admin create-user`` refuse it, naming email."""
    with trio.fail_after(CEILING):
        out = await signup(api, email)
        assert out["status"] == 422, out
        assert [e["field"] for e in out["errors"]] == ["email"]
        owner = await api.signup("Olga")
        ws = await make_workspace(owner)
        r = await owner.api.post(f"/api/workspaces/{ws}/invites", json={"email": email})
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == ["email"]
        done = await fechatter("admin", "create-user", email, "Placeholder", *database)
        one_line_refusal(done, "fechatter admin: email: must not be under the reserved .invalid")
        out = await signup(api, "someone@invalid.example.com")  # only the TLD is reserved
        assert out["status"] == 201, out


async def test_the_slack_import_never_matches_a_placeholder_address(
    settings_factory: Callable[..., Settings], tmp_path: Path, database: list[str]
) -> None:
    """An account already holding a placeholder address (older data; no account can get one
    now) is not the imported user: the import creates a new one under a free address."""
    with trio.fail_after(CEILING):
        live = settings_factory()
        async with open_storage(live.database_url) as storage:
            squatter, _ = await storage.create_user(
                "Squatter", "b1@slack-import.invalid", "x", None
            )
        ws = await import_slack(settings_factory, tmp_path)
        statuses = await member_statuses(database, ws)
        assert "b1@slack-import.invalid" not in statuses
        (bot,) = [e for e in statuses if e.startswith("b1")]
        assert re.fullmatch(r"b1\+[0-9a-f]{12}@slack-import\.invalid", bot), bot
        assert statuses[bot] == "Pending"
        async with open_storage(live.database_url) as storage:
            assert await storage.list_workspaces(squatter.id) == []
            again = await storage.get_user_by_email("b1@slack-import.invalid")
            assert again is not None
            assert (again.id, again.fullname) == (squatter.id, "Squatter")


async def test_the_migration_leaves_an_admins_suspension_alone(
    tmp_path: Path, pg_database: str
) -> None:
    """sqlite 0010 / postgres 0017: an imported user an admin reactivated and suspended
    again still holds the importer's hash; an ``admin_audit`` row naming them (by user id
    or by email) keeps them ``Suspended``, while an untouched one becomes ``Pending``."""
    sqlite_url = f"sqlite:///{tmp_path / 'old.db'}"
    for url, version in ((sqlite_url, 10), (pg_database, 17)):
        with trio.fail_after(CEILING):
            async with open_storage(url) as storage:
                by_id, _ = await storage.create_user("By Id", "byid@example.com", "x", None)
                by_email, _ = await storage.create_user("By Mail", "bymail@example.com", "x", None)
                untouched, _ = await storage.create_user("Never", "never@example.com", "x", None)
            ids = (by_id.id, by_email.id, untouched.id)
            sql = [
                f"UPDATE users SET status = 'Suspended', password_hash = '{NO_PASSWORD}'"
                f" WHERE id IN {ids}",
                # As fechatter.domain.admin writes them: reactivate, then suspend again.
                "INSERT INTO admin_audit (at, actor, action, target, details) VALUES"
                " ('2024-01-01T00:00:00Z', 'cli:op', 'reactivate', 'user:byid@example.com',"
                f" '{{\"user_id\": {by_id.id}}}'),"
                " ('2024-01-02T00:00:00Z', 'cli:op', 'suspend', 'user:byid@example.com',"
                f" '{{\"user_id\": {by_id.id}}}'),"
                " ('2024-01-02T00:00:00Z', 'cli:op', 'suspend', 'user:bymail@example.com', '{}'),"
                # Another action naming the untouched user does not count.
                " ('2024-01-03T00:00:00Z', 'cli:op', 'reset-password-link',"
                f" 'user:never@example.com', '{{\"user_id\": {untouched.id}}}')",
                f"DELETE FROM schema_migrations WHERE version = {version}",  # as before it
            ]
            if url == sqlite_url:
                with sqlite3.connect(tmp_path / "old.db") as conn:
                    for statement in sql:
                        conn.execute(statement)
            else:
                with psycopg.connect(url, autocommit=True) as conn:
                    for statement in sql:
                        conn.execute(statement)
            async with open_storage(url) as storage:  # applies the missing migration
                again = await storage.get_users(list(ids))
            assert again[by_id.id].status is UserStatus.SUSPENDED, url
            assert again[by_email.id].status is UserStatus.SUSPENDED, url
            assert again[untouched.id].status is UserStatus.PENDING, url
