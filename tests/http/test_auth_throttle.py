"""Sign-in throttles, trusted proxies and load shedding in front of password hashing, over HTTP.

Issue 9 kind 6: 100 wrong passwords for one account were all answered, and clients looping
bogus sign-ins starved real ones. Shedding is tested by admission (hash threads held at a gate),
never by timing.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from fechatter.app import serve
from fechatter.auth import Authenticator
from fechatter.config import Settings
from tests.conftest import TEST_SECRET, Api
from tests.hashing import GatedHasher

StartApi = Callable[..., Awaitable[Api]]
_emails = itertools.count(1)


@pytest.fixture
async def start_api(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> AsyncIterator[StartApi]:
    """``await start_api(authenticator=None, **settings)``: a server of its own, and a client."""
    shutdown = trio.Event()
    async with AsyncExitStack() as clients:

        async def start(authenticator: Authenticator | None = None, **overrides: Any) -> Api:
            settings = settings_factory(**overrides)
            info = await nursery.start(
                partial(serve, settings, shutdown, authenticator=authenticator)
            )
            client = httpx.AsyncClient(base_url=info.api_url, timeout=10)
            return Api(await clients.enter_async_context(client))

        yield start
    shutdown.set()


def fresh_email() -> str:
    return f"nobody{next(_emails)}@example.com"


async def signin(api: Api, email: str, password: str, xff: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    return await api.post(
        "/api/auth/signin", json={"email": email, "password": password}, headers=headers
    )


def assert_throttled(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "too_many_attempts"
    assert int(r.headers["retry-after"]) >= 1


@pytest.mark.single_process(
    reason=(
        "exact counts of one process's throttle; in a cluster each node enforces its "
        "share of it (docs/api.md, "
        "tests/cluster/test_presence.py::test_each_node_enforces_its_share_of_the_sign_in_throttle)"
    )
)
async def test_hundred_wrong_passwords_are_not_all_answered(api: Api) -> None:
    """The issue's example, with the default limits (10 failures per account)."""
    user = await api.signup()
    with trio.fail_after(30):
        codes = [(await signin(api, user.email, f"guess {i}")).status_code for i in range(100)]
    assert codes == [401] * 10 + [429] * 90
    # Throttled means throttled: the right password does not get through either.
    assert_throttled(await signin(api, user.email, "correct horse"))


async def test_throttle_reads_the_same_for_unknown_and_known_emails(start_api: StartApi) -> None:
    api = await start_api(signin_account_burst=3, signin_account_interval=3600)
    user = await api.signup()
    ghost = fresh_email()
    with trio.fail_after(20):
        known = [await signin(api, user.email, "wrong horse") for _ in range(4)]
        unknown = [await signin(api, ghost, "wrong horse") for _ in range(4)]
    assert [r.status_code for r in known] == [r.status_code for r in unknown] == [401] * 3 + [429]
    for a, b in zip(known, unknown, strict=True):
        assert a.json() == b.json()
        assert sorted(a.headers.keys()) == sorted(b.headers.keys())
    assert_throttled(known[3])
    # Counted per account whatever its spelling: case and NFKC forms share one allowance.
    assert_throttled(await signin(api, user.email.upper(), "wrong horse"))
    fullwidth = "\uff55" + user.email[1:]  # U+FF55 FULLWIDTH SMALL U; NFKC makes it "u"
    assert user.email.startswith("u")
    assert_throttled(await signin(api, fullwidth, "wrong horse"))
    assert_throttled(await signin(api, "\u200b" + user.email, "wrong horse"))
    # Another account from the same address is not affected.
    other = await api.signup()
    assert (await signin(api, other.email, "correct horse")).status_code == 200


async def test_successful_signin_resets_the_account(start_api: StartApi) -> None:
    api = await start_api(signin_account_burst=3, signin_account_interval=3600)
    user = await api.signup()
    with trio.fail_after(20):
        for _ in range(2):
            assert (await signin(api, user.email, "wrong horse")).status_code == 401
        assert (await signin(api, user.email, "correct horse")).status_code == 200
        codes = [(await signin(api, user.email, "wrong horse")).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]


async def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(start_api: StartApi) -> None:
    api = await start_api(auth_address_burst=2, auth_address_interval=3600)
    with trio.fail_after(20):
        codes = [
            (await signin(api, fresh_email(), "wrong horse", xff=f"203.0.113.{i}")).status_code
            for i in range(1, 5)
        ]
    assert codes == [401, 401, 429, 429]


async def test_trusted_proxy_forwarded_for_names_the_client(start_api: StartApi) -> None:
    # The test client connects from 127.0.0.1: here, that is the trusted proxy.
    api = await start_api(
        trusted_proxies=["127.0.0.0/8"], auth_address_burst=2, auth_address_interval=3600
    )
    with trio.fail_after(20):
        for _ in range(2):
            r = await signin(api, fresh_email(), "wrong horse", xff="203.0.113.7")
            assert r.status_code == 401
        assert_throttled(await signin(api, fresh_email(), "wrong horse", xff="203.0.113.7"))
        # What the client wrote left of its own address changes nothing...
        r = await signin(api, fresh_email(), "wrong horse", xff="198.51.100.1, 203.0.113.7")
        assert_throttled(r)
        # ...and a chain through another trusted proxy still ends at the same client.
        r = await signin(api, fresh_email(), "wrong horse", xff="203.0.113.7, 127.0.0.2")
        assert_throttled(r)
        # Another client behind the same proxy has its own allowance.
        r = await signin(api, fresh_email(), "wrong horse", xff="203.0.113.8")
        assert r.status_code == 401


async def test_failed_refreshes_share_the_address_allowance(start_api: StartApi) -> None:
    api = await start_api(auth_address_burst=3, auth_address_interval=3600)
    user = await api.signup()
    with trio.fail_after(20):
        good = await api.post(
            "/api/auth/refresh", json={"refresh_token": user.auth["refresh_token"]}
        )
        assert good.status_code == 200  # a success costs nothing
        for _ in range(2):
            r = await api.post("/api/auth/refresh", json={"refresh_token": "bogus"})
            assert r.status_code == 401
        assert (await signin(api, fresh_email(), "wrong horse")).status_code == 401
        assert_throttled(await api.post("/api/auth/refresh", json={"refresh_token": "bogus"}))
        assert_throttled(await signin(api, user.email, "correct horse"))


async def test_signups_per_address_count_only_hashed_ones(start_api: StartApi) -> None:
    api = await start_api(signup_address_burst=2, signup_address_interval=3600)
    with trio.fail_after(20):
        bad = await api.post("/api/auth/signup", json={"fullname": "", "email": "x"})
        assert bad.status_code == 422  # refused before hashing: not counted
        await api.signup()
        await api.signup()
        body = {"fullname": "C", "email": fresh_email(), "password": "correct horse"}
        assert_throttled(await api.post("/api/auth/signup", json=body))


async def test_wrong_current_password_draws_on_the_account(start_api: StartApi) -> None:
    api = await start_api(signin_account_burst=2, signin_account_interval=3600)
    user = await api.signup()
    change = {"password": "new horse battery", "current_password": "wrong horse"}
    with trio.fail_after(20):
        for _ in range(2):
            r = await user.api.patch("/api/users/me", json=change)
            assert r.status_code == 422
        assert_throttled(await user.api.patch("/api/users/me", json=change))
        assert_throttled(await signin(api, user.email, "correct horse"))


async def test_full_hash_queue_sheds_with_503_and_the_admitted_succeed(
    start_api: StartApi,
) -> None:
    hasher = GatedHasher()
    auth = Authenticator(
        TEST_SECRET,
        access_ttl=3600,
        refresh_ttl=3600,
        time_cost=1,
        memory_cost=8,
        parallelism=1,
        hash_threads=1,
        hash_queue_max=2,
        password_hasher=hasher,
    )
    api = await start_api(authenticator=auth)
    user = await api.signup()
    send, receive = trio.open_memory_channel[tuple[str, httpx.Response]](10)

    async def signup() -> None:
        body = {"fullname": "Q", "email": fresh_email(), "password": "correct horse"}
        await send.send(("signup", await api.post("/api/auth/signup", json=body)))

    async def sign_in() -> None:
        await send.send(("signin", await signin(api, user.email, "correct horse")))

    responses: list[tuple[str, httpx.Response]] = []
    with trio.fail_after(20):
        try:
            hasher.gate.clear()
            async with trio.open_nursery() as nursery:
                for job in (signup, sign_in, signup, sign_in, signup):
                    nursery.start_soon(job)
                # One request holds the thread and two wait: the other two are answered
                # while the gate is still shut (had they queued, fail_after would fire).
                shed = [await receive.receive() for _ in range(2)]
                hasher.gate.set()
                responses = [await receive.receive() for _ in range(3)]
        finally:
            hasher.gate.set()
    for _, r in shed:
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "auth_busy"
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/problem+json"
    for kind, r in responses:
        assert r.status_code == (201 if kind == "signup" else 200), r.text
    assert auth.hash_statistics().shed == 2
    assert auth.hash_statistics().admitted == 0  # and the next sign-in is admitted again
    assert (await signin(api, user.email, "correct horse")).status_code == 200
