"""EventRouter (docs/cluster.md §4, plan B3) against a real nats-server with JetStream.

Each test creates its own stream as §4 specifies (``stream_config``: republish from
``<prefix>.ev.>`` to ``<prefix>.rt.>``) and stores events with ``js_publish`` in the
publisher's wire format (``encode_event``); the router reads the republished copies. Tests
that must lose one live copy on purpose create the stream without republish and relay the
stored events to the live subject by hand (as republish would, with ``Nats-Sequence``).
"""

from __future__ import annotations

import itertools
import json
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from fechatter.bus import NatsBus, open_nats_bus
from fechatter.bus.base import BusState, Handler, Message, PublishAck, StoredMessage, Subscription
from fechatter.cluster.events import (
    H_EVENT,
    H_SEQ,
    H_STREAM_SEQ,
    EventRouter,
    OutgoingEvent,
    RoutedEvent,
    decode_event,
    encode_event,
    live_subject,
    open_event_router,
    stream_config,
)
from fechatter.events import MEMBER_ADDED, MEMBER_REMOVED, MESSAGE_CREATED, Event, dumps
from tests.nats import NatsServer

CEILING = 15.0
_names = itertools.count(1)


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[NatsBus]:
    async with open_nats_bus(nats_server.url, op_timeout=5.0) as opened:
        yield opened


class Sink:
    """The router's ``deliver`` and ``resync`` callbacks, recorded; ``until`` waits on them."""

    def __init__(self) -> None:
        self.got: dict[int, list[RoutedEvent]] = defaultdict(list)
        self.calls: list[tuple[list[int], RoutedEvent]] = []
        self.resyncs: list[tuple[list[int], int, str]] = []
        self._changed = trio.Event()

    def deliver(self, user_ids: Iterable[int], event: Event) -> None:
        assert isinstance(event, RoutedEvent)
        users = list(user_ids)
        self.calls.append((users, event))
        for user_id in users:
            self.got[user_id].append(event)
        self._wake()

    def resync(self, user_ids: Iterable[int], chat_id: int, reason: str) -> None:
        self.resyncs.append((sorted(user_ids), chat_id, reason))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def seqs(self, user_id: int, chat_id: int | None = None) -> list[int]:
        return [e.event_seq for e in self.got[user_id] if chat_id is None or e.chat_id == chat_id]


@dataclass
class Stored:
    out: OutgoingEvent
    ack: PublishAck
    chat_id: int
    event_seq: int


class Events:
    """One test's stream and subject prefix on the shared server."""

    def __init__(self, bus: NatsBus) -> None:
        n = next(_names)
        self.bus = bus
        self.prefix = f"fxr{n}"
        self.stream = f"FXR{n}"

    async def create(self, *, republish: bool = True) -> None:
        config = stream_config(self.stream, self.prefix, max_bytes=64 << 20, republish=republish)
        reply = await self.bus.request(
            f"$JS.API.STREAM.CREATE.{self.stream}", json.dumps(config).encode(), 5.0
        )
        answer = json.loads(reply.payload)
        assert "error" not in answer, answer

    async def delete(self) -> None:
        await self.bus.request(f"$JS.API.STREAM.DELETE.{self.stream}", b"", 5.0)

    async def store(
        self,
        chat_id: int,
        event_seq: int,
        name: str = MESSAGE_CREATED,
        data: dict[str, Any] | None = None,
    ) -> Stored:
        payload = dumps(data or {"chat_id": chat_id, "n": event_seq})
        out = encode_event(chat_id, event_seq, name, payload, self.prefix)
        ack = await self.bus.js_publish(out.subject, out.payload, out.msg_id, out.headers)
        return Stored(out, ack, chat_id, event_seq)

    async def relay(self, stored: Stored) -> None:
        """What the stream's republish does: the stored event on the live subject."""
        headers = {**stored.out.headers, H_STREAM_SEQ: str(stored.ack.seq)}
        subject = live_subject(stored.chat_id, self.prefix)
        await self.bus.publish(subject, stored.out.payload, headers)

    def router(
        self, sink: Sink, bus: Any = None, **options: Any
    ) -> AbstractAsyncContextManager[EventRouter]:
        return open_event_router(
            bus or self.bus,
            sink.deliver,
            sink.resync,
            prefix=self.prefix,
            stream=self.stream,
            **options,
        )


@pytest.fixture
async def events(bus: NatsBus) -> AsyncIterator[Events]:
    made = Events(bus)
    try:
        yield made
    finally:
        with trio.move_on_after(5.0):
            await made.delete()


class GatedBus:
    """The real bus, with ``read_stream`` held at a gate the test opens (a slow log read)."""

    def __init__(self, inner: NatsBus) -> None:
        self.inner = inner
        self.gate = trio.Event()
        self.reading = trio.Event()

    @property
    def state(self) -> BusState:
        return self.inner.state

    async def wait_state(self, state: BusState) -> None:
        await self.inner.wait_state(state)

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        await self.inner.publish(subject, payload, headers)

    async def subscribe(self, subject: str, *, buffer: int, queue: str = "") -> Subscription:
        return await self.inner.subscribe(subject, buffer=buffer, queue=queue)

    async def unsubscribe(self, subscription: Subscription) -> None:
        await self.inner.unsubscribe(subscription)

    async def request(
        self,
        subject: str,
        payload: bytes,
        within: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        return await self.inner.request(subject, payload, within, headers)

    async def serve_requests(
        self,
        subject: str,
        handler: Handler,
        *,
        buffer: int,
        queue: str = "",
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await self.inner.serve_requests(
            subject, handler, buffer=buffer, queue=queue, task_status=task_status
        )

    async def ensure_stream(
        self, name: str, subjects: Sequence[str], *, max_age: float, max_msgs: int
    ) -> None:
        await self.inner.ensure_stream(name, subjects, max_age=max_age, max_msgs=max_msgs)

    async def js_publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> PublishAck:
        return await self.inner.js_publish(subject, payload, msg_id, headers)

    async def read_stream(
        self, stream: str, subject: str, start_seq: int, limit: int
    ) -> list[StoredMessage]:
        self.reading.set()
        await self.gate.wait()
        return await self.inner.read_stream(stream, subject, start_seq, limit)


# -- the wire format -------------------------------------------------------------------------
def test_the_wire_format_is_section_4s() -> None:
    out = encode_event(42, 17, MESSAGE_CREATED, b'{"id":1}')
    assert out.subject == "fechatter.ev.chat.42"
    assert out.msg_id == "c:42:17"
    assert dict(out.headers) == {H_EVENT: MESSAGE_CREATED, H_SEQ: "17"}
    live = decode_event(
        live_subject(42), out.payload, {**out.headers, H_STREAM_SEQ: "901", "Nats-Msg-Id": "x"}
    )
    assert (live.chat_id, live.event_seq, live.stream_seq, live.name, live.data) == (
        42,
        17,
        901,
        MESSAGE_CREATED,
        {"id": 1},
    )


# -- the router ------------------------------------------------------------------------------
async def test_events_reach_exactly_the_local_members_in_order(
    bus: NatsBus, events: Events
) -> None:
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create()
        async with events.router(sink) as router:
            await router.user_connected(1, [10])
            await router.user_connected(2, [10, 11])
            await router.user_connected(3, [])
            assert set(router.subscriptions) == {10, 11}
            acks = [await events.store(10, seq) for seq in range(1, 6)]
            await events.store(11, 1)
            await events.store(12, 1)  # no local member: never subscribed
            await sink.until(lambda: len(sink.got[1]) == 5 and len(sink.got[2]) == 6)
            stats = router.stats
    assert sink.seqs(1) == [1, 2, 3, 4, 5]
    assert sink.seqs(2, 10) == [1, 2, 3, 4, 5]
    assert sink.seqs(2, 11) == [1]
    assert 3 not in sink.got
    assert 12 not in {e.chat_id for _, e in sink.calls}
    # One Event per event for all its local recipients (encode once), ids from the stream.
    chat10 = [(sorted(users), e) for users, e in sink.calls if e.chat_id == 10]
    assert [users for users, _ in chat10] == [[1, 2]] * 5
    assert [e.stream_seq for _, e in chat10] == [s.ack.seq for s in acks]
    assert chat10[0][1].data == {"chat_id": 10, "n": 1}
    assert (stats.duplicates, stats.gaps, stats.resyncs) == (0, 0, 0)


async def test_repeated_live_events_are_dropped(bus: NatsBus, events: Events) -> None:
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create(republish=False)
        stored = [await events.store(10, seq) for seq in (1, 2, 3)]
        async with events.router(sink) as router:
            await router.user_connected(1, [10])  # positioned at event 3: 1..3 are old
            more = [await events.store(10, seq) for seq in (4, 5, 6)]
            for item in [more[0], stored[1], more[0], more[1], more[1], more[2], stored[2]]:
                await events.relay(item)
            await sink.until(lambda: len(sink.got[1]) == 3)
            again = await events.store(10, 6)  # a republish of the same row: deduped by id
            await events.relay(more[2])
            last = await events.store(10, 7)
            await events.relay(last)
            await sink.until(lambda: len(sink.got[1]) == 4)
            stats = router.stats
    assert again.ack.duplicate
    assert again.ack.seq == more[2].ack.seq
    assert sink.seqs(1) == [4, 5, 6, 7]
    assert stats.duplicates == 5
    assert stats.gaps == 0


async def test_a_gap_on_the_live_subject_is_read_from_the_log_in_order(
    bus: NatsBus, events: Events
) -> None:
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create(republish=False)
        async with events.router(sink) as router:
            await router.user_connected(1, [10])
            await router.user_connected(2, [10])
            stored = [await events.store(10, seq) for seq in range(1, 7)]
            for item in stored:
                if item.event_seq not in (2, 4):  # two live copies lost
                    await events.relay(item)
            await sink.until(lambda: len(sink.got[2]) == 6)
            stats = router.stats
    assert sink.seqs(1) == sink.seqs(2) == [1, 2, 3, 4, 5, 6]
    assert [e.stream_seq for e in sink.got[1]] == [s.ack.seq for s in stored]
    assert stats.gaps >= 1
    assert stats.read >= 1
    assert sink.resyncs == []


def _hog_publish(port: int, prefix: str, chat_id: int, seqs: Sequence[int]) -> None:
    """Store events with a plain-socket NATS client while blocking the trio thread, and
    return once their republished copies came back to it: meanwhile the router cannot
    read its subscription, so the bus must drop (a ``Gap``) — a starved consumer."""
    live = live_subject(chat_id, prefix).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=CEILING) as conn:
        reader = conn.makefile("rb")
        reader.readline()  # INFO
        conn.sendall(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n'
            b"SUB " + live + b" 1\r\nPING\r\n"
        )
        while reader.readline() != b"PONG\r\n":
            pass
        batch = []
        for seq in seqs:
            out = encode_event(chat_id, seq, MESSAGE_CREATED, dumps({"n": seq}), prefix)
            lines = [f"Nats-Msg-Id: {out.msg_id}"] + [f"{k}: {v}" for k, v in out.headers.items()]
            head = ("NATS/1.0\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode()
            size = len(head) + len(out.payload)
            batch.append(f"HPUB {out.subject} {len(head)} {size}\r\n".encode())
            batch.append(head + out.payload + b"\r\n")
        conn.sendall(b"".join(batch))
        received = 0
        while received < len(seqs):
            line = reader.readline()
            if line.startswith(b"HMSG"):
                reader.read(int(line.split()[-1]) + 2)
                received += 1
            elif line == b"PING\r\n":
                conn.sendall(b"PONG\r\n")
            elif not line:
                raise ConnectionError("nats-server closed the hog connection")


async def test_a_slow_consumer_gap_loses_nothing_and_keeps_order(
    bus: NatsBus, events: Events, nats_server: NatsServer
) -> None:
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create()
        async with events.router(sink, buffer=1) as router:
            await router.user_connected(1, [10])
            await events.store(10, 1)
            await sink.until(lambda: len(sink.got[1]) == 1)
            _hog_publish(nats_server.port, events.prefix, 10, range(2, 101))
            await sink.until(lambda: len(sink.got[1]) == 100)
            await events.store(10, 101)
            await sink.until(lambda: len(sink.got[1]) == 101)
            stats = router.stats
    assert sink.seqs(1) == list(range(1, 102))
    assert stats.gaps >= 1
    assert stats.read >= 1
    assert sink.resyncs == []


async def test_subscriptions_follow_the_index(bus: NatsBus, events: Events) -> None:
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create()
        async with events.router(sink) as router:
            assert dict(router.subscriptions) == {}
            await router.user_connected(1, [10, 11])
            await router.user_connected(2, [11])
            assert dict(router.subscriptions) == {
                10: f"{events.prefix}.rt.chat.10",
                11: f"{events.prefix}.rt.chat.11",
            }
            await router.user_disconnected(1)  # last local member of 10, not of 11
            assert set(router.subscriptions) == {11}
            assert router.chats_of(1) == frozenset()
            assert router.members_of(11) == {2}
            await router.member_removed(11, 2)
            assert dict(router.subscriptions) == {}
            # A removal event: delivered to the removed user, then the chat is left.
            await router.user_connected(3, [12])
            await router.user_connected(4, [12])
            await events.store(12, 1, MEMBER_REMOVED, {"chat_id": 12, "user_id": 3, "by": 4})
            await sink.until(lambda: len(sink.got[4]) == 1)
            assert sink.seqs(3) == [1]
            assert router.members_of(12) == {4}
            assert router.chats_of(3) == frozenset()
            assert set(router.subscriptions) == {12}
            await events.store(12, 2)
            await sink.until(lambda: len(sink.got[4]) == 2)
            await router.user_disconnected(4)
            assert dict(router.subscriptions) == {}
            await router.user_connected(4, [12])  # back: subscribed again, positioned at 2
            assert set(router.subscriptions) == {12}
            await events.store(12, 3)
            await sink.until(lambda: len(sink.got[4]) == 3)
    assert sink.seqs(3) == [1]
    assert sink.seqs(4) == [1, 2, 3]


async def test_members_added_while_events_flow_get_them_from_their_join_exactly_once(
    bus: NatsBus, events: Events
) -> None:
    """Node 1 follows the chat (user 1) and learns of user 2's join from the event itself;
    node 2 had no subscription and is told late (after more events were stored) that user
    3 joined at event 15: it subscribes, positions, reads the log from the join, merges."""
    n = 40
    one, two = Sink(), Sink()
    with trio.fail_after(CEILING):
        await events.create()
        async with events.router(one) as node1, events.router(two) as node2:
            await node1.user_connected(1, [10])
            await node1.user_connected(2, [])
            await node2.user_connected(3, [])
            stored_20 = trio.Event()

            async def publish() -> None:
                for seq in range(1, n + 1):
                    if seq == 15:
                        joined = {"chat_id": 10, "user_ids": [2, 3], "by": 1}
                        await events.store(10, seq, MEMBER_ADDED, joined)
                    else:
                        await events.store(10, seq)
                    if seq == 20:
                        stored_20.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                await stored_20.wait()
                await node2.member_added(10, 3, joined_event_seq=15)
            await one.until(lambda: len(one.got[1]) == n and len(one.got[2]) == n - 14)
            await two.until(lambda: len(two.got[3]) == n - 14)
            assert set(node2.subscriptions) == {10}
    assert one.seqs(1) == list(range(1, n + 1))
    assert one.seqs(2) == list(range(15, n + 1))
    assert two.seqs(3) == list(range(15, n + 1))
    assert one.resyncs == two.resyncs == []


async def test_a_full_hold_during_a_catch_up_resyncs_that_chats_local_users(
    bus: NatsBus, events: Events
) -> None:
    sink = Sink()
    gated = GatedBus(bus)
    with trio.fail_after(CEILING):
        await events.create(republish=False)
        async with events.router(sink, bus=gated, hold=2) as router:
            await router.user_connected(1, [10])
            await router.user_connected(2, [10, 11])
            stored = [await events.store(10, seq) for seq in range(1, 7)]
            await events.relay(stored[0])
            await sink.until(lambda: len(sink.got[1]) == 1)
            await events.relay(stored[2])  # 2 lost: a catch-up starts, its read is held
            await gated.reading.wait()
            await events.relay(stored[3])  # held: 3, 4
            await events.relay(stored[4])  # a third to hold: full
            await sink.until(lambda: bool(sink.resyncs))
            gated.gate.set()
            await events.relay(stored[5])  # after the resync: live again from 6
            await sink.until(lambda: len(sink.got[1]) == 2)
            other = await events.store(11, 1)
            await events.relay(other)
            await sink.until(lambda: len(sink.got[2]) == 3)
            stats = router.stats
    assert sink.resyncs == [([1, 2], 10, "history_unavailable")]
    assert sink.seqs(1) == [1, 6]
    assert sink.seqs(2, 10) == [1, 6]
    assert sink.seqs(2, 11) == [1]
    assert stats.resyncs == 1
    assert stats.held_max == 2
