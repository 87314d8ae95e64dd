"""UserHub: resume bookkeeping, presence grace and coalescing, retention (autojump clock)."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence

import pytest
import trio
import trio.testing

from fechatter.actors.ports import Replay, StreamState
from fechatter.actors.user import HubConfig, UserHub
from fechatter.events import Event
from fechatter.realtime.stream import Stream, StreamLimits, Transport


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _stream(sock: socket.socket, user_id: int, nursery: trio.Nursery) -> Stream:
    return Stream(sock, Transport.SSE, user_id, 1, StreamLimits(), nursery)


async def test_replay_and_resync_rules(
    nursery: trio.Nursery, socket_pair: tuple[socket.socket, socket.socket]
) -> None:
    hub = UserHub(nursery, HubConfig(ring_size=3))
    hub.publish([1], Event("x", {}))  # before user 1 has an actor: not recorded
    before = hub.position
    stream = _stream(socket_pair[0], 1, nursery)
    first = hub.attach(stream, None)
    assert (first.replay, first.resync, first.position) == ([], None, before)
    for n in range(3):
        hub.publish([1, 2], Event("m", {"n": n}))
    hub.detach(stream)
    # From the ready position: all three. From before the actor existed: resync.
    again = hub.attach(stream, first.position)
    assert [e.data["n"] for e in again.replay] == [0, 1, 2]
    hub.detach(stream)
    assert hub.attach(stream, f"{hub.epoch}-0").resync == "history_unavailable"
    hub.detach(stream)
    hub.publish([1], Event("m", {"n": 3}))  # the ring (3) drops n=0
    assert hub.attach(stream, first.position).resync == "history_unavailable"
    hub.detach(stream)
    # Future ids and other epochs are unknown.
    assert hub.attach(stream, f"{hub.epoch}-999").resync == "unknown_event_id"
    hub.detach(stream)
    assert hub.attach(stream, "other-1").resync == "unknown_event_id"


async def test_presence_grace_coalescing_and_retention(
    nursery: trio.Nursery,
    socket_pair: tuple[socket.socket, socket.socket],
    autojump_clock: trio.testing.MockClock,
) -> None:
    announced: list[tuple[int, str]] = []
    config = HubConfig(retention=60, presence_grace=5, presence_flush=0.25)

    async def co_members(user_id: int) -> list[int]:
        return [99]

    hub = UserHub(nursery, config, co_members)
    watcher = _stream(socket_pair[1], 99, nursery)
    hub.attach(watcher, None)

    original_publish = hub.publish

    def record(user_ids: object, event: Event) -> None:
        if event.name == "presence":
            announced.append((event.data["user_id"], event.data["status"]))
        original_publish(user_ids, event)  # type: ignore[arg-type]

    hub.publish = record  # type: ignore[method-assign]
    nursery.start_soon(hub.serve_presence)
    stream = _stream(socket_pair[0], 1, nursery)
    hub.attach(stream, None)
    await trio.sleep(1)
    assert announced == [(1, "online")]
    # A reconnect within the grace period is invisible.
    hub.detach(stream)
    await trio.sleep(2)
    hub.attach(stream, None)
    await trio.sleep(10)
    assert announced == [(1, "online")]
    assert hub.online([1]) == [1]
    # Gone for longer than the grace: offline, but the ring is kept until retention.
    hub.detach(stream)
    await trio.sleep(6)
    assert announced == [(1, "online"), (1, "offline")]
    assert hub.online([1]) == []
    assert hub.statistics().lingering_users == 1
    await trio.sleep(60)
    assert hub.statistics().lingering_users == 0


async def test_a_user_actor_does_not_carry_its_first_streams_log_context(
    nursery: trio.Nursery, socket_pair: tuple[socket.socket, socket.socket]
) -> None:
    """The actor outlives the connection that started it: its task starts in a fresh context,
    so its log lines never name that connection's request or connection id."""
    from fechatter import logs

    hub = UserHub(nursery, HubConfig())
    with logs.bound(request_id="the-first-connection"):
        hub.attach(_stream(socket_pair[0], 7, nursery), None)
    await trio.testing.wait_all_tasks_blocked()
    (task,) = [t for t in nursery.child_tasks if t.name == "UserActor#7"]
    context = task.context.run(logs.current)
    assert context == {"user_id": 7}


class _Recorder:
    """A ``StreamPort`` that keeps what is pushed to it (the port's contract, no socket)."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.security_version = 0
        self.events: list[Event] = []

    def push_event(self, event: Event) -> None:
        self.events.append(event)

    def fail(self, reason: object) -> None:  # pragma: no cover - not exercised here
        raise AssertionError(reason)


class _Routing:
    """A ``UserRouting`` that records the hub's calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.gone = trio.Event()

    async def user_arriving(self, user_id: int) -> None:
        self.calls.append(("arriving", user_id))

    def user_gone(self, user_id: int) -> None:
        self.calls.append(("gone", user_id))
        self.gone.set()

    async def stream_state(self) -> StreamState:
        return StreamState("e", 1, 0)

    async def replay(self, user_id: int, after_seq: int) -> Replay:
        return Replay(resync="history_unavailable")


async def test_resync_tells_the_streams_and_makes_older_ids_unprovable(
    nursery: trio.Nursery,
) -> None:
    hub = UserHub(nursery, HubConfig(ring_size=10))
    stream = _Recorder(1)
    ready = hub.attach(stream, None)
    hub.publish([1], Event("m", {"n": 0}))
    hub.resync([1, 2], "history_unavailable")  # user 2 has no actor: ignored
    assert [(e.name, e.data, e.id) for e in stream.events] == [
        ("m", {"n": 0}, f"{hub.epoch}-1"),
        ("resync", {"reason": "history_unavailable"}, ""),
    ]
    hub.detach(stream)
    assert hub.attach(stream, ready.position).resync == "history_unavailable"
    hub.detach(stream)
    hub.publish([1], Event("m", {"n": 1}))
    after = hub.attach(stream, f"{hub.epoch}-1")
    assert (after.resync, [e.data for e in after.replay]) == (None, [{"n": 1}])


async def test_routing_is_told_of_a_new_user_and_of_the_dropped_actor(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hub = UserHub(nursery, HubConfig(retention=30.0, presence_grace=1.0))
    await hub.arriving(1)  # one process: no routing, nothing happens
    routing = _Routing()
    hub.routing = routing
    stream = _Recorder(1)
    await hub.arriving(1)
    hub.attach(stream, None)
    await hub.arriving(1)  # has an actor: already routed
    assert routing.calls == [("arriving", 1)]
    hub.detach(stream)
    with trio.fail_after(60):  # virtual time: the retention runs out
        await routing.gone.wait()
    assert routing.calls == [("arriving", 1), ("gone", 1)]
    assert trio.current_time() >= 30.0
    assert hub.statistics().lingering_users == 0


class _Presence:
    """A ``PresencePort`` that records the hub's syncs and knows one remote user online."""

    def __init__(self, remote: set[int]) -> None:
        self.syncs: list[tuple[int, bool]] = []
        self.remote = remote
        self.synced = trio.Event()
        self.block: trio.Event | None = None  # set: the next sync waits for it

    async def sync(self, user_id: int, present: bool) -> None:
        if self.block is not None:
            await self.block.wait()
        self.syncs.append((user_id, present))
        self.synced.set()
        self.synced = trio.Event()

    async def online(self, user_ids: Sequence[int]) -> set[int]:
        return {u for u in user_ids if u in self.remote}

    def announce(self, user_id: int) -> None:  # pragma: no cover - no status changes here
        raise AssertionError("no status is set in these tests")


async def test_cluster_presence_records_before_attach_and_syncs_each_flip(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hub = UserHub(nursery, HubConfig(retention=60, presence_grace=0.0, presence_flush=0.25))
    port = _Presence(remote={7})
    hub.presence = port
    nursery.start_soon(hub.serve_presence)
    stream = _Recorder(1)
    await hub.arriving(1)  # recorded before the stream is attached (listed once ready)
    assert port.syncs == [(1, True)]
    hub.attach(stream, None)
    await hub.arriving(1)  # present here already: nothing to record
    assert await hub.online_anywhere([7, 1, 3]) == [7, 1]  # the cluster's and this hub's
    # Online and offline again within one flush window (grace 0): one sync, to the state
    # now — the arrival's record is withdrawn, not left behind by a coalesced flip.
    hub.detach(stream)
    with trio.fail_after(5):
        while (1, False) not in port.syncs:
            await port.synced.wait()
    assert port.syncs == [(1, True), (1, False)]
    assert await hub.online_anywhere([1, 7]) == [7]


async def test_a_cancelled_arrival_withdraws_its_presence_record(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hub = UserHub(nursery, HubConfig(retention=60, presence_grace=5.0, presence_flush=0.25))
    port = _Presence(remote=set())
    hub.presence = port
    nursery.start_soon(hub.serve_presence)
    port.block = trio.Event()
    with trio.move_on_after(1):  # the stream goes while its record is being written
        await hub.arriving(2)
    port.block.set()
    port.block = None
    with trio.fail_after(5):
        while (2, False) not in port.syncs:
            await port.synced.wait()
    assert port.syncs == [(2, False)]  # the blocked write never completed; withdrawn anyway
    assert hub.online([2]) == []
