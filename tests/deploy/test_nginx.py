"""nginx in front of two cluster nodes, for real (issue 18, docs/deploy.md "Proxy"):
``deploy/nginx.conf`` rendered with a ``trustme`` certificate, Debian's nginx as this user,
two ``fechatter serve`` subprocess nodes (PostgreSQL + NATS, tests/cluster/procs.py) behind
it. Through the one HTTPS origin: sign-up, a chat, a send, and the message received live on
an SSE stream and on a WebSocket (with the browser's Origin), a WebSocket ``send`` acked; the
API balanced over both nodes; HTTP redirected to HTTPS; the nodes configured as the template
says (``public_url``, ``public_realtime_url``, ``allowed_origins``, ``trusted_proxies``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import trio
from trio_websocket import open_websocket_url

from fechatter.domain import password_resets
from tests.cluster.procs import NodeProc, open_node_procs
from tests.conftest import Api, User, make_chat, make_workspace, upload_file
from tests.deploy.nginx import POLL, Proxy, Tap, TlsSse, nginx_binary, open_nginx
from tests.nats import NatsServer
from tests.pg import PgServer, bin_dir, free_port
from tests.realtime.schema_check import check_ws_text
from tests.serverlog import problems_in_text

pytestmark = pytest.mark.slow  # two subprocess nodes and nginx

TEST_CEILING = 60.0


Proxied = tuple[Proxy, list[NodeProc], str]


@pytest.fixture
async def proxied(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[tuple[Proxy, list[NodeProc], str, list[Tap]]]:
    """``_proxied`` with a ``Tap`` in front of each node's streams listener (what nginx
    passes a node on a stream request is asserted)."""
    taps: list[Tap] = []
    async with _proxied(nursery, tmp_path, pg_database, nats_server, taps=taps) as running:
        yield (*running, taps)


@asynccontextmanager
async def _proxied(
    nursery: trio.Nursery,
    tmp_path: Path,
    pg_database: str,
    nats_server: NatsServer,
    extra_env: dict[str, str] | None = None,
    taps: list[Tap] | None = None,
) -> AsyncIterator[Proxied]:
    """Two nodes (access log on, configured as the template says; ``extra_env`` adds
    settings) behind the rendered nginx; on exit, neither node logged a problem. With
    ``taps`` (a list to fill), nginx reaches each node's streams listener through a ``Tap``
    (appended in node order)."""
    nginx_binary()  # skip (or fail in CI) before starting nodes when there is no nginx
    tls_port = free_port()
    public = f"https://localhost:{tls_port}"
    env = {
        "FECHATTER_PUBLIC_URL": public,
        "FECHATTER_PUBLIC_REALTIME_URL": public,
        "FECHATTER_ALLOWED_ORIGINS": json.dumps([public]),
        "FECHATTER_TRUSTED_PROXIES": json.dumps(["127.0.0.1"]),
        "FECHATTER_ACCESS_LOG": "true",
        **(extra_env or {}),
    }
    prefix = f"t{uuid.uuid4().hex[:10]}"
    async with open_node_procs(
        nursery, tmp_path, pg_database, nats_server.url, prefix, 2, env=env
    ) as nodes:
        upstreams = [(n.api.removeprefix("http://"), n.realtime.removeprefix("http://"))
                     for n in nodes]  # fmt: skip
        if taps is not None:
            for i, (api, streams) in enumerate(upstreams):
                tap = Tap(streams)
                await nursery.start(tap.serve)
                taps.append(tap)
                upstreams[i] = (api, tap.address)
        async with open_nginx(tmp_path / "nginx", upstreams, tls_port) as proxy:
            yield proxy, nodes, pg_database
    for node in nodes:
        assert problems_in_text(node.text()) == [], node.text()


async def test_https_signup_send_and_both_streams_through_nginx(
    proxied: tuple[Proxy, list[NodeProc], str, list[Tap]], pg_server: PgServer, tmp_path: Path
) -> None:
    proxy, nodes, database, taps = proxied
    with trio.fail_after(TEST_CEILING):
        async with httpx.AsyncClient(
            base_url=proxy.url, verify=proxy.ssl_context, timeout=10
        ) as client:
            # The API is balanced over both nodes (round robin, no stickiness).
            seen = {(await client.get("/api/sse/health")).json()["node_id"] for _ in range(4)}
            assert seen == {n.node_id for n in nodes}
            # nginx passes the client's address on (X-Forwarded-For) and the nodes read it
            # (trusted_proxies: 127.0.0.1, nginx's side): a client on 127.0.0.2 is logged as
            # 127.0.0.2 on both listeners (without the header the node would log nginx's
            # 127.0.0.1; a client's own forged header is to the left of nginx's entry).
            async with httpx.AsyncClient(
                base_url=proxy.url,
                verify=proxy.ssl_context,
                timeout=10,
                transport=httpx.AsyncHTTPTransport(
                    verify=proxy.ssl_context, local_address="127.0.0.2"
                ),
            ) as elsewhere:
                r = await elsewhere.get(
                    "/api/client-config", headers={"X-Forwarded-For": "203.0.113.7"}
                )
                assert r.status_code == 200
            # /metrics is not public (no auth): the proxy hides it.
            assert (await client.get("/metrics")).status_code == 404
            # The page is told to open its stream on the public origin.
            config = (await client.get("/api/client-config")).json()
            assert config == {
                "realtime_url": proxy.url,
                "realtime_ws_url": proxy.url.replace("https://", "wss://"),
            }
            me, you = await Api(client).signup(), await Api(client).signup()
            chat = await make_chat(me, await make_workspace(me, you), "Single", you)
            assert you.api.token is not None
            sse = await TlsSse.connect(proxy, "/api/notifications/events", you.api.token)
            try:
                assert sse.response is not None
                assert sse.response.status_code == 200
                assert dict(sse.response.headers)[b"content-type"].startswith(b"text/event-stream")
                assert (await sse.next_event())[0] == "ready"
                ws_url = proxy.url.replace("https://", "wss://") + (
                    f"/api/notifications/ws?access_token={you.api.token}"
                )
                origin = [(b"Origin", proxy.url.encode())]  # as a browser on the public origin
                async with open_websocket_url(
                    ws_url, proxy.ssl_context, extra_headers=origin
                ) as ws:
                    assert check_ws_text(await ws.get_message())["event"] == "ready"
                    r = await me.api.post(f"/api/chats/{chat}/messages", json={"content": "hi"})
                    assert r.status_code == 201, r.text
                    name, data = await sse.next_event()
                    assert (name, data["content"]) == ("message.created", "hi")
                    frame = check_ws_text(await ws.get_message())
                    assert (frame["event"], frame["data"]["content"]) == ("message.created", "hi")
                    # A WebSocket send through the proxy: acked, and pushed to the SSE stream.
                    op = {"op": "send", "chat_id": chat, "content": "back", "client_id": "c-1"}
                    await ws.send_message(json.dumps(op))
                    frames = [check_ws_text(await ws.get_message()) for _ in range(2)]
                    assert {f["event"] for f in frames} == {"ack", "message.created"}
                    name, data = await sse.next_event()
                    assert (name, data["content"]) == ("message.created", "back")
            finally:
                await sse.aclose()
            # The access log (on here) names the forwarded client, and never a token: the
            # WebSocket's ?access_token= reached a node's log redacted (a stream's line is
            # written when the node sees it close: the WebSocket's close handshake is
            # immediate, the SSE stream's only at its next write).
            forwarded = re.compile(rb"path=/api/client-config .*client=127\.0\.0\.2\b")
            redacted = re.compile(
                rb"path=/api/notifications/ws\?access_token=\[redacted\] status=101"
            )
            for pattern in (forwarded, redacted):
                await _any_node_logs(nodes, pattern)
            logged = "".join(node.text() for node in nodes)
            for token in (me.api.token, you.api.token):
                assert token is not None
                assert token not in logged
            # nginx's own access log: the same secrets, and invite and reset links and a signed
            # file URL, redacted (deploy/nginx.conf's maps and log_format fechatter).
            secrets = await _secret_requests(client, me)
            # A stream request with a body (a node never reads one): its 401, not a 502.
            r = await client.request(
                "GET", "/api/notifications/events", content=b"b" * (512 * 1024)
            )
            assert (r.status_code, r.json()["code"]) == (401, "missing_token")
            # One with a token, a body and its Content-Length streams as any other: nginx
            # passes neither on (proxy_pass_request_body off, Content-Length ""), so the node
            # sees a plain stream request.
            await _streams_despite_a_body(proxy, me, you, chat, taps)
            expected = [
                "/api/notifications/ws?[redacted]",
                *(f" {path} HTTP/1.1" for path in _REDACTED_PATHS),
            ]
            text = await _logged(proxy.access_log, expected)
            for secret in (me.api.token, you.api.token, *secrets):
                assert secret is not None
                assert secret not in text, (secret, text)
        # Plain HTTP is redirected to the same path on HTTPS.
        async with httpx.AsyncClient(base_url=proxy.http_url, timeout=10) as plain:
            r = await plain.get("/api/chats?x=1")
            assert r.status_code == 308
            assert r.headers["location"] == "https://localhost/api/chats?x=1"
        # The PostgreSQL backup recipe of docs/deploy.md while the nodes serve: pg_dump, then
        # pg_restore into an empty database holds the three messages.
        dump = tmp_path / "fechatter.dump"
        await trio.run_process([str(bin_dir() / "pg_dump"), "-Fc", "-f", str(dump), database])
        restored = pg_server.new_database(empty=True)
        try:
            await trio.run_process(
                [str(bin_dir() / "pg_restore"), "--no-owner", "-d", restored, str(dump)]
            )
            with psycopg.connect(restored) as conn:
                row = conn.execute("SELECT count(*) FROM messages").fetchone()
            assert row == (3,)  # "hi", "back" and "with body"
        finally:
            pg_server.drop_database(restored)


async def _streams_despite_a_body(
    proxy: Proxy, sender: User, reader: User, chat: int, taps: list[Tap]
) -> None:
    """An SSE request sent with a 64 KiB body and its ``Content-Length`` through the proxy:
    at the node, a head with neither the body nor a ``Content-Length`` (nginx's pairing of
    ``proxy_pass_request_body off`` with ``proxy_set_header Content-Length ""``); 200,
    ``ready``, and a message sent after it arrives live (callers bound it)."""
    assert reader.api.token is not None
    body = b"b" * (64 * 1024)
    target = "/api/notifications/events?with=body"  # the listener ignores the parameter
    sse = await TlsSse.connect(proxy, target, reader.api.token, body=body)
    try:
        assert sse.response is not None
        assert sse.response.status_code == 200
        assert (await sse.next_event())[0] == "ready"
        # The node answered, so nginx's bytes for this request have passed a tap.
        [sent] = [bytes(s) for tap in taps for s in tap.sent if b"?with=body " in s]
        head, _, after = sent.partition(b"\r\n\r\n")
        assert head.startswith(f"GET {target} HTTP/1.1\r\n".encode()), head
        assert b"\r\ncontent-length:" not in head.lower(), head
        assert after == b"", len(after)  # no body byte either
        r = await sender.api.post(f"/api/chats/{chat}/messages", json={"content": "with body"})
        assert r.status_code == 201, r.text
        name, data = await sse.next_event()
        assert (name, data["content"]) == ("message.created", "with body")
    finally:
        await sse.aclose()


# What nginx's access log shows of ``_secret_requests``' targets.
_REDACTED_PATHS = (
    "/api/invites/[redacted]",
    "/api/invites/[redacted]/accept",
    "/invite/[redacted]",
    "/api/password-resets/[redacted]",
    "/reset-password/[redacted]",
    "/api/users/me?[redacted]",
)


async def _secret_requests(client: httpx.AsyncClient, owner: User) -> list[str]:
    """Requests through the proxy carrying an invite token, a reset token and a signed file
    URL's signature in their targets; the secrets sent (the signature, and the signed URL's
    whole query: nginx redacts a query with a secret parameter as a whole)."""
    ws = await make_workspace(owner)
    r = await owner.api.post(f"/api/workspaces/{ws}/invites", json={})
    assert r.status_code == 201, r.text
    invite = r.json()["token"]
    assert (await client.get(f"/api/invites/{invite}")).status_code == 200
    assert (await client.get(f"/invite/{invite}")).status_code == 200
    r = await client.post(f"/api/invites/{invite}/accept")
    assert r.status_code == 401, r.text  # (anonymous: the token still travelled)
    reset = password_resets.new_token()[0]  # a made-up token is as secret in a log
    assert (await client.get(f"/api/password-resets/{reset}")).status_code == 404
    assert (await client.get(f"/reset-password/{reset}")).status_code == 200
    url = await upload_file(owner)
    r = await owner.api.post("/api/files/sign", json={"urls": [url]})
    assert r.status_code == 200, r.text
    signed = r.json()["urls"][url]
    assert (await client.get(signed)).status_code == 200
    query = urlsplit(signed).query
    signature = dict(p.split("=", 1) for p in query.split("&"))["sig"]
    r = await client.get(f"/api/users/me?access_token={owner.api.token}&limit=1")
    assert r.status_code == 401, r.text  # ignored there, still a secret
    return [invite, reset, signature, query]


async def _logged(path: Path, expected: list[str]) -> str:
    """nginx's access log once it holds every string of ``expected`` (nginx writes a line
    when its request ends, after the answer, and a stream's when the stream does). Polled:
    the writer is another process (callers bound it)."""
    while True:
        log = trio.Path(path)
        text = await log.read_text() if await log.exists() else ""
        if all(s in text for s in expected):
            return text
        await trio.sleep(POLL)


async def _any_node_logs(nodes: list[NodeProc], pattern: re.Pattern[bytes]) -> None:
    """Return once one of ``nodes`` has logged a line matching ``pattern`` (callers bound it)."""
    async with trio.open_nursery() as nursery:
        for node in nodes:

            async def watch(node: NodeProc = node) -> None:
                await node.wait_log(pattern)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)


# Each refusal the streams listener can answer through nginx, fired this many times: one
# counted failure marks a node down for fail_timeout (max_fails=1).
REFUSALS_EACH = 4
WS_UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


async def _raw_status(proxy: Proxy, target: str, headers: str = "") -> int:
    """``GET target`` through the proxy on a raw TLS connection (a refused WebSocket upgrade,
    which httpx cannot send); the status nginx answers."""
    url = httpx.URL(proxy.url)
    assert url.port is not None
    tls = await trio.open_ssl_over_tcp_stream(
        url.host, url.port, ssl_context=proxy.ssl_context, https_compatible=True
    )
    async with tls:
        close = "" if "Upgrade:" in headers else "Connection: close\r\n"
        request = f"GET {target} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n{headers}{close}\r\n"
        await tls.send_all(request.encode())
        head = b""
        while b"\r\n" not in head:
            chunk = await tls.receive_some(65536)
            assert chunk, head
            head += chunk
    return int(head.split(b" ", 2)[1])


async def _streams_on(node: NodeProc, client: httpx.AsyncClient) -> int:
    """The node's open streams (its ``fechatter_realtime_streams`` gauge, read directly)."""
    text = (await client.get(f"{node.api}/metrics")).text
    for line in text.splitlines():
        if line.startswith("fechatter_realtime_streams "):
            return int(float(line.split()[1]))
    raise AssertionError("fechatter_realtime_streams not in /metrics")


@pytest.fixture
async def proxied_one_stream_each(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[Proxied]:
    """As ``proxied``, with one stream per user per node (so a 429 is easy to provoke)."""
    extra = {"FECHATTER_MAX_STREAMS_PER_USER": "1"}
    async with _proxied(nursery, tmp_path, pg_database, nats_server, extra) as running:
        yield running


async def test_stream_refusals_never_mark_a_streams_node_down(
    proxied_one_stream_each: Proxied,
) -> None:
    """The streams upstream keeps ``max_fails=1``: no refusal a client can provoke (401, 403,
    404, 405, 400 ``websocket_upgrade_required``, 429, a refused WebSocket upgrade) may count
    as a failed attempt, or one client could take a streams node out of nginx's list."""
    proxy, nodes, _ = proxied_one_stream_each
    with trio.fail_after(TEST_CEILING):
        async with (
            httpx.AsyncClient(base_url=proxy.url, verify=proxy.ssl_context, timeout=10) as client,
            httpx.AsyncClient(timeout=10) as direct,
        ):
            capped, fresh = await Api(client).signup(), await Api(client).signup()
            assert capped.api.token is not None
            assert fresh.api.token is not None
            events, ws = "/api/notifications/events", "/api/notifications/ws"
            # ``capped`` holds its one stream on each node (least_conn: one here, one there).
            held = [await TlsSse.connect(proxy, events, capped.api.token) for _ in range(2)]
            try:
                for sse in held:
                    assert sse.response is not None
                    assert sse.response.status_code == 200
                    assert (await sse.next_event())[0] == "ready"
                bearer = {"Authorization": f"Bearer {capped.api.token}"}
                upgrade_bad_token = WS_UPGRADE + "Authorization: Bearer not-a-token\r\n"
                upgrade_bad_origin = (
                    WS_UPGRADE
                    + "Origin: https://evil.example\r\n"
                    + f"Authorization: Bearer {capped.api.token}\r\n"
                )
                refusals: list[tuple[str, int, Callable[[], Awaitable[httpx.Response | int]]]] = [
                    ("missing token", 401, lambda: client.get(events)),
                    ("bad token", 401, lambda: client.get(f"{events}?access_token=x.y.z")),
                    ("unknown path", 404, lambda: client.get("/api/notifications/nowhere")),
                    ("POST", 405, lambda: client.post(events, headers=bearer)),
                    ("WS without upgrade", 400, lambda: client.get(ws, headers=bearer)),
                    ("over the per-user cap", 429, lambda: client.get(events, headers=bearer)),
                    ("WS bad token", 401, lambda: _raw_status(proxy, ws, upgrade_bad_token)),
                    ("WS bad origin", 403, lambda: _raw_status(proxy, ws, upgrade_bad_origin)),
                ]
                for name, status, fire in refusals:
                    for _ in range(REFUSALS_EACH):
                        answer = await fire()
                        got = answer if isinstance(answer, int) else answer.status_code
                        assert got == status, (name, got)
                # Both nodes still take streams: two more (another user's) go one to each
                # (least_conn, both nodes at one); a node marked down would get none.
                more = [await TlsSse.connect(proxy, events, fresh.api.token) for _ in range(2)]
                try:
                    for sse in more:
                        assert sse.response is not None
                        assert sse.response.status_code == 200
                        assert (await sse.next_event())[0] == "ready"
                    # The gauge counts a stream just after its ``ready`` went out: read until
                    # all four are counted (another process: polled, within the ceiling).
                    while True:
                        counts = [await _streams_on(node, direct) for node in nodes]
                        if sum(counts) >= 4:
                            break
                        await trio.sleep(POLL)
                    assert counts == [2, 2], counts
                finally:
                    for sse in more:
                        await sse.aclose()
            finally:
                for sse in held:
                    await sse.aclose()
    errors = proxy.error_log.read_text()
    assert "temporarily disabled" not in errors, errors
    assert "no live upstreams" not in errors, errors


async def _metric(node: NodeProc, client: httpx.AsyncClient, name: str) -> float:
    """One unlabelled series of the node's ``/metrics`` (read directly, not through nginx)."""
    text = (await client.get(f"{node.api}/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def _ws_protocol_error(proxy: Proxy, token: str) -> bytes:
    """A WebSocket through the proxy that, once upgraded, sends an unmasked frame (RFC 6455
    §5.1: the node closes with 1002); everything received, to the end of the connection."""
    url = httpx.URL(proxy.url)
    assert url.port is not None
    tls = await trio.open_ssl_over_tcp_stream(
        url.host, url.port, ssl_context=proxy.ssl_context, https_compatible=True
    )
    async with tls:
        request = (
            f"GET /api/notifications/ws HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            f"{WS_UPGRADE}Authorization: Bearer {token}\r\n\r\n"
        )
        await tls.send_all(request.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await tls.receive_some(65536)
            assert chunk, received
            received += chunk
        await tls.send_all(b"\x81\x02hi")  # a client frame without a mask
        while chunk := await tls.receive_some(65536):
            received += chunk
    return received


async def _sse_status(proxy: Proxy, token: str, streams: list[TlsSse]) -> int:
    """Open an SSE stream through the proxy (kept in ``streams`` to be closed); its status."""
    sse = await TlsSse.connect(proxy, "/api/notifications/events", token)
    streams.append(sse)
    assert sse.response is not None
    return sse.response.status_code


@pytest.fixture
async def proxied_one_pending(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[Proxied]:
    """As ``proxied``, with a pending budget of one per node (so a drop is easy to provoke)."""
    extra = {"FECHATTER_MAX_PENDING_CONNECTIONS": "1"}
    async with _proxied(nursery, tmp_path, pg_database, nats_server, extra) as running:
        yield running


# Concurrent stream requests per round while provoking pending-budget drops.
DROP_ROUND = 6


async def test_node_side_closes_never_mark_a_streams_node_down(
    proxied_one_pending: Proxied,
) -> None:
    """The listener's own closes through nginx: SSE streams ended by a revocation, a
    WebSocket closed for a protocol error (1002), and requests cut by the pending budget
    (dropped to make room for a newcomer).
    A request closed without a response is a failed attempt to nginx (``max_fails=1``): the
    node would leave the streams upstream for ``fail_timeout``. Each cut request must get a
    whole answer (503 ``over_capacity``), and the next streams reach both nodes."""
    proxy, nodes, _ = proxied_one_pending
    with trio.fail_after(TEST_CEILING):
        async with (
            httpx.AsyncClient(base_url=proxy.url, verify=proxy.ssl_context, timeout=10) as client,
            httpx.AsyncClient(timeout=10) as direct,
        ):
            user = await Api(client).signup()
            assert user.api.token is not None
            token = user.api.token
            # SSE streams (least_conn over idle nodes: one on each) that the nodes end after
            # a logout everywhere (revocation: each node closes the close-delimited body).
            revoked = await Api(client).signup()
            assert revoked.api.token is not None
            ended: list[TlsSse] = []
            try:
                for _ in range(2):
                    assert await _sse_status(proxy, revoked.api.token, ended) == 200
                    assert (await ended[-1].next_event())[0] == "ready"
                r = await revoked.api.post(
                    "/api/auth/logout",
                    json={"refresh_token": revoked.auth["refresh_token"], "everywhere": True},
                )
                assert r.status_code == 204, r.text
                for sse in ended:
                    with pytest.raises(EOFError):
                        await _events_until_the_end(sse)
            finally:
                for sse in ended:
                    await sse.aclose()
            for _ in range(2):  # least_conn over idle nodes: both get one
                closed = await _ws_protocol_error(proxy, token)
                assert closed.startswith(b"HTTP/1.1 101 "), closed[:200]
                assert re.search(rb"\x88.\x03\xea", closed, re.S), closed  # close 1002
            # Rounds of concurrent stream requests until a node has dropped a pending one
            # (one slot per node: a token check in progress is cut by the next arrival).
            statuses: list[int] = []
            while True:
                streams: list[TlsSse] = []
                try:
                    async with trio.open_nursery() as burst:
                        for _ in range(DROP_ROUND):
                            burst.start_soon(_record_sse, proxy, token, streams, statuses)
                finally:
                    for sse in streams:
                        await sse.aclose()
                dropped = [
                    await _metric(n, direct, "fechatter_realtime_pending_dropped_total")
                    for n in nodes
                ]
                if sum(dropped) >= 1:
                    break
            assert set(statuses) <= {200, 503}, statuses
            assert 503 in statuses, statuses  # the dropped requests' answer
            while True:  # the streams above, closing on the nodes (polled, as above)
                if [await _streams_on(n, direct) for n in nodes] == [0, 0]:
                    break
                await trio.sleep(POLL)
            more: list[TlsSse] = []
            try:
                for _ in range(2):
                    assert await _sse_status(proxy, token, more) == 200
                    assert (await more[-1].next_event())[0] == "ready"
                while True:
                    counts = [await _streams_on(n, direct) for n in nodes]
                    if sum(counts) >= 2:
                        break
                    await trio.sleep(POLL)
                assert counts == [1, 1], counts
            finally:
                for sse in more:
                    await sse.aclose()
    errors = proxy.error_log.read_text()
    assert "temporarily disabled" not in errors, errors
    assert "no live upstreams" not in errors, errors
    assert "upstream prematurely closed" not in errors, errors


async def _events_until_the_end(sse: TlsSse) -> None:
    """Read events until the stream ends (``EOFError``; callers bound it)."""
    while True:
        await sse.next_event()


async def _record_sse(proxy: Proxy, token: str, streams: list[TlsSse], statuses: list[int]) -> None:
    statuses.append(await _sse_status(proxy, token, streams))
