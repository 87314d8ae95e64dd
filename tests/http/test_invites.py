"""Invitations (SPEC §7): create, list without tokens, preview, accept, revoke, sign up.

Every rule of the table is checked here over HTTP on the suite's backend (SQLite, PostgreSQL
or the cluster); concurrent acceptance of a single-use invite with requests truly in flight
together; expiry with an injected clock in ``test_expiry_by_the_injected_clock`` (domain
level over a real SQLite database, no sleeps).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing

from fechatter.actors.system import open_actor_system
from fechatter.domain.invites import Invites, token_hash
from fechatter.domain.workspaces import Workspaces
from fechatter.errors import NotFound
from fechatter.models import Role
from fechatter.storage import open_storage
from tests.conftest import Api, ApiFactory, User, make_workspace

WEEK = 7 * 24 * 3600


async def invite(owner: User, ws: int, **body: Any) -> dict[str, Any]:
    r = await owner.api.post(f"/api/workspaces/{ws}/invites", json=body)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def member_ids(user: User, ws: int) -> list[int]:
    r = await user.api.get(f"/api/workspaces/{ws}/members")
    assert r.status_code == 200, r.text
    return [m["user"]["id"] for m in r.json()]


async def test_create_preview_accept_single_use(api: Api) -> None:
    owner, guest, late = await api.signup("Olga"), await api.signup(), await api.signup()
    ws = await make_workspace(owner, name="Acme")
    before = datetime.now(UTC)
    created = await invite(owner, ws)
    assert set(created) == {"id", "token", "url", "expires_at"}
    assert len(created["token"]) >= 43  # 32 random bytes, base64url
    # Built on the origin the request reached (no public_url set): this server's.
    url = urlsplit(created["url"])
    assert (url.scheme, url.hostname, url.path) == (
        "http",
        api.client.base_url.host,
        f"/invite/{created['token']}",
    )
    expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=WEEK - 60) < expires - before < timedelta(seconds=WEEK + 60)
    token = created["token"]

    r = await api.get(f"/api/invites/{token}")  # no auth
    assert r.status_code == 200, r.text
    assert r.json() == {
        "workspace": {"id": ws, "name": "Acme"},
        "inviter": {"fullname": "Olga"},
        "expires_at": created["expires_at"],
    }
    r = await guest.api.post(f"/api/invites/{token}/accept")
    assert r.status_code == 200, r.text
    assert (r.json()["workspace"]["id"], r.json()["role"]) == (ws, "member")
    assert guest.id in await member_ids(owner, ws)
    # Used up: gone for the preview and for anyone else.
    assert (await api.get(f"/api/invites/{token}")).status_code == 404
    r = await late.api.post(f"/api/invites/{token}/accept")
    assert (r.status_code, r.json()["code"]) == (404, "invite_not_found")
    assert late.id not in await member_ids(owner, ws)
    # The guest again: already a member, 200, nothing used.
    r = await guest.api.post(f"/api/invites/{token}/accept")
    assert (r.status_code, r.json()["role"]) == (200, "member")


async def test_list_never_shows_tokens_and_revoke(api: Api) -> None:
    owner, admin, member = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(owner)
    r = await owner.api.post(
        f"/api/workspaces/{ws}/members", json={"email": admin.email, "role": "admin"}
    )
    assert r.status_code == 201
    await owner.api.post(f"/api/workspaces/{ws}/members", json={"email": member.email})
    one = await invite(owner, ws, email="Someone@Example.com", role="admin", max_uses=1)
    two = await invite(admin, ws, max_uses=5, expires_in=3600)
    r = await admin.api.get(f"/api/workspaces/{ws}/invites")
    assert r.status_code == 200
    listed = r.json()
    assert [i["id"] for i in listed] == [one["id"], two["id"]]
    for row in listed:
        assert set(row) == {"id", "email", "role", "uses", "max_uses", "expires_at", "created_by"}
    assert one["token"] not in r.text
    assert two["token"] not in r.text
    assert (listed[0]["email"], listed[0]["role"], listed[0]["created_by"]) == (
        "someone@example.com",
        "admin",
        owner.id,
    )
    assert (listed[1]["uses"], listed[1]["max_uses"], listed[1]["created_by"]) == (0, 5, admin.id)
    # Members may not list, create or revoke; outsiders learn nothing.
    assert (await member.api.get(f"/api/workspaces/{ws}/invites")).status_code == 403
    assert (await member.api.post(f"/api/workspaces/{ws}/invites", json={})).status_code == 403
    r = await member.api.delete(f"/api/workspaces/{ws}/invites/{two['id']}")
    assert r.status_code == 403
    outsider = await api.signup()
    assert (await outsider.api.get(f"/api/workspaces/{ws}/invites")).status_code == 404
    assert (await outsider.api.post(f"/api/workspaces/{ws}/invites", json={})).status_code == 404
    # Revoke: 204, then the link is dead; twice or another workspace's id: 404.
    assert (await admin.api.delete(f"/api/workspaces/{ws}/invites/{two['id']}")).status_code == 204
    assert (await api.get(f"/api/invites/{two['token']}")).status_code == 404
    r = await outsider.api.post(f"/api/invites/{two['token']}/accept")
    assert r.status_code == 404
    r = await owner.api.delete(f"/api/workspaces/{ws}/invites/{two['id']}")
    assert (r.status_code, r.json()["code"]) == (404, "invite_not_found")
    other_ws = await make_workspace(owner)
    r = await owner.api.delete(f"/api/workspaces/{other_ws}/invites/{one['id']}")
    assert r.status_code == 404
    r = await owner.api.get(f"/api/workspaces/{ws}/invites")
    assert [i["id"] for i in r.json()] == [one["id"]]


async def test_who_may_invite_and_as_what(api: Api) -> None:
    owner, admin = await api.signup(), await api.signup()
    ws = await make_workspace(owner)
    body = {"email": admin.email, "role": "admin"}
    assert (await owner.api.post(f"/api/workspaces/{ws}/members", json=body)).status_code == 201
    r = await admin.api.post(f"/api/workspaces/{ws}/invites", json={"role": "admin"})
    assert (r.status_code, r.json()["code"]) == (403, "not_workspace_owner")
    assert (await admin.api.post(f"/api/workspaces/{ws}/invites", json={})).status_code == 201
    created = await invite(owner, ws, role="admin")
    newcomer = await api.signup()
    r = await newcomer.api.post(f"/api/invites/{created['token']}/accept")
    assert (r.status_code, r.json()["role"]) == (200, "admin")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_uses": 0}, "max_uses"),
        ({"max_uses": 1001}, "max_uses"),
        ({"max_uses": "2"}, "max_uses"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 30 * 24 * 3600 + 1}, "expires_in"),
        ({"role": "owner"}, "role"),
        ({"email": "not an email"}, "email"),
    ],
)
async def test_bad_invite_bodies_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    owner = await api.signup()
    ws = await make_workspace(owner)
    r = await owner.api.post(f"/api/workspaces/{ws}/invites", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == [field]


async def test_limits_at_the_edges_are_accepted(api: Api) -> None:
    owner = await api.signup()
    ws = await make_workspace(owner)
    await invite(owner, ws, max_uses=1000, expires_in=30 * 24 * 3600)
    await invite(owner, ws, max_uses=1, expires_in=1)


async def test_unknown_and_malformed_tokens_are_404(api: Api) -> None:
    user = await api.signup()
    for token in ("x" * 43, "no$such", "a" * 200):
        r = await api.get(f"/api/invites/{token}")
        assert (r.status_code, r.json()["code"]) == (404, "invite_not_found"), token
        r = await user.api.post(f"/api/invites/{token}/accept")
        assert r.status_code == 404
    r = await api.post("/api/invites/whatever/accept")  # not signed in
    assert r.status_code == 401


async def test_email_bound_invite(api: Api) -> None:
    owner, bound, other = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(owner)
    created = await invite(owner, ws, email=bound.email.upper())
    r = await other.api.post(f"/api/invites/{created['token']}/accept")
    assert (r.status_code, r.json()["code"]) == (404, "invite_not_found")
    r = await bound.api.post(f"/api/invites/{created['token']}/accept")
    assert r.status_code == 200
    assert set(await member_ids(owner, ws)) == {owner.id, bound.id}


async def test_already_member_uses_nothing(api: Api) -> None:
    owner, member, newcomer = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(owner, member)
    created = await invite(owner, ws)
    for who, role in ((owner, "owner"), (member, "member")):
        r = await who.api.post(f"/api/invites/{created['token']}/accept")
        assert (r.status_code, r.json()["role"]) == (200, role)
    r = await owner.api.get(f"/api/workspaces/{ws}/invites")
    assert r.json()[0]["uses"] == 0
    r = await newcomer.api.post(f"/api/invites/{created['token']}/accept")
    assert r.status_code == 200


async def test_multi_use_counts_and_stops(api: Api) -> None:
    owner = await api.signup()
    ws = await make_workspace(owner)
    created = await invite(owner, ws, max_uses=2)
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    assert (await a.api.post(f"/api/invites/{created['token']}/accept")).status_code == 200
    assert (await b.api.post(f"/api/invites/{created['token']}/accept")).status_code == 200
    assert (await c.api.post(f"/api/invites/{created['token']}/accept")).status_code == 404
    r = await owner.api.get(f"/api/workspaces/{ws}/invites")
    assert (r.json()[0]["uses"], r.json()[0]["max_uses"]) == (2, 2)
    assert set(await member_ids(owner, ws)) == {owner.id, a.id, b.id}


async def test_concurrent_accepts_of_a_single_use_invite_admit_one(api: Api) -> None:
    owner = await api.signup()
    ws = await make_workspace(owner)
    rounds, racers = 4, 4
    users = [await api.signup() for _ in range(rounds * racers)]
    with trio.fail_after(30):
        for n in range(rounds):
            created = await invite(owner, ws)
            group = users[n * racers : (n + 1) * racers]
            statuses: dict[int, int] = {}
            # Every request is sent before any answer is read: a start gate opens them at once.
            gate = trio.Event()

            async def accept(
                user: User,
                token: str = created["token"],
                gate: trio.Event = gate,
                statuses: dict[int, int] = statuses,
            ) -> None:
                await gate.wait()
                r = await user.api.post(f"/api/invites/{token}/accept")
                statuses[user.id] = r.status_code

            async with trio.open_nursery() as nursery:
                for user in group:
                    nursery.start_soon(accept, user)
                await trio.testing.wait_all_tasks_blocked()
                gate.set()
            assert sorted(statuses.values()) == [200] + [404] * (racers - 1), statuses
            winners = {uid for uid, status in statuses.items() if status == 200}
            joined = set(await member_ids(owner, ws)) & {u.id for u in group}
            assert joined == winners
    r = await owner.api.get(f"/api/workspaces/{ws}/invites")
    assert [i["uses"] for i in r.json()] == [1] * rounds


async def test_signup_with_invite_token_joins(api: Api) -> None:
    owner = await api.signup()
    ws = await make_workspace(owner, name="Joiners")
    created = await invite(owner, ws, max_uses=3)
    body = {"fullname": "New", "email": "new.person@example.com", "password": "correct horse"}
    r = await api.post("/api/auth/signup", json={**body, "invite_token": created["token"]})
    assert r.status_code == 201, r.text
    token, user_id = r.json()["token"], r.json()["user"]["id"]
    r = await api.get("/api/workspaces", headers={"Authorization": f"Bearer {token}"})
    assert [w["id"] for w in r.json()] == [ws]
    assert user_id in await member_ids(owner, ws)


async def test_signup_with_a_bad_invite_creates_no_account(api: Api) -> None:
    owner = await api.signup()
    ws = await make_workspace(owner)
    bound = await invite(owner, ws, email="bound@example.com")
    body = {"fullname": "Nobody", "email": "free@example.com", "password": "correct horse"}
    for token in ("x" * 43, bound["token"]):  # unknown; bound to another email
        r = await api.post("/api/auth/signup", json={**body, "invite_token": token})
        assert (r.status_code, r.json()["code"]) == (404, "invite_not_found")
    r = await api.post("/api/auth/signup", json={**body, "invite_token": "bad token!"})
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "invite_token")
    r = await api.post(
        "/api/auth/signup", json={**body, "invite_token": bound["token"], "workspace": "W"}
    )
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "invite_token")
    # No account was made by any of them; the bound email may use its invite.
    assert (await api.post("/api/auth/signup", json=body)).status_code == 201
    bound_body = {**body, "email": "Bound@Example.com", "invite_token": bound["token"]}
    r = await api.post("/api/auth/signup", json=bound_body)
    assert r.status_code == 201, r.text
    assert r.json()["user"]["id"] in await member_ids(owner, ws)


async def test_url_uses_the_public_url_setting(api_with: ApiFactory) -> None:
    api = await api_with(public_url="https://chat.example.com/")
    owner = await api.signup()
    ws = await make_workspace(owner)
    created = await invite(owner, ws)
    assert created["url"] == f"https://chat.example.com/invite/{created['token']}"


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("httpx", "httpcore")):
            return  # the test's own client logs the URLs it requests; the server must not
        self.lines.append(logging.Formatter("%(name)s %(message)s").format(record))


@pytest.fixture
def every_log_line() -> Iterator[_Everything]:
    handler, root = _Everything(), logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


async def test_no_log_line_records_a_token(
    api_with: ApiFactory, every_log_line: _Everything
) -> None:
    # With the access log on: the one per-request line (the old DEBUG line is gone).
    api = await api_with(access_log=True)
    owner, guest = await api.signup(), await api.signup()
    ws = await make_workspace(owner)
    created = await invite(owner, ws, max_uses=2)
    token = created["token"]
    assert (await api.get(f"/api/invites/{token}")).status_code == 200
    assert (await api.get(f"/invite/{token}")).status_code == 200  # the landing page
    assert (await guest.api.post(f"/api/invites/{token}/accept")).status_code == 200
    body = {"fullname": "N", "email": "n.logs@example.com", "password": "correct horse"}
    assert (await api.post("/api/auth/signup", json={**body, "invite_token": token})).is_success
    assert every_log_line.lines, "DEBUG logging captured nothing: the check would be vacuous"
    assert not [line for line in every_log_line.lines if token in line]
    assert not [line for line in every_log_line.lines if token_hash(token) in line]


async def test_landing_page_is_the_app(api: Api) -> None:
    r = await api.get("/invite/anything")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["referrer-policy"] == "no-referrer"  # the token never leaves as a Referer
    assert "/static/app.js" in r.text


async def test_expiry_by_the_injected_clock(tmp_path: Path) -> None:
    """Expiry is judged by the domain's clock: moved past ``expires_in``, the preview,
    the accept and a sign-up all answer 404 (real SQLite, no sleeps)."""
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    with trio.fail_after(20):
        async with (
            open_storage(f"sqlite:///{tmp_path / 'x.db'}") as storage,
            open_actor_system(storage) as system,
        ):
            owner, _ = await storage.create_user("O", "o@example.com", "h", "Timely")
            guest, _ = await storage.create_user("G", "g@example.com", "h", None)
            late, _ = await storage.create_user("L", "l@example.com", "h", None)
            ws = (await storage.list_workspaces(owner.id))[0].id
            invites = Invites(
                storage, Workspaces(storage, system.directory), None, clock=lambda: now[0]
            )
            created = await invites.create(
                owner.id, ws, email=None, role=Role.MEMBER, max_uses=5, expires_in=60,
                origin="http://x",
            )  # fmt: skip
            assert created.invite.expires_at == "2030-01-01T00:01:00.000000Z"
            now[0] += timedelta(seconds=59)
            assert (await invites.preview(created.token)).workspace_name == "Timely"
            assert (await invites.accept(created.token, guest)).joined
            now[0] += timedelta(seconds=1)  # exactly at expires_at: expired
            with pytest.raises(NotFound):
                await invites.preview(created.token)
            with pytest.raises(NotFound):
                await invites.accept(created.token, late)
            with pytest.raises(NotFound):
                await invites.create_user("N", "n@example.com", "h", created.token)
            assert await storage.get_user_by_email("n@example.com") is None
            # A member is still answered (nothing used).
            again = await invites.accept(created.token, guest)
            assert (again.joined, again.role) == (False, Role.MEMBER)
            assert [m.user.id for m in await storage.list_workspace_members(ws)] == [
                owner.id,
                guest.id,
            ]
