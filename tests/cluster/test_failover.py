"""Failover with real processes (issue 13, docs/cluster.md §10 "Built: failover tests"): three
``fechatter serve`` nodes as subprocesses (``tests/cluster/procs.py``) sharing the session's
PostgreSQL and NATS; one of them is killed (SIGKILL) or frozen (SIGSTOP past its lease) while
it owns busy chats. Correctness is asserted under generous ceilings; the seconds (takeover
gap, delivery gap) are measured and printed (``pytest -s``), never asserted."""

from __future__ import annotations

import itertools
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
import trio

from tests.cluster.procs import NodeProc, open_node_procs
from tests.conftest import Api, User, make_workspace
from tests.nats import NatsServer
from tests.realtime.clients import RawWs, SseClient

pytestmark = pytest.mark.slow  # subprocess nodes, a 5 s lease expiry each

# Correctness ceilings, generous on 2 shared cores (5 s lease expiry included).
TEST_CEILING = 90.0
ACK_CEILING = 40.0  # one send, its retries included, across a takeover
MAX_ATTEMPTS = 30  # tries of one client_id before the test calls the chat stuck
# Every sender here is one user spread over nodes: the per-user write limit is not what these
# tests are about (docs/api.md "Rate limits in a cluster"); lifted so pacing never sleeps.
NODE_ENV = {"FECHATTER_SEND_RATE": "10000", "FECHATTER_SEND_BURST": "10000"}
SENDERS = 6
ACKS_BEFORE_KILL = 30
ACKS_AFTER_KILL = 4  # per chat, of sends started after the kill
STREAM_ERRORS = (EOFError, ConnectionError, OSError, trio.BrokenResourceError)
FENCED = re.compile(rb"cluster node \S+ fenced itself")


@pytest.fixture
async def procs(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[list[NodeProc]]:
    prefix = f"t{uuid.uuid4().hex[:10]}"  # the NATS server is shared by the session
    async with open_node_procs(
        nursery, tmp_path, pg_database, nats_server.url, prefix, 3, env=NODE_ENV
    ) as nodes:
        yield nodes


class Clients:
    """One HTTP client per node; ``on(user, node)`` acts as ``user`` through ``node``."""

    def __init__(self, clients: dict[str, httpx.AsyncClient]) -> None:
        self.clients = clients

    def on(self, user: User, node: NodeProc) -> Api:
        return Api(self.clients[node.name], user.api.token)


@pytest.fixture
async def http(procs: list[NodeProc]) -> AsyncIterator[Clients]:
    async with AsyncExitStack() as stack:
        clients = {
            node.name: await stack.enter_async_context(
                httpx.AsyncClient(base_url=node.api, timeout=ACK_CEILING)
            )
            for node in procs
        }
        yield Clients(clients)


async def lease_of(database_url: str, chat: int) -> tuple[str, int]:
    """The chat's lease row (owner node id, epoch), read straight from PostgreSQL."""

    def read() -> tuple[str, int]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT node_id, epoch FROM chat_leases WHERE chat_id = %s", (chat,)
            ).fetchone()
        assert row is not None
        return str(row[0]), int(row[1])

    return await trio.to_thread.run_sync(read)


async def stored_messages(api: Api, chat: int) -> list[dict[str, Any]]:
    """Every message of ``chat`` through the HTTP API (paged back from the newest), by seq."""
    items: dict[int, dict[str, Any]] = {}
    params: dict[str, int] = {"limit": 200}
    while True:
        r = await api.get(f"/api/chats/{chat}/messages", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        for item in page["items"]:
            items[item["id"]] = item
        if not page["has_more"]:
            return sorted(items.values(), key=lambda m: int(m["seq"]))
        params = {"limit": 200, "before": min(int(i["id"]) for i in page["items"])}


def assert_gapless_once(messages: list[dict[str, Any]]) -> None:
    seqs = [int(m["seq"]) for m in messages]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    dupes = [c for c, n in Counter(m["client_id"] for m in messages).items() if n > 1]
    assert not dupes, dupes


async def setup_chats(
    http: Clients, owner: NodeProc, entry: NodeProc, users: int, chats: int
) -> tuple[list[User], list[int]]:
    """``users`` users in one workspace (signed up through ``entry``) and ``chats`` groups of
    all of them created through ``owner`` (so it owns them from birth)."""
    anon = Api(http.clients[entry.name])
    people = [await anon.signup() for _ in range(users)]
    ws = await make_workspace(people[0], *people[1:])
    ids = []
    for _ in range(chats):
        r = await http.on(people[0], owner).post(
            "/api/chats",
            json={"workspace_id": ws, "type": "Group", "members": [u.id for u in people[1:]]},
        )
        assert r.status_code == 201, r.text
        ids.append(int(r.json()["id"]))
    return people, ids


# -- the streams ----------------------------------------------------------------------------
@dataclass
class Watcher:
    """One member's stream (SSE or WebSocket) and the ``message.created`` events it got:
    per chat, ``(seq, message id)`` in arrival order, and the arrival times (any chat)."""

    name: str
    user: User
    ws: bool
    node: NodeProc
    chats: tuple[int, ...]
    got: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)
    arrived: dict[int, float] = field(default_factory=dict)  # message id -> first arrival
    last_id: str | None = None
    broke_at: float | None = None  # the stream ended under it (its node died)
    reconnected_at: float | None = None  # when it connected again
    resumed_at: float | None = None  # first event after it reconnected
    reconnect_after: trio.Event | None = None  # else it reconnects at once
    outcome: str = ""  # after a reconnect: "exact" or "resync"
    after_resync: set[int] = field(default_factory=set)  # message ids live after resync

    async def _open(self, node: NodeProc) -> tuple[SseClient | None, RawWs | None]:
        if self.ws:
            socket = await RawWs.connect(
                node.realtime, self.user.api.token, last_event_id=self.last_id
            )
            assert (await socket.next_message())["event"] == "ready"
            return None, socket
        sse = await SseClient.connect(
            node.realtime, self.user.api.token, last_event_id=self.last_id
        )
        assert (await sse.next_event()).event == "ready"
        return sse, None

    async def _next(
        self, sse: SseClient | None, socket: RawWs | None
    ) -> tuple[str | None, str, Any]:
        if socket is not None:
            frame = await socket.next_message()
            return frame.get("id"), frame["event"], frame.get("data")
        assert sse is not None
        event = await sse.next_event()
        return event.id, event.event, event.data

    async def run(
        self, progress: Progress, fallback: NodeProc | None, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Read until cancelled; if the stream breaks and ``fallback`` is given, reconnect
        there once with the last event id."""
        sse, socket = await self._open(self.node)
        task_status.started()
        try:
            while True:
                try:
                    event_id, name, data = await self._next(sse, socket)
                except STREAM_ERRORS:
                    assert fallback is not None, f"{self.name} broke"
                    assert self.broke_at is None, f"{self.name} broke twice"
                    self.broke_at = trio.current_time()
                    self.node = fallback
                    await _close(sse, socket)
                    sse, socket = None, None
                    if self.reconnect_after is not None:
                        await self.reconnect_after.wait()
                    self.reconnected_at = trio.current_time()
                    sse, socket = await self._open(fallback)
                    continue
                self._take(progress, event_id, name, data)
        finally:
            with trio.CancelScope(shield=True):
                await _close(sse, socket)

    def _take(self, progress: Progress, event_id: str | None, name: str, data: Any) -> None:
        if event_id:
            self.last_id = event_id
        if self.broke_at is not None and self.resumed_at is None:
            self.resumed_at = trio.current_time()
            self.outcome = "resync" if name == "resync" else "exact"
        if name == "message.created" and data["chat_id"] in self.chats:
            self.got.setdefault(data["chat_id"], []).append((data["seq"], data["id"]))
            self.arrivals.append(trio.current_time())
            self.arrived.setdefault(data["id"], self.arrivals[-1])
            if self.outcome == "resync":
                self.after_resync.add(data["id"])
            progress.notify()

    def ids(self) -> set[int]:
        return {mid for pairs in self.got.values() for _, mid in pairs}


async def _close(sse: SseClient | None, socket: RawWs | None) -> None:
    for stream in (sse, socket):
        if stream is not None:
            await stream.aclose()


class Progress:
    """A condition the test waits on: ``notify`` wakes every ``wait``."""

    def __init__(self) -> None:
        self._changed = trio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, ready: Any) -> None:
        """Return once ``ready()`` is true, re-checked at each ``notify``."""
        while not ready():
            await self._changed.wait()


# -- the senders ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Ack:
    chat: int
    client_id: str
    id: int
    seq: int
    started: float
    acked: float
    status: int
    attempts: int


@dataclass
class Traffic:
    """Concurrent senders (each with its own client_ids) into ``chats`` through every node;
    a failed attempt (connection error or 503) retries the same client_id on another node."""

    http: Clients
    nodes: list[NodeProc]
    progress: Progress
    acks: list[Ack] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    dead: set[str] = field(default_factory=set)  # nodes the "load balancer" skips
    stop: trio.Event = field(default_factory=trio.Event)

    async def sender(self, i: int, user: User, chat: int) -> None:
        for k in itertools.count():
            if self.stop.is_set():
                return
            cid = f"s{i}-{k}"
            started = trio.current_time()
            first = [n for n in self.nodes if n.name not in self.dead]
            node = first[(i + k) % len(first)]
            for attempt in range(1, MAX_ATTEMPTS + 1):
                api = self.http.on(user, node)
                try:
                    r = await api.post(
                        f"/api/chats/{chat}/messages", json={"content": cid, "client_id": cid}
                    )
                except httpx.TransportError as exc:
                    self.failures[type(exc).__name__] += 1
                else:
                    if r.status_code in (200, 201):
                        body = r.json()
                        assert body["client_id"] == cid
                        # 200 (the original) answers a retry of a send that committed: ours,
                        # or the router's own (a forwarded send whose owner died after the
                        # commit, retried at the next owner: docs/api.md, plan step A4).
                        now = trio.current_time()
                        ack = Ack(
                            chat, cid, body["id"], body["seq"], started, now, r.status_code, attempt
                        )
                        self.acks.append(ack)
                        self.progress.notify()
                        break
                    assert r.status_code == 503, r.text
                    assert "retry-after" in r.headers
                    self.failures["503 " + r.json().get("code", "")] += 1
                # Another node: the next in line that is not known dead.
                live = [n for n in self.nodes if n.name not in self.dead and n is not node]
                node = live[(i + k + attempt) % len(live)]
            else:
                raise AssertionError(f"{cid}: no ack in {MAX_ATTEMPTS} attempts: {self.failures}")


async def send_once(api: Api, chat: int, client_id: str) -> Ack:
    """One send that must succeed at the first attempt (201)."""
    started = trio.current_time()
    r = await api.post(
        f"/api/chats/{chat}/messages", json={"content": client_id, "client_id": client_id}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    return Ack(chat, client_id, body["id"], body["seq"], started, trio.current_time(), 201, 1)


def takeover_gaps(acks: list[Ack], chats: list[int], killed: float) -> dict[int, float]:
    """Per chat: last ack before ``killed`` → first ack of a send started after it, seconds."""
    gaps = {}
    for chat in chats:
        before = max(a.acked for a in acks if a.chat == chat and a.acked < killed)
        after = min(a.acked for a in acks if a.chat == chat and a.started >= killed)
        gaps[chat] = after - before
    return gaps


def largest_gap(times: list[float], since: float) -> float:
    """The longest wait between two consecutive arrivals ending after ``since``, seconds."""
    spans = [b - a for a, b in itertools.pairwise(times) if b >= since]
    return max(spans, default=0.0)


W = TypeVar("W", bound=Watcher)


def place_watchers(
    kind: type[W], target: NodeProc, n2: NodeProc, n3: NodeProc, users: list[User], chats: list[int]
) -> tuple[list[W], list[W], trio.Event]:
    """Streams of every member: two per transport kind on ``target`` (the node the test
    kills or stops; they reconnect to a survivor with their last event id), the rest on the
    survivors. Half of ``target``'s reconnect at once (and get live events), half only once
    the returned event is set, when the chats continue elsewhere (they missed events: a
    replay from JetStream, merged with live traffic that keeps flowing)."""
    a, b, c, d = users
    both = tuple(chats)
    name = target.name
    on_target = [
        kind(f"a sse@{name}", a, False, target, both),
        kind(f"b sse@{name}", b, False, target, both),
        kind(f"c ws@{name}", c, True, target, both),
        kind(f"d ws@{name}", d, True, target, both),
    ]
    on_survivors = [
        kind("c sse@n2", c, False, n2, both),
        kind("a ws@n3", a, True, n3, both),
        kind("d sse@n3", d, False, n3, both),
        kind("b ws@n2", b, True, n2, both),
    ]
    taken = trio.Event()
    for watcher in on_target[1::2]:
        watcher.reconnect_after = taken
    return on_target, on_survivors, taken


async def start_watchers(
    streams: trio.Nursery,
    progress: Progress,
    on_target: list[W],
    on_survivors: list[W],
    n2: NodeProc,
    n3: NodeProc,
) -> None:
    """Start every watcher in ``streams``; ``target``'s reconnect to n2 or n3 in turn."""
    for k, watcher in enumerate(on_target):
        await streams.start(watcher.run, progress, (n2, n3)[k % 2])
    for watcher in on_survivors:
        await streams.start(watcher.run, progress, None)


def continued(acks: list[Ack], chats: list[int], since: float) -> bool:
    """Whether every chat had ``ACKS_AFTER_KILL`` sends started after ``since`` acked."""
    after = Counter(a.chat for a in acks if a.started >= since)
    return all(after[chat] >= ACKS_AFTER_KILL for chat in chats)


async def assert_stored_exactly(api: Api, chats: list[int], acks: list[Ack]) -> None:
    """Storage: every acknowledged message once, seq gapless, nothing unacknowledged."""
    stored = {chat: await stored_messages(api, chat) for chat in chats}
    by_cid = {m["client_id"]: m for chat in chats for m in stored[chat]}
    for chat in chats:
        assert_gapless_once(stored[chat])
    assert len(by_cid) == sum(len(v) for v in stored.values())
    for ack in acks:
        m = by_cid[ack.client_id]
        assert (m["chat_id"], m["id"], m["seq"]) == (ack.chat, ack.id, ack.seq)
    assert set(by_cid) == {ack.client_id for ack in acks}


async def sentinels_seen(
    sender: Api, reader: Api, chats: list[int], watchers: list[W], progress: Progress
) -> tuple[dict[int, list[dict[str, Any]]], set[int]]:
    """A sentinel per chat sent by ``sender``; wait until every watcher reached them.
    Returns the stored messages per chat (read by ``reader``) and all their ids."""
    sentinels = [
        (await sender.post(f"/api/chats/{chat}/messages", json={"content": "end"})).json()
        for chat in chats
    ]
    final = {chat: await stored_messages(reader, chat) for chat in chats}
    every = {m["id"] for chat in chats for m in final[chat]}

    def all_seen() -> bool:
        return all({s["id"] for s in sentinels} <= (w.ids() | w.after_resync) for w in watchers)

    await progress.wait_for(all_seen)
    return final, every


async def assert_resumed(
    w: Watcher,
    chats: list[int],
    final: dict[int, list[dict[str, Any]]],
    every: set[int],
    refetch: Api,
) -> None:
    """A stream of the lost node: an exact resume got every event once in seq order per
    chat; after a resync a refetch over HTTP (``refetch``, as the user) ends the same."""
    assert w.broke_at is not None, w.name
    assert w.outcome, w.name
    if w.outcome == "exact":
        for chat in chats:
            got = [s for s, _ in w.got[chat]]
            assert got == [int(m["seq"]) for m in final[chat]], w.name
    else:
        refetched = {m["id"] for chat in chats for m in await stored_messages(refetch, chat)}
        assert refetched | w.after_resync == every, w.name


def assert_every_event_once(
    w: Watcher, chats: list[int], final: dict[int, list[dict[str, Any]]]
) -> None:
    """A survivor's stream: every event once, in seq order per chat."""
    for chat in chats:
        assert [s for s, _ in w.got[chat]] == [int(m["seq"]) for m in final[chat]], w.name


async def test_kill_9_of_a_busy_owner_loses_nothing_and_its_streams_resume_elsewhere(
    procs: list[NodeProc], http: Clients, pg_database: str
) -> None:
    victim, n2, n3 = procs
    with trio.fail_after(TEST_CEILING):
        users, chats = await setup_chats(http, victim, n2, users=4, chats=2)
        progress = Progress()
        a, b = users[:2]
        on_victim, on_survivors, taken = place_watchers(Watcher, victim, n2, n3, users, chats)
        traffic = Traffic(http, procs, progress)
        async with trio.open_nursery() as streams:
            await start_watchers(streams, progress, on_victim, on_survivors, n2, n3)

            # The first send takes the lease (on demand): through the victim, so it owns both.
            for chat in chats:
                hello = await send_once(http.on(a, victim), chat, f"hello{chat}")
                traffic.acks.append(hello)
                assert (await lease_of(pg_database, chat))[0] == victim.node_id

            async with trio.open_nursery() as senders:
                for i in range(SENDERS):
                    senders.start_soon(traffic.sender, i, users[i % 4], chats[i % 2])
                await progress.wait_for(lambda: len(traffic.acks) >= ACKS_BEFORE_KILL)
                victim.kill()
                killed = trio.current_time()
                traffic.dead.add(victim.name)
                await victim.wait()
                await progress.wait_for(lambda: continued(traffic.acks, chats, killed))
                taken.set()
                since = trio.current_time()
                await progress.wait_for(lambda: continued(traffic.acks, chats, since))
                traffic.stop.set()

            await assert_stored_exactly(http.on(a, n2), chats, traffic.acks)
            for chat in chats:
                owner, _ = await lease_of(pg_database, chat)
                assert owner in {n2.node_id, n3.node_id}

            # A sentinel per chat: every stream must reach it, then nothing more comes.
            final, every = await sentinels_seen(
                http.on(b, n3), http.on(a, n3), chats, on_victim + on_survivors, progress
            )
            streams.cancel_scope.cancel()

        for w in on_survivors:
            assert_every_event_once(w, chats, final)
        for w in on_victim:
            await assert_resumed(w, chats, final, every, http.on(w.user, n2))

    for node in (n2, n3):  # the survivors' logs are clean
        assert "Traceback" not in node.text(), node.text()
        assert " ERROR " not in node.text(), node.text()
    gaps = takeover_gaps(traffic.acks, chats, killed)
    exact = sum(w.outcome == "exact" for w in on_victim)
    delivery = max(largest_gap(w.arrivals, killed) for w in on_survivors)
    # Delivered after the kill but before anything sent after it: committed, not yet
    # published when the owner died (outbox leftovers: a survivor's sweeper or the new owner
    # published them).
    fresh = min(w.arrived[a.id] for w in on_survivors for a in traffic.acks if a.started >= killed)
    late = {i: t for w in on_survivors for i, t in w.arrived.items() if killed < t < fresh}
    resumes = [
        f"{w.reconnected_at - killed:.2f} s" for w in on_victim if w.reconnected_at is not None
    ]
    repeats = sum(a.status == 200 for a in traffic.acks)
    inner = sum(a.status == 200 and a.attempts == 1 for a in traffic.acks)
    retried = sum(a.attempts > 1 for a in traffic.acks)
    print(
        f"\nkill -9: {len(traffic.acks)} sends acknowledged, {retried} after a failed attempt;"
        f" {repeats} answered 200 with the original ({inner} at the first attempt: retried"
        f" inside the router); failed attempts {dict(traffic.failures)}"
        "\n  takeover gap per chat (last ack before the kill -> first ack of a send started"
        " after it): " + ", ".join(f"{g:.2f} s" for g in gaps.values()) + ""
        f"\n  survivors' streams: longest delivery gap after the kill {delivery:.2f} s; first"
        f" message sent after the kill delivered at {fresh - killed:.2f} s; {len(late)} messages"
        " committed by the victim were delivered in between (outbox leftovers), the last at"
        f" {max(late.values(), default=killed) - killed:.2f} s"
        f"\n  victim's streams: {exact} exact resumes, {len(on_victim) - exact} resyncs;"
        " reconnected to a survivor " + ", ".join(resumes) + " after the kill"
    )


async def test_a_frozen_owner_wakes_fenced_never_writes_as_a_second_owner_and_retires(
    procs: list[NodeProc], http: Clients, pg_database: str
) -> None:
    frozen, n2, n3 = procs
    with trio.fail_after(TEST_CEILING):
        (a, b, _), (chat,) = await setup_chats(http, frozen, n2, users=3, chats=1)
        progress = Progress()
        watcher = Watcher("b sse@n2", b, False, n2, (chat,))
        acks: list[Ack] = []
        async with trio.open_nursery() as streams:
            await streams.start(watcher.run, progress, None)
            for k, node in enumerate(procs):  # the first takes the lease for the frozen node
                acks.append(await send_once(http.on(a, node), chat, f"m{k}"))
            owner, epoch = await lease_of(pg_database, chat)
            assert owner == frozen.node_id
            body = await frozen.health()
            assert body is not None
            assert body["active_chats"] == 1

            frozen.freeze()
            stopped = trio.current_time()
            # A send that reaches the frozen node waits in its socket; its client gives up
            # waiting and retries the same client_id through a survivor (below).
            late: list[httpx.Response] = []

            async def send_to_frozen() -> None:
                async with httpx.AsyncClient(base_url=frozen.api, timeout=ACK_CEILING) as c:
                    late.append(
                        await Api(c, a.api.token).post(
                            f"/api/chats/{chat}/messages",
                            json={"content": "late", "client_id": "late"},
                        )
                    )

            async with trio.open_nursery() as pending:
                pending.start_soon(send_to_frozen)
                # Its row expires (lease TTL): the survivors stop listing it...
                await n2.wait_live_nodes({n2.node_id, n3.node_id})
                expired = trio.current_time()
                # ...and a send through a survivor takes the chat over.
                acks.append(await send_once(http.on(a, n2), chat, "taken"))
                taken = trio.current_time()
                new_owner, new_epoch = await lease_of(pg_database, chat)
                assert new_owner in {n2.node_id, n3.node_id}
                assert new_epoch > epoch
                acks.append(await send_once(http.on(a, n3), chat, "late"))
                assert not late  # still frozen: nothing answered

                frozen.thaw()
                woke = trio.current_time()
            # The frozen request is answered after the wake, by the new owner: the original.
            (answer,) = late
            while answer.status_code == 503:  # the instant between waking and re-registering
                assert "retry-after" in answer.headers
                answer = await http.on(a, frozen).post(
                    f"/api/chats/{chat}/messages", json={"content": "late", "client_id": "late"}
                )
            assert answer.status_code == 200, answer.text
            assert (answer.json()["id"], answer.json()["seq"]) == (acks[-1].id, acks[-1].seq)
            answered = trio.current_time()
            # A new send through the woken node lands at the new owner.
            acks.append(await send_once(http.on(a, frozen), chat, "after the wake"))
            assert await lease_of(pg_database, chat) == (new_owner, new_epoch)

            # It fenced itself, registered again under a new id and runs no actor any more.
            with trio.fail_after(ACK_CEILING):
                await frozen.wait_log(FENCED)
                body = await frozen.wait_health(lambda body: body["active_chats"] == 0)
            assert body["node_id"] != frozen.node_id
            assert set(body["nodes"]) == {body["node_id"], n2.node_id, n3.node_id}

            stored = await stored_messages(http.on(b, n3), chat)
            assert_gapless_once(stored)
            assert [(m["client_id"], m["id"]) for m in stored] == [
                (k.client_id, k.id) for k in acks
            ]
            await progress.wait_for(lambda: len(watcher.got.get(chat, [])) >= len(stored))
            sentinel = await send_once(http.on(a, n3), chat, "sentinel")
            await progress.wait_for(lambda: sentinel.id in watcher.ids())
            streams.cancel_scope.cancel()
        assert [seq for seq, _ in watcher.got[chat]] == list(range(1, sentinel.seq + 1))

    for node in procs:  # every log is clean, the woken node's too
        assert "Traceback" not in node.text(), node.text()
        assert " ERROR " not in node.text(), node.text()
    print(
        f"\nSIGSTOP: row expired {expired - stopped:.2f} s after the stop; a send through a"
        f" survivor took the chat {taken - stopped:.2f} s after it; the request queued at the"
        f" frozen node was answered (200, the original, by the new owner) {answered - woke:.2f} s"
        " after SIGCONT"
    )
