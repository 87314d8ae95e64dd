"""NATS and PostgreSQL restarted under load (issue 13, docs/cluster.md §10 "Built: NATS and
PostgreSQL outages"): three nodes in this process (``ClusterHarness``), each owning one busy
chat; concurrent senders with ``client_id``s through every node and SSE/WebSocket streams on
every node. The NATS test stops a NATS server of its own and starts it again (same port and
JetStream store); the PostgreSQL test does the same with a PostgreSQL server of its own (the
session's is shared by every test and not stopped). Correctness is asserted under generous
ceilings; the recovery seconds are measured and printed (``pytest -s``), never asserted."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from fechatter.bus import BusState
from tests.cluster.harness import ClusterHarness, RunningNode, open_cluster_harness
from tests.cluster.test_failover import Progress, assert_gapless_once, lease_of, stored_messages
from tests.conftest import Api, User, make_workspace
from tests.nats import NatsServer
from tests.pg import PgServer
from tests.realtime.clients import RawWs, SseClient

pytestmark = pytest.mark.slow  # each test holds an outage of seconds (a 5 s row TTL)

START_CEILING = 30.0  # three nodes: storage, NATS, registration each
TEST_CEILING = 75.0  # one whole test, outage included, on 2 shared cores
CALL_TIMEOUT = 10.0  # Settings.actor_call_timeout (default): no answer may take longer …
ANSWER_SLACK = 3.0  # … than this beyond it (2 shared cores)
ACK_CEILING = 40.0  # one client_id, every retry included, across an outage
DELIVERY_CEILING = 15.0  # stored events reach every stream by then, no further traffic needed
SENDERS = 6
ACKS_BEFORE = 12  # acknowledged sends before the outage starts
RETRY_PACE = 0.1  # seconds: a client's pause after a 503 (its Retry-After, shortened)
PG_OUTAGE = 6.5  # seconds PostgreSQL stays down: longer than the 5 s row TTL, so rows expire
# Every sender is one user spread over nodes: the per-user write limit is not tested here.
NODE_SETTINGS: dict[str, Any] = {"send_rate": 10_000.0, "send_burst": 10_000}
STREAM_ERRORS = (EOFError, ConnectionError, OSError, trio.BrokenResourceError)


@pytest.fixture
def own_nats() -> Iterator[NatsServer]:
    """A NATS server of this test's own: it is stopped and started again."""
    server = NatsServer.create()
    try:
        yield server
    finally:
        server.stop_and_remove()


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A PostgreSQL server of this test's own (≈ 1 s to create): it is stopped and started
    again, which the session's shared server must not be."""
    server = PgServer.create()
    try:
        yield server
    finally:
        server.stop_and_remove()


@asynccontextmanager
async def three_nodes(
    nursery: trio.Nursery, tmp_path: Path, database_url: str, nats_urls: list[str]
) -> AsyncIterator[ClusterHarness]:
    """Three nodes ``n1``…``n3``; node k connects to NATS at ``nats_urls[k - 1]``."""
    prefix = f"t{uuid.uuid4().hex[:10]}"  # a stream of this test's own
    async with open_cluster_harness(nursery, tmp_path, database_url, nats_urls[0]) as harness:
        with trio.fail_after(START_CEILING):
            for url in nats_urls:
                harness.nats_url = url
                await harness.start_node(nats_prefix=prefix, **NODE_SETTINGS)
        yield harness


class Http:
    """One HTTP client per node; ``on(user, node)`` acts as ``user`` through ``node``."""

    def __init__(self, clients: dict[str, httpx.AsyncClient]) -> None:
        self.clients = clients

    def on(self, user: User, node: RunningNode) -> Api:
        return Api(self.clients[node.name], user.api.token)

    async def ready(self, node: RunningNode) -> int:
        return (await self.clients[node.name].get("/ready")).status_code


@asynccontextmanager
async def open_http(nodes: list[RunningNode]) -> AsyncIterator[Http]:
    async with AsyncExitStack() as stack:
        clients = {
            node.name: await stack.enter_async_context(
                httpx.AsyncClient(base_url=node.api_url, timeout=CALL_TIMEOUT * 3)
            )
            for node in nodes
        }
        yield Http(clients)


async def setup_chats(http: Http, nodes: list[RunningNode]) -> tuple[list[User], dict[int, str]]:
    """Four users in one workspace and one group of all of them per node, created through
    that node. Returns the users and ``chat → that node's name``."""
    anon = Api(http.clients[nodes[0].name])
    users = [await anon.signup() for _ in range(4)]
    ws = await make_workspace(users[0], *users[1:])
    owners: dict[int, str] = {}
    for node in nodes:
        r = await http.on(users[0], node).post(
            "/api/chats",
            json={"workspace_id": ws, "type": "Group", "members": [u.id for u in users[1:]]},
        )
        assert r.status_code == 201, r.text
        owners[int(r.json()["id"])] = node.name
    return users, owners


async def take_leases(
    http: Http, user: User, nodes: list[RunningNode], owners: dict[int, str]
) -> dict[str, tuple[int, int]]:
    """Each chat's first send (client_id ``hello<chat>``) through its node in ``owners``,
    which takes the chat's lease there (on demand). Returns ``client_id → (id, seq)``."""
    by_name = {n.name: n for n in nodes}
    hellos = {}
    for chat, name in owners.items():
        cid = f"hello{chat}"
        r = await http.on(user, by_name[name]).post(
            f"/api/chats/{chat}/messages", json={"content": cid, "client_id": cid}
        )
        assert r.status_code == 201, r.text
        hellos[cid] = (r.json()["id"], r.json()["seq"])
    return hellos


# -- the streams ----------------------------------------------------------------------------
@dataclass
class Stream:
    """One member's stream (SSE or WebSocket) on one node, read until cancelled: per chat the
    ``message.created`` seqs in arrival order, arrival times, and any ``resync``."""

    name: str
    user: User
    ws: bool
    url: str
    got: dict[int, list[int]] = field(default_factory=dict)
    ids: set[int] = field(default_factory=set)
    arrived: dict[int, float] = field(default_factory=dict)  # message id -> arrival
    last_id: str | None = None
    resyncs: int = 0
    after_resync: set[int] = field(default_factory=set)

    async def run(self, progress: Progress, *, task_status: trio.TaskStatus[None]) -> None:
        sse: SseClient | None = None
        socket: RawWs | None = None
        if self.ws:
            socket = await RawWs.connect(self.url, self.user.api.token)
            assert (await socket.next_message())["event"] == "ready"
        else:
            sse = await SseClient.connect(self.url, self.user.api.token)
            assert (await sse.next_event()).event == "ready"
        task_status.started()
        try:
            while True:
                if socket is not None:
                    frame = await socket.next_message()
                    self.take(progress, frame.get("id"), frame["event"], frame.get("data"))
                else:
                    assert sse is not None
                    event = await sse.next_event()
                    self.take(progress, event.id, event.event, event.data)
        except STREAM_ERRORS as exc:  # an outage must not end a stream
            raise AssertionError(f"{self.name}: the stream ended ({exc!r})") from exc
        finally:
            with trio.CancelScope(shield=True):
                for stream in (sse, socket):
                    if stream is not None:
                        await stream.aclose()

    def take(self, progress: Progress, event_id: str | None, name: str, data: Any) -> None:
        if event_id:
            self.last_id = event_id
        if name == "resync":
            self.resyncs += 1
        if name == "message.created":
            self.got.setdefault(data["chat_id"], []).append(data["seq"])
            self.ids.add(data["id"])
            self.arrived.setdefault(data["id"], trio.current_time())
            if self.resyncs:
                self.after_resync.add(data["id"])
            progress.notify()


def start_streams(users: list[User], nodes: list[RunningNode]) -> list[Stream]:
    """Two streams per node (SSE and WebSocket), each user on two nodes."""
    streams = []
    for k, node in enumerate(nodes):
        for j, ws in enumerate((False, True)):
            user = users[(2 * k + j) % len(users)]
            kind = "ws" if ws else "sse"
            name = f"u{user.id} {kind}@{node.name}"
            streams.append(Stream(name, user, ws, node.info.realtime_url))
    return streams


async def check_streams(
    streams: list[Stream], final: dict[int, list[dict[str, Any]]], progress: Progress
) -> None:
    """Wait until every stream has the last stored message of each chat (a sentinel), then
    check it got every message once in seq order per chat; a stream told ``resync`` instead
    refetches (``final``) and must have received nothing that is not stored, nothing twice."""
    last = {final[chat][-1]["id"] for chat in final}
    await progress.wait_for(lambda: all(last <= s.ids for s in streams))
    every = {m["id"] for chat in final for m in final[chat]}
    for s in streams:
        if not s.resyncs:
            for chat, messages in final.items():
                assert s.got.get(chat, []) == [int(m["seq"]) for m in messages], s.name
        else:
            for seqs in s.got.values():
                assert len(seqs) == len(set(seqs)), s.name
            assert s.ids <= every, s.name


# -- the senders ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Attempt:
    """One HTTP send: through which node, for which chat, when, and the answer (status 0:
    a transport error; ``code`` the problem's code)."""

    node: str
    chat: int
    client_id: str
    started: float
    ended: float
    status: int
    code: str


@dataclass
class Load:
    """``SENDERS`` concurrent senders, each its own user and chat, each send a fresh
    ``client_id`` through the next node in turn; a 503 or a transport error is retried with
    the same ``client_id`` through the next node after ``RETRY_PACE`` (a client honouring
    Retry-After, shortened), until acknowledged. ``stop`` ends them after the send in hand."""

    http: Http
    nodes: list[RunningNode]
    users: list[User]
    chats: list[int]
    progress: Progress
    attempts: list[Attempt] = field(default_factory=list)
    acks: dict[str, Attempt] = field(default_factory=dict)  # client_id -> its 2xx attempt
    acked_ids: dict[str, tuple[int, int]] = field(default_factory=dict)  # client_id -> id, seq
    stop: trio.Event = field(default_factory=trio.Event)
    round: str = "s"  # client_id prefix: a new round of senders takes new client_ids

    async def sender(self, i: int) -> None:
        user, chat = self.users[i % len(self.users)], self.chats[i % len(self.chats)]
        for k in itertools.count():
            if self.stop.is_set():
                return
            cid = f"{self.round}{i}-{k}"
            first = trio.current_time()
            for turn in itertools.count():
                node = self.nodes[(i + k + turn) % len(self.nodes)]
                started = trio.current_time()
                status, code, body = 0, "", None
                try:
                    r = await self.http.on(user, node).post(
                        f"/api/chats/{chat}/messages", json={"content": cid, "client_id": cid}
                    )
                except httpx.TransportError as exc:
                    code = type(exc).__name__
                else:
                    status, body = r.status_code, r.json()
                    if status == 503:
                        assert "retry-after" in r.headers, r.text
                        code = body.get("code", "")
                    else:
                        assert status in (200, 201), r.text  # never a 500, never a 4xx
                attempt = Attempt(node.name, chat, cid, started, trio.current_time(), status, code)
                self.attempts.append(attempt)
                self.progress.notify()
                if body is not None and status in (200, 201):
                    assert body["client_id"] == cid
                    self.acks[cid] = attempt
                    self.acked_ids[cid] = (body["id"], body["seq"])
                    break
                assert trio.current_time() - first < ACK_CEILING, f"{cid}: no ack"
                await trio.sleep(RETRY_PACE)

    def count(self, since: float, until: float = float("inf"), **match: Any) -> int:
        """Attempts started at or after ``since`` and ended before ``until`` matching
        ``match`` (``node``, ``status``, ``chat`` …)."""
        return sum(
            1
            for a in self.attempts
            if a.started >= since
            and a.ended < until
            and all(getattr(a, key) == value for key, value in match.items())
        )

    def first_ack(self, node: str, since: float, owned: dict[int, str] | None = None) -> float:
        """When the first send started after ``since`` through ``node`` was acknowledged (with
        ``owned``: a forwarded one, for a chat another node owns); inf if none yet."""
        return min(
            (
                a.ended
                for a in self.attempts
                if a.node == node
                and a.started >= since
                and a.status in (200, 201)
                and (owned is None or owned[a.chat] != node)
            ),
            default=float("inf"),
        )


async def check_storage(load: Load, api: Api) -> dict[int, list[dict[str, Any]]]:
    """Every acknowledged message stored once with the id/seq its ack named, seq gapless per
    chat, no client_id twice, nothing stored that no retry of its client_id acknowledged."""
    stored = {chat: await stored_messages(api, chat) for chat in load.chats}
    by_cid = {m["client_id"]: m for chat in load.chats for m in stored[chat]}
    for chat in load.chats:
        assert_gapless_once(stored[chat])
    assert len(by_cid) == sum(len(v) for v in stored.values())
    for cid, (mid, seq) in load.acked_ids.items():
        assert (by_cid[cid]["id"], by_cid[cid]["seq"]) == (mid, seq), cid
    assert set(by_cid) == set(load.acked_ids)
    return stored


def slowest(load: Load) -> float:
    return max(a.ended - a.started for a in load.attempts)


async def send_sentinels(http: Http, user: User, node: RunningNode, chats: list[int]) -> None:
    for chat in chats:
        r = await http.on(user, node).post(f"/api/chats/{chat}/messages", json={"content": "end"})
        assert r.status_code == 201, r.text


# -- NATS -----------------------------------------------------------------------------------
class GatedProxy:
    """A TCP proxy to the NATS server on ``upstream`` (127.0.0.1) for one node. ``close()``
    stops listening (a connect is refused, as by a stopped server: the node's NATS
    connection cannot come back although the server is up); ``open()`` listens again on the
    same port. Live connections end when the server's side does. Start it with
    ``port = await nursery.start(proxy.serve)``."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self._open = trio.Event()
        self._open.set()
        self._listening = trio.CancelScope()

    def close(self) -> None:
        self._open = trio.Event()
        self._listening.cancel()

    def open(self) -> None:
        self._open.set()

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        async with trio.open_nursery() as connections:
            while True:
                await self._open.wait()
                with trio.CancelScope() as self._listening:
                    (listener,) = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
                    async with listener:
                        if not self.port:
                            self.port = listener.socket.getsockname()[1]
                            task_status.started(self.port)
                        while True:
                            down = await listener.accept()
                            connections.start_soon(self._relay, down)

    async def _relay(self, down: trio.SocketStream) -> None:
        async with down:
            try:
                up = await trio.open_tcp_stream("127.0.0.1", self.upstream)
            except OSError:
                return
            async with up, trio.open_nursery() as pipes:
                pipes.start_soon(self._pipe, down, up, pipes.cancel_scope)
                pipes.start_soon(self._pipe, up, down, pipes.cancel_scope)

    @staticmethod
    async def _pipe(
        source: trio.SocketStream, sink: trio.SocketStream, both: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            both.cancel()


def have_all(streams: list[Stream], messages: dict[int, list[dict[str, Any]]]) -> bool:
    every = {m["id"] for chat in messages for m in messages[chat]}
    return all(every <= s.ids for s in streams)


async def wait_have_all(
    progress: Progress, streams: list[Stream], messages: dict[int, list[dict[str, Any]]]
) -> None:
    """Wait until every stream got every message of ``messages``, at most
    ``DELIVERY_CEILING`` seconds with no further traffic; then fail naming what is missing."""
    with trio.move_on_after(DELIVERY_CEILING):
        await progress.wait_for(lambda: have_all(streams, messages))
        return
    every = {(c, m["seq"]): m["id"] for c in messages for m in messages[c]}
    missing = {s.name: sorted(k for k, i in every.items() if i not in s.ids) for s in streams}
    raise AssertionError(f"(chat, seq) not delivered: { {k: v for k, v in missing.items() if v} }")


async def test_nats_restarted_under_load_owners_commit_forwards_503_nothing_lost(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, own_nats: NatsServer
) -> None:
    # Node 3 reaches NATS through a gate: after the restart it stays cut off until the
    # others have published the outage's events, which it must then catch up on by itself.
    gate = GatedProxy(own_nats.port)
    gate_port: int = await nursery.start(gate.serve)
    urls = [own_nats.url, own_nats.url, f"nats://127.0.0.1:{gate_port}"]
    async with (
        three_nodes(nursery, tmp_path, pg_database, urls) as cluster,
        open_http(cluster.nodes) as http,
    ):
        nodes = cluster.nodes
        late = nodes[2]
        with trio.fail_after(TEST_CEILING):
            users, owned = await setup_chats(http, nodes)
            chats = list(owned)
            by_name = {n.name: n for n in nodes}
            progress = Progress()
            streams = start_streams(users, nodes)
            load = Load(http, nodes, users, chats, progress)
            async with trio.open_nursery() as readers:
                for stream in streams:
                    await readers.start(stream.run, progress)
                load.acked_ids.update(await take_leases(http, users[0], nodes, owned))
                leases = {chat: await lease_of(pg_database, chat) for chat in chats}
                for chat, (node_id, _) in leases.items():
                    assert node_id == by_name[owned[chat]].node_id
                async with trio.open_nursery() as senders:
                    for i in range(SENDERS):
                        senders.start_soon(load.sender, i)
                    await progress.wait_for(lambda: len(load.acks) >= ACKS_BEFORE)
                    # A resume point from before the outage (resumed on another node below).
                    early = streams[0]
                    early_id, early_seen = early.last_id, set(early.ids)

                    await trio.to_thread.run_sync(own_nats.stop)
                    stopped = trio.current_time()
                    gate.close()
                    for node in nodes:
                        await node.cluster.bus.wait_state(BusState.RECONNECTING)
                    down = trio.current_time()
                    for node in nodes:
                        assert await http.ready(node) == 503, node.name

                    # Owners still commit (events wait in the outbox); forwards get 503.
                    def outage_seen() -> bool:
                        for chat, owner in owned.items():
                            if load.count(down, node=owner, chat=chat, status=201) < 2:
                                return False
                        return all(load.count(down, node=n.name, status=503) for n in nodes)

                    await progress.wait_for(outage_seen)
                    load.stop.set()  # the sends in hand still end acknowledged (at the owner)
                in_outage = [a for a in load.attempts if a.started >= down]
                for a in in_outage:  # the owner's writes committed, every forward got 503
                    expected = (200, 201) if owned[a.chat] == a.node else (503,)
                    assert a.status in expected, a
                    if a.status == 503:
                        assert a.code == "chat_unavailable", a
                for chat in chats:  # nobody took a chat: every node lacks NATS
                    assert await lease_of(pg_database, chat) == leases[chat]
                outage = {c: await stored_messages(http.on(users[0], nodes[0]), c) for c in chats}
                restart = trio.current_time()
                await trio.to_thread.run_sync(own_nats.start)
                back = trio.current_time()
                early_nodes = [n for n in nodes if n is not late]
                for node in early_nodes:
                    await node.cluster.bus.wait_state(BusState.CONNECTED)
                connected = trio.current_time()
                for node in early_nodes:
                    assert await http.ready(node) == 200, node.name
                assert await http.ready(late) == 503
                # The outage's events of the chats whose owner has NATS reach their streams
                # from the outbox, with no further traffic.
                theirs = {c: m for c, m in outage.items() if owned[c] != late.name}
                near = [s for s in streams if s.url != late.info.realtime_url]
                await wait_have_all(progress, near, theirs)
                published = trio.current_time()

                gate.open()  # the late node's NATS connection comes back
                reopened = trio.current_time()
                await late.cluster.bus.wait_state(BusState.CONNECTED)
                assert await http.ready(late) == 200
                # Every stream, the late node's included, gets every event of the outage
                # (the late node's own from its outbox, the others' it missed while away)
                # with no further traffic.
                await wait_have_all(progress, streams, outage)
                complete = trio.current_time()

                # Sends through every node work again, forwarded ones included.
                load.stop = trio.Event()
                load.round = "r"
                async with trio.open_nursery() as senders:
                    for i in range(SENDERS):
                        senders.start_soon(load.sender, i)
                    await progress.wait_for(
                        lambda: all(load.first_ack(n.name, complete, owned) < 1e9 for n in nodes)
                    )
                    load.stop.set()

                assert not [a for a in load.attempts if a.status == 0]
                assert slowest(load) < CALL_TIMEOUT + ANSWER_SLACK
                await check_storage(load, http.on(users[0], nodes[1]))
                await send_sentinels(http, users[1], nodes[2], chats)
                final = {c: await stored_messages(http.on(users[0], nodes[0]), c) for c in chats}
                await check_streams(streams, final, progress)

                # A stream resumed on another node from an id given before the outage gets
                # exactly what it missed (or resync).
                assert early_id is not None
                resumed = Stream("resumed", early.user, False, nodes[1].info.realtime_url)
                sse = await SseClient.connect(
                    resumed.url, early.user.api.token, last_event_id=early_id
                )
                try:
                    want = {m["id"] for c in chats for m in final[c]} - early_seen
                    while not resumed.resyncs and not want <= resumed.ids:
                        event = await sse.next_event()
                        resumed.take(progress, event.id, event.event, event.data)
                finally:
                    await sse.aclose()
                if not resumed.resyncs:
                    assert resumed.ids == want
                    for seqs in resumed.got.values():
                        assert seqs == sorted(set(seqs)), seqs
                readers.cancel_scope.cancel()

    per_stream = [min((t for t in s.arrived.values() if t >= back), default=-1) for s in streams]
    forwarded = {n.name: load.first_ack(n.name, complete, owned) - complete for n in nodes}
    print(
        f"\nNATS restart: {len(load.acks)} sends acknowledged; in the outage"
        f" ({restart - stopped:.2f} s) {sum(a.status in (200, 201) for a in in_outage)}"
        f" committed at the owner, {sum(a.status == 503 for a in in_outage)} forwarded"
        f" answered 503; slowest answer {slowest(load):.2f} s"
        f"\n  NATS back (start took {back - restart:.2f} s) -> 2 nodes connected"
        f" {connected - back:.2f} s; their outage events on their streams"
        f" {published - back:.2f} s; each stream's first delivery after the restart "
        + ", ".join(f"{t - back:.2f} s" for t in per_stream)
        + f"\n  late node's NATS back -> every stream has every outage event"
        f" {complete - reopened:.2f} s; then the first forwarded 201 through each node "
        + ", ".join(f"{k} {v:.2f} s" for k, v in forwarded.items())
        + f"\n  streams: {sum(not s.resyncs for s in streams)} of {len(streams)} exact"
        f" (resyncs {sum(s.resyncs for s in streams)}); resume from before the outage on"
        f" another node: {'resync' if resumed.resyncs else 'exact'}"
    )


# -- PostgreSQL -----------------------------------------------------------------------------
async def wait_fenced(node: RunningNode) -> None:
    while not node.cluster.self_fenced:
        await node.cluster.wait_changed()


async def wait_registered_again(node: RunningNode, old: str) -> None:
    while node.cluster.node_id == old or node.cluster.self_fenced:
        await node.cluster.wait_changed()


async def test_postgres_restarted_under_load_503_no_partial_write_nodes_come_back(
    nursery: trio.Nursery, tmp_path: Path, own_pg: PgServer, nats_server: NatsServer
) -> None:
    database = own_pg.new_database()
    async with (
        three_nodes(nursery, tmp_path, database, [nats_server.url] * 3) as cluster,
        open_http(cluster.nodes) as http,
    ):
        nodes = cluster.nodes
        with trio.fail_after(TEST_CEILING):
            users, owned = await setup_chats(http, nodes)
            chats = list(owned)
            progress = Progress()
            streams = start_streams(users, nodes)
            load = Load(http, nodes, users, chats, progress)
            old_ids = {n.name: n.node_id for n in nodes}
            async with trio.open_nursery() as readers:
                for stream in streams:
                    await readers.start(stream.run, progress)
                load.acked_ids.update(await take_leases(http, users[0], nodes, owned))
                leases = {chat: await lease_of(database, chat) for chat in chats}
                async with trio.open_nursery() as senders:
                    for i in range(SENDERS):
                        senders.start_soon(load.sender, i)
                    await progress.wait_for(lambda: len(load.acks) >= ACKS_BEFORE)

                    await trio.to_thread.run_sync(own_pg.stop)
                    stopped = trio.current_time()
                    fenced: dict[str, float] = {}
                    async with trio.open_nursery() as waits:
                        for node in nodes:

                            async def fence(node: RunningNode = node) -> None:
                                await wait_fenced(node)
                                fenced[node.name] = trio.current_time() - stopped

                            waits.start_soon(fence)
                    for node in nodes:
                        assert await http.ready(node) == 503, node.name
                    await progress.wait_for(
                        lambda: all(load.count(stopped, node=n.name, status=503) for n in nodes)
                    )
                    # The outage lasts past the row TTL (its length is the scenario), so every
                    # node's row expires and it must register again under a new id.
                    await trio.sleep_until(stopped + PG_OUTAGE)
                    restart = trio.current_time()
                    await trio.to_thread.run_sync(own_pg.start)
                    back = trio.current_time()
                    registered: dict[str, float] = {}
                    acked: dict[str, float] = {}
                    async with trio.open_nursery() as waits:
                        for node in nodes:

                            async def again(node: RunningNode = node) -> None:
                                await wait_registered_again(node, old_ids[node.name])
                                registered[node.name] = trio.current_time() - back

                            waits.start_soon(again)
                    await progress.wait_for(
                        lambda: all(load.first_ack(n.name, back) < 1e9 for n in nodes)
                    )
                    for node in nodes:
                        acked[node.name] = load.first_ack(node.name, back) - back
                        assert await http.ready(node) == 200, node.name
                    load.stop.set()

                # In the outage every send was answered 503 (with Retry-After), none hung.
                for a in load.attempts:
                    if a.started >= stopped and a.ended < restart:
                        assert a.status == 503, a
                assert not [a for a in load.attempts if a.status == 0]
                assert slowest(load) < CALL_TIMEOUT + ANSWER_SLACK
                await check_storage(load, http.on(users[0], nodes[1]))
                # The chats were acquired again: by a node under its new id, a newer epoch.
                live = {n.node_id for n in nodes}
                assert not live & set(old_ids.values())
                for chat in chats:
                    owner, epoch = await lease_of(database, chat)
                    assert owner in live, owner
                    assert epoch > leases[chat][1], epoch
                await send_sentinels(http, users[1], nodes[2], chats)
                final = {c: await stored_messages(http.on(users[0], nodes[0]), c) for c in chats}
                await check_streams(streams, final, progress)
                readers.cancel_scope.cancel()

    codes = Counter(a.code for a in load.attempts if a.status == 503)
    print(
        f"\nPostgreSQL restart: {len(load.acks)} sends acknowledged; outage"
        f" {restart - stopped:.2f} s; 503s {dict(codes)}; slowest answer {slowest(load):.2f} s"
        "\n  self-fenced after the stop: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(fenced.items()))
        + f"\n  PostgreSQL back (start took {back - restart:.2f} s) -> registered again "
        + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(registered.items()))
        + "; first 201 through each node "
        + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(acked.items()))
        + f"\n  streams: {sum(not s.resyncs for s in streams)} of {len(streams)} exact"
        f" (resyncs {sum(s.resyncs for s in streams)})"
    )
