"""Shared fixtures: a real server (hypercorn on port 0, SQLite file in tmp_path) and clients.

``FECHATTER_TEST_BACKEND`` picks what "the server" is (docs/cluster.md §8 "Built: the suites
on a cluster"):

- ``sqlite`` (default): one process, a SQLite file in tmp_path;
- ``postgres``: one process, a fresh PostgreSQL database (tests/pg.py);
- ``cluster``: three nodes in this process (tests/cluster/harness.py) sharing a fresh
  PostgreSQL database and the session's NATS server under a ``nats_prefix`` of the test's
  own; HTTP goes to node 1, streams to node 2, so every delivery crosses nodes;
- ``cluster-spread``: the same three nodes, each HTTP request to the next node round-robin
  (senders spread over all nodes), streams on node 2;
- ``proxy``: two cluster nodes (PostgreSQL + NATS, as ``cluster``) behind nginx
  (deploy/nginx.conf, tests/deploy/nginx.py) over HTTPS with the tests' ``trustme`` CA:
  ``api_url`` and ``realtime_url`` are nginx's origin, which balances every request and every
  stream over both nodes (docs/deploy.md "Proxy").

Tests that need one process by nature carry the ``single_process`` marker and are skipped in
the cluster modes and ``proxy``; tests whose requests must reach one node carry
``one_api_node`` and are skipped in ``cluster-spread`` and ``proxy`` (the marker's reason
says why); tests whose streams must all reach one node (its per-node counts and caps) carry
``one_stream_node`` and are skipped in ``proxy``; tests whose assertions are
about the server's own listener (raw framing, per-socket limits, peers) carry
``direct_listener`` and are skipped in ``proxy`` mode.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from fechatter.app import ServerInfo, serve
from fechatter.auth import Authenticator
from fechatter.bus.nats import open_nats_bus
from fechatter.cluster.events import stream_name
from fechatter.config import Settings
from tests.nats import nats_server
from tests.pg import pg_database, pg_server
from tests.serverlog import LogWatch, expected_patterns

__all__ = ["nats_server", "pg_database", "pg_server"]  # fixtures, shared by every suite

TEST_SECRET = "test-secret-" + "x" * 40
_counter = itertools.count(1)
BACKENDS = ("sqlite", "postgres", "cluster", "cluster-spread", "proxy")
CLUSTER_NODES = 3
PROXY_NODES = 2  # behind nginx in ``proxy`` mode: deploy/nginx.conf's two upstream servers
CLUSTER_START_CEILING = 30.0  # seconds for three nodes: storage, NATS, registration each


def suite_backend() -> str:
    """``FECHATTER_TEST_BACKEND``, checked: one of ``BACKENDS``."""
    backend = os.environ.get("FECHATTER_TEST_BACKEND", "sqlite")
    if backend not in BACKENDS:
        raise pytest.UsageError(f"FECHATTER_TEST_BACKEND must be one of {BACKENDS}: {backend!r}")
    return backend


def in_cluster_mode() -> bool:
    """The modes whose ``server`` is several nodes of one cluster (PostgreSQL + NATS): the
    ``cluster`` ones and ``proxy`` (two nodes behind nginx)."""
    return suite_backend().startswith("cluster") or suite_backend() == "proxy"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``single_process`` tests in the cluster modes (``proxy`` included),
    ``one_api_node`` tests in ``cluster-spread`` and ``proxy``, and ``one_stream_node`` and
    ``direct_listener`` tests in ``proxy`` (the marker's reason is shown)."""
    marker = item.get_closest_marker("single_process")
    if marker is not None and in_cluster_mode():
        pytest.skip(f"single process only: {marker.kwargs.get('reason', marker.args)}")
    if in_cluster_mode() and "mock_clock" in getattr(item, "fixturenames", ()):
        # Virtual time cannot drive real threads: with autojump on, the nodes' heartbeats
        # and the NATS bridge's timeouts (waits on another thread) would fire at once.
        pytest.skip("single process only: a MockClock test (virtual time) in a cluster mode")
    if suite_backend() == "proxy" and "mock_clock" in getattr(item, "fixturenames", ()):
        # Virtual time cannot drive another process: with autojump on, every wait on nginx
        # would time out at once.
        pytest.skip("direct listener only: a MockClock test (virtual time) behind nginx")
    marker = item.get_closest_marker("one_api_node")
    if marker is not None and suite_backend() in ("cluster-spread", "proxy"):
        pytest.skip(f"one API node only: {marker.kwargs.get('reason', marker.args)}")
    marker = item.get_closest_marker("one_stream_node")
    if marker is not None and suite_backend() == "proxy":
        pytest.skip(f"one streaming node only: {marker.kwargs.get('reason', marker.args)}")
    marker = item.get_closest_marker("direct_listener")
    if marker is not None and suite_backend() == "proxy":
        pytest.skip(f"direct listener only: {marker.kwargs.get('reason', marker.args)}")


@pytest.fixture(autouse=True)
def server_log(request: pytest.FixtureRequest) -> Iterator[LogWatch]:
    """A clean server log is part of passing (see tests/serverlog.py).

    Watches the root logger for the whole test; at teardown, a record at ERROR or above, or
    one carrying a traceback, fails the test unless an ``expect_log_errors`` marker names it.
    Tests that check the log themselves (the fuzzer, per example) call ``take_unexpected``.
    """
    watch = LogWatch()
    root = logging.getLogger()
    root.addHandler(watch)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
    expected = expected_patterns(request.node.iter_markers("expect_log_errors"))
    unexpected = watch.take_unexpected(expected)
    if unexpected:
        pytest.fail(
            "the server log is not clean (mark the test expect_log_errors if intended):\n"
            + "\n".join(unexpected),
            pytrace=False,
        )


def make_settings(tmp_path: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    """Settings for a test server: cheap Argon2, ephemeral port, the test's database.

    The database is a SQLite file in tmp_path unless ``database_url`` names another (the
    ``test_database_url`` fixture: PostgreSQL when ``FECHATTER_TEST_BACKEND=postgres``).
    """
    values: dict[str, Any] = {
        "database_url": database_url or f"sqlite:///{tmp_path / 'fechatter.db'}",
        "port": 0,
        "realtime_port": 0,
        "jwt_secret": TEST_SECRET,
        "argon2_time_cost": 1,
        "argon2_memory_cost": 8,
        "argon2_parallelism": 1,
        "shutdown_grace": 2.0,
        "files_dir": tmp_path / "files",
    }
    values.update(overrides)
    return Settings(**values)


@dataclasses.dataclass(frozen=True)
class ClusterServerInfo(ServerInfo):
    """The ``server`` of the cluster modes: node 2's ``ServerInfo`` (streams, its actor
    system, realtime stats, node id) with node 1's ``api_url``; ``api_urls`` are the URLs
    ``api_client`` sends to (node 1 only, or every node round-robin)."""

    api_urls: tuple[str, ...] = ()
    node_urls: tuple[tuple[str, str], ...] = ()  # each node's (api_url, realtime_url)


class RoundRobin(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request to the next of ``urls`` (same path),
    cycling per caller (its ``Authorization`` header; one cycle for anonymous requests).

    Per caller, not one cycle for all: with one shared cycle, three users sending in
    lockstep each land on one node every time, and each node admits a user only its share
    of the write limit (docs/api.md "Rate limits in a cluster"), so a test's burst that fits
    the limit got 429s by the order of its tasks. Each caller still reaches every node in
    turn. The cycles are bounded by the callers of one test (a few users)."""

    def __init__(self, urls: tuple[str, ...]) -> None:
        self._urls = [httpx.URL(u) for u in urls]
        self._cycles: dict[str, itertools.cycle[httpx.URL]] = {}
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        caller = request.headers.get("Authorization", "")
        cycle = self._cycles.get(caller)
        if cycle is None:
            cycle = self._cycles[caller] = itertools.cycle(self._urls)
        target = next(cycle)
        request.url = request.url.copy_with(host=target.host, port=target.port)
        request.headers["Host"] = request.url.netloc.decode("ascii")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class Api:
    """A thin JSON client for one server; ``as_user`` gives an authorised copy."""

    def __init__(self, client: httpx.AsyncClient, token: str | None = None) -> None:
        self.client = client
        self.token = token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers(), **kw.pop("headers", {})}
        return await self.client.request(method, url, headers=headers, **kw)

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", url, **kw)

    async def post(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("POST", url, **kw)

    async def put(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("PUT", url, **kw)

    async def patch(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kw)

    async def delete(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kw)

    async def signup(self, name: str | None = None, workspace: str | None = None) -> User:
        n = next(_counter)
        name = name or f"user{n}"
        body: dict[str, Any] = {
            "fullname": name,
            "email": f"{name}.{n}@example.com",
            "password": "correct horse",
        }
        if workspace:
            body["workspace"] = workspace
        r = await self.client.post("/api/auth/signup", json=body)
        assert r.status_code == 201, r.text
        data = r.json()
        return User(Api(self.client, data["token"]), data["user"]["id"], body["email"], data)


class User:
    """A signed-up user and a client that acts as them."""

    def __init__(self, api: Api, id: int, email: str, auth: dict[str, Any]) -> None:
        self.api = api
        self.id = id
        self.email = email
        self.auth = auth


@pytest.fixture
def test_database_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """This test's server database: SQLite in tmp_path, or a fresh PostgreSQL database."""
    if suite_backend() == "sqlite":
        return f"sqlite:///{tmp_path / 'fechatter.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def settings_factory(
    tmp_path: Path, test_database_url: str, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    """``Settings`` for this test's server(s); in the cluster modes they carry the session's
    NATS URL and a ``nats_prefix`` of this test's own (chat ids restart with each database,
    so a stream must not be shared between tests)."""
    cluster: dict[str, Any] = {}
    if in_cluster_mode():
        nats = request.getfixturevalue("nats_server")
        cluster = {"nats_url": nats.url, "nats_prefix": f"t{uuid.uuid4().hex[:10]}"}
    return lambda **kw: make_settings(tmp_path, test_database_url, **{**cluster, **kw})


@asynccontextmanager
async def running_server(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[ServerInfo]:
    """A server started in ``nursery``, ready to serve; told to shut down on exit.

    In the cluster modes: ``CLUSTER_NODES`` nodes with these settings (ids ``n1``…), seen as
    one ``ClusterServerInfo``; they stop gracefully on exit.
    """
    if suite_backend() == "proxy":
        async with running_proxied(nursery, settings) as proxied_info:
            yield proxied_info
        return
    if in_cluster_mode():
        async with running_cluster(nursery, settings) as cluster_info:
            yield cluster_info
        return
    shutdown = trio.Event()
    info: ServerInfo = await nursery.start(serve, settings, shutdown)
    try:
        yield info
    finally:
        shutdown.set()


@asynccontextmanager
async def running_cluster(
    nursery: trio.Nursery, settings: Settings, count: int = CLUSTER_NODES
) -> AsyncIterator[ClusterServerInfo]:
    """``count`` nodes sharing ``settings``' database and NATS (``running_server``); the
    view is node 2's (streams) with node 1's API."""
    # Imported here: the harness imports this module (make_settings).
    from tests.cluster.harness import ClusterHarness

    assert settings.nats_url is not None, "the cluster modes' settings_factory sets nats_url"
    tmp_path = Path()  # the harness uses it only without base settings: unused here
    harness = ClusterHarness(nursery, tmp_path, settings.database_url, settings.nats_url)
    try:
        with trio.fail_after(CLUSTER_START_CEILING):
            nodes = [await harness.start_node(settings) for _ in range(count)]
        api_urls = tuple(n.api_url for n in nodes)
        if suite_backend() == "cluster":
            api_urls = api_urls[:1]
        view = {f.name: getattr(nodes[1].info, f.name) for f in dataclasses.fields(ServerInfo)}
        view["api_url"] = nodes[0].api_url
        node_urls = tuple((n.api_url, n.info.realtime_url) for n in nodes)
        yield ClusterServerInfo(**view, api_urls=api_urls, node_urls=node_urls)
    finally:
        await harness.aclose()
        await delete_stream(settings.nats_url, settings.nats_prefix)


@asynccontextmanager
async def running_proxied(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[ServerInfo]:
    """Two cluster nodes behind nginx (``running_server`` in ``proxy`` mode), as
    deploy/nginx.conf balances them: ``PROXY_NODES`` nodes' API and streams, any request
    and any stream to either node, no stickiness. The view is ``running_cluster``'s with
    nginx's HTTPS origin as ``api_url`` and ``realtime_url`` (so ``server.system`` and the
    stats are node 2's, though a stream may be on node 1: tests reading them are
    ``single_process``). nginx closes each client connection after its response (the raw
    clients read a refusal to the end of the connection). The nodes trust the proxy's
    address (``trusted_proxies``) so X-Forwarded-For names the client, as docs/deploy.md
    says to configure it."""
    # Imported here: nginx.py imports tests.pg, as this module does; keep the modes apart.
    from tests.deploy.nginx import open_nginx

    settings = settings.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
    async with running_cluster(nursery, settings, PROXY_NODES) as cluster:
        nodes = [
            (url.removeprefix("http://"), realtime.removeprefix("http://"))
            for url, realtime in cluster.node_urls
        ]
        assert settings.files_dir is not None, "make_settings sets files_dir in tmp_path"
        prefix = settings.files_dir.parent / f"nginx-{next(_counter)}"
        # Its ports picked by open_nginx as it starts (a port picked before the nodes started
        # was free for seconds before nginx bound it: open to any process's bind).
        async with open_nginx(prefix, nodes, None, keepalive=False) as proxy:
            yield dataclasses.replace(
                cluster, api_url=proxy.url, realtime_url=proxy.url, api_urls=()
            )


def tls_context(url: str) -> ssl.SSLContext | None:
    """The client context for ``url``: the tests' CA for ``https``, else None."""
    if not url.startswith("https://"):
        return None
    from tests.deploy.nginx import client_ssl_context

    return client_ssl_context()


async def delete_stream(nats_url: str, prefix: str) -> None:
    """Delete the events stream of ``prefix`` once its nodes stopped.

    The session's NATS server is shared by every test: each stream reserves its
    ``max_bytes`` (1 GiB) of JetStream's file store (by default 75 % of the free disk), so a
    few dozen left behind make the next stream creations fail.
    """
    with trio.CancelScope(shield=True), trio.fail_after(10):
        async with open_nats_bus(nats_url, name="fechatter-tests") as bus:
            reply = await bus.request(f"$JS.API.STREAM.DELETE.{stream_name(prefix)}", b"", 5.0)
    assert b'"success":true' in reply.payload, reply.payload


@asynccontextmanager
async def api_client(server: ServerInfo) -> AsyncIterator[Api]:
    """An unauthenticated ``Api`` of ``server``'s HTTP port (in ``cluster-spread`` mode,
    each request to the next node's)."""
    urls = server.api_urls if isinstance(server, ClusterServerInfo) else ()
    transport = RoundRobin(urls) if len(urls) > 1 else None
    verify: ssl.SSLContext | bool = tls_context(server.api_url) or True
    async with httpx.AsyncClient(
        base_url=server.api_url, timeout=10, transport=transport, verify=verify
    ) as c:
        yield Api(c)


@pytest.fixture
async def server(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> AsyncIterator[ServerInfo]:
    async with running_server(nursery, settings_factory()) as info:
        yield info


@pytest.fixture
async def api(server: ServerInfo) -> AsyncIterator[Api]:
    async with api_client(server) as client:
        yield client


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def api_with(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings]
) -> AsyncIterator[ApiFactory]:
    """Start a server with ``Settings`` overrides and get a client of it:
    ``api = await api_with(send_burst=3, send_rate=0.01)`` (a small write limit, say).

    Server and client close when the test ends. The server uses the test's database, so a
    test takes either this or the ``server``/``api`` fixtures, not both.
    """
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Api:
            settings = settings_factory(**overrides)
            info = await stack.enter_async_context(running_server(nursery, settings))
            return await stack.enter_async_context(api_client(info))

        yield start


async def make_workspace(owner: User, *members: User, name: str | None = None) -> int:
    """A workspace owned by ``owner`` with ``members`` added; returns its id."""
    r = await owner.api.post("/api/workspaces", json={"name": name or f"ws{next(_counter)}"})
    assert r.status_code == 201, r.text
    ws_id: int = r.json()["id"]
    for m in members:
        r = await owner.api.post(f"/api/workspaces/{ws_id}/members", json={"email": m.email})
        assert r.status_code == 201, r.text
    return ws_id


async def make_chat(owner: User, ws_id: int, kind: str, *members: User, **extra: Any) -> int:
    body = {"workspace_id": ws_id, "type": kind, "members": [m.id for m in members], **extra}
    if kind in ("PublicChannel", "PrivateChannel") and "name" not in body:
        body["name"] = f"chan{next(_counter)}"
    r = await owner.api.post("/api/chats", json=body)
    assert r.status_code in (200, 201), r.text
    chat_id: int = r.json()["id"]
    return chat_id


async def make_pair(api: Api) -> tuple[User, User, int]:
    """Two users in a fresh workspace and the Single chat between them."""
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    return a, b, await make_chat(a, ws, "Single", b)


async def upload_file(user: User, data: bytes = b"file", name: str = "a.txt") -> str:
    """Upload ``data`` as ``user`` (SPEC §8); the file's URL, for a message's ``files``."""
    r = await user.api.post("/api/files", files={"file": (name, data, "text/plain")})
    assert r.status_code == 201, r.text
    url: str = r.json()["url"]
    return url


def access_token(user_id: int, *, ttl: int, issued_at: float) -> str:
    """An access token signed with the test servers' secret, for chosen times."""
    auth = Authenticator(
        TEST_SECRET,
        access_ttl=ttl,
        refresh_ttl=60,
        time_cost=1,
        memory_cost=8,
        parallelism=1,
        hash_threads=1,
    )
    return auth.issue_access_token(user_id, now=issued_at)
