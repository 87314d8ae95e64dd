"""EventRouter (docs/cluster.md §4) paths beyond test_event_router: malformed messages live
and in the log, ephemeral events, log page boundaries, the catch-up limit, evicted events,
``chat.deleted``, late ``member_added`` calls, and a router started before its stream exists.
Real nats-server with JetStream; each test has a stream and prefix of its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from fechatter.bus import NatsBus, open_nats_bus
from fechatter.bus.base import StoredMessage
from fechatter.cluster.events import (
    H_EVENT,
    H_SEQ,
    H_STREAM_SEQ,
    BadEvent,
    chat_subject,
    decode_event,
    live_subject,
    stream_config,
)
from fechatter.events import CHAT_DELETED, MESSAGE_CREATED
from tests.cluster.test_event_router import Events, GatedBus, Sink
from tests.nats import NatsServer

CEILING = 15.0


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[NatsBus]:
    async with open_nats_bus(nats_server.url, op_timeout=5.0) as opened:
        yield opened


@pytest.fixture
async def events(bus: NatsBus) -> AsyncIterator[Events]:
    made = Events(bus)
    try:
        yield made
    finally:
        with trio.move_on_after(5.0):
            await made.delete()


class CountingBus(GatedBus):
    """The real bus; counts ``read_stream`` calls and their page sizes (gate open)."""

    def __init__(self, inner: NatsBus) -> None:
        super().__init__(inner)
        self.gate.set()
        self.pages: list[int] = []

    async def read_stream(
        self, stream: str, subject: str, start_seq: int, limit: int
    ) -> list[StoredMessage]:
        page = await super().read_stream(stream, subject, start_seq, limit)
        self.pages.append(len(page))
        return page


# -- the wire format -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("subject", "payload", "headers"),
    [
        ("p.rt.chat.1", b"{}", {H_SEQ: "1"}),  # no Fx-Event
        ("p.rt.chat.1", b"{}", {H_EVENT: "x", H_SEQ: "one"}),
        ("p.rt.chat.1", b"{}", {H_EVENT: "x", H_STREAM_SEQ: "1.5"}),
        ("p.rt.chat.abc", b"{}", {H_EVENT: "x"}),
        ("p.rt.chat.1", b"{not json", {H_EVENT: "x"}),
        ("p.rt.chat.1", b"[1, 2]", {H_EVENT: "x"}),  # JSON, not an object
        ("p.rt.chat.1", b"{}", None),
    ],
)
def test_malformed_messages_are_bad_events(
    subject: str, payload: bytes, headers: dict[str, str] | None
) -> None:
    with pytest.raises(BadEvent, match="not a chat event on"):
        decode_event(subject, payload, headers)


def test_an_event_without_fx_seq_is_ephemeral() -> None:
    wire = decode_event("p.rt.chat.7", b'{"user_id": 3}', {H_EVENT: "typing"})
    assert (wire.chat_id, wire.event_seq, wire.stream_seq, wire.name) == (7, 0, 0, "typing")


# -- live messages ----------------------------------------------------------------------------
async def test_malformed_live_messages_are_dropped_and_ephemeral_ones_delivered(
    bus: NatsBus, events: Events
) -> None:
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create()
        async with events.router(sink) as router:
            await router.user_connected(1, [10])
            await router.user_connected(2, [10])
            live = live_subject(10, events.prefix)
            await bus.publish(live, b"{}", {H_SEQ: "1"})  # no event name
            await bus.publish(live, b"[]", {H_EVENT: MESSAGE_CREATED, H_SEQ: "1"})
            await bus.publish(live, b"{}", {H_EVENT: MESSAGE_CREATED, H_SEQ: "x"})
            await bus.publish(live, b"{broken", None)
            await bus.publish(live, b'{"user_id": 1}', {H_EVENT: "typing.started"})
            await events.store(10, 1)
            await sink.until(lambda: len(sink.got[2]) == 2)
            stats = router.stats
            assert set(router.subscriptions) == {10}  # the chat's task is alive
    assert stats.bad == 4
    assert [(e.name, e.event_seq) for e in sink.got[1]] == [
        ("typing.started", 0),
        (MESSAGE_CREATED, 1),
    ]
    assert sink.seqs(2) == [0, 1]
    assert (stats.gaps, stats.resyncs) == (0, 0)


async def test_a_malformed_message_in_the_log_is_skipped_by_the_catch_up(
    bus: NatsBus, events: Events
) -> None:
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create(republish=False)
        async with events.router(sink) as router:
            await router.user_connected(1, [10])
            first = await events.store(10, 1)
            await events.relay(first)
            await sink.until(lambda: len(sink.got[1]) == 1)
            # Stored on the chat's subject by something else: no Fx-Event, not an event.
            await bus.js_publish(chat_subject(10, events.prefix), b"{}", "junk-1", {"X": "y"})
            await events.store(10, 2)
            last = await events.store(10, 3)
            await events.relay(last)  # 2 never came live: the catch-up reads junk, 2, 3
            await sink.until(lambda: len(sink.got[1]) == 3)
            stats = router.stats
    assert sink.seqs(1) == [1, 2, 3]
    assert stats.bad == 1
    assert stats.read == 2
    assert sink.resyncs == []


# -- catch-up bounds --------------------------------------------------------------------------
async def test_a_catch_up_reads_the_log_page_by_page(bus: NatsBus, events: Events) -> None:
    sink = Sink()
    counting = CountingBus(bus)
    with trio.fail_after(CEILING):
        await events.create(republish=False)
        async with events.router(sink, bus=counting, read_page=2) as router:
            await router.user_connected(1, [10])
            stored = [await events.store(10, seq) for seq in range(1, 9)]
            await events.relay(stored[0])
            await sink.until(lambda: len(sink.got[1]) == 1)
            await events.relay(stored[-1])  # 2..7 lost: read from the log in pages of 2
            await sink.until(lambda: len(sink.got[1]) == 8)
            stats = router.stats
    assert sink.seqs(1) == list(range(1, 9))
    assert counting.pages == [2, 2, 2, 1]  # 2-7 plus the held 8 itself, then a short page
    assert stats.read == 7
    assert stats.duplicates == 0  # the held copy of 8 was replaced by the read one
    assert sink.resyncs == []


async def test_a_catch_up_past_its_limit_resyncs_and_continues_after_the_newest(
    bus: NatsBus, events: Events
) -> None:
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create(republish=False)
        async with events.router(sink, read_page=2, catch_up_limit=5) as router:
            await router.user_connected(1, [10])
            await router.user_connected(2, [10])
            stored = [await events.store(10, seq) for seq in range(1, 13)]
            await events.relay(stored[0])
            await sink.until(lambda: len(sink.got[1]) == 1)
            await events.relay(stored[-1])  # 2..11 lost: more than the catch-up may read
            await sink.until(lambda: len(sink.got[2]) == 7)
            after = await events.store(10, 13)
            await events.relay(after)
            await sink.until(lambda: len(sink.got[2]) == 8)
            stats = router.stats
    assert sink.seqs(1) == sink.seqs(2) == [1, 2, 3, 4, 5, 6, 12, 13]
    assert sink.resyncs == [([1, 2], 10, "history_unavailable")]
    assert stats.read == 5
    assert stats.resyncs == 1


async def test_events_evicted_from_the_log_resync_the_members_who_missed_them(
    bus: NatsBus, events: Events
) -> None:
    """The log keeps only the chat's last 3 events: a member owed event 2 when the oldest
    stored is 6 gets ``resync`` once, then 6, 7, 8 in order."""
    sink = Sink()
    with trio.fail_after(CEILING):
        config = stream_config(events.stream, events.prefix, max_bytes=64 << 20, republish=False)
        config["max_msgs_per_subject"] = 3
        reply = await bus.request(
            f"$JS.API.STREAM.CREATE.{events.stream}", json.dumps(config).encode(), 5.0
        )
        assert "error" not in json.loads(reply.payload)
        async with events.router(sink) as router:
            await router.user_connected(1, [10])
            first = await events.store(10, 1)
            await events.relay(first)
            await sink.until(lambda: len(sink.got[1]) == 1)
            stored = [await events.store(10, seq) for seq in range(2, 9)]
            await events.relay(stored[-1])
            await sink.until(lambda: len(sink.got[1]) == 4)
            stats = router.stats
    assert sink.seqs(1) == [1, 6, 7, 8]
    assert sink.resyncs == [([1], 10, "history_unavailable")]
    assert stats.resyncs == 1


async def test_a_held_event_whose_predecessors_are_not_in_the_log_resyncs(
    bus: NatsBus, events: Events
) -> None:
    """A live event 3 arrives, 2 is nowhere in the log (gone): resync, then 3 and on."""
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create(republish=False)
        async with events.router(sink) as router:
            await router.user_connected(1, [10])
            first = await events.store(10, 1)
            await events.relay(first)
            await sink.until(lambda: len(sink.got[1]) == 1)
            live = live_subject(10, events.prefix)
            headers = {H_EVENT: MESSAGE_CREATED, H_SEQ: "3", H_STREAM_SEQ: "1000"}
            await bus.publish(live, b'{"n": 3}', headers)
            await sink.until(lambda: len(sink.got[1]) == 2)
            four = await events.store(10, 4)
            await events.relay(four)
            await sink.until(lambda: len(sink.got[1]) == 3)
    assert sink.seqs(1) == [1, 3, 4]
    assert sink.resyncs == [([1], 10, "history_unavailable")]


async def test_a_chat_dropped_during_its_catch_up_stops_reading(
    bus: NatsBus, events: Events
) -> None:
    sink = Sink()
    gated = GatedBus(bus)
    with trio.fail_after(CEILING):
        await events.create(republish=False)
        async with events.router(sink, bus=gated) as router:
            await router.user_connected(1, [10])
            stored = [await events.store(10, seq) for seq in (1, 2, 3)]
            await events.relay(stored[0])
            await sink.until(lambda: len(sink.got[1]) == 1)
            await events.relay(stored[2])  # 2 lost: a catch-up starts, held at the gate
            await gated.reading.wait()
            await router.user_disconnected(1)  # the last member: the catch-up is cancelled
            assert dict(router.subscriptions) == {}
            gated.gate.set()
            await router.user_connected(1, [10])  # back: positioned at the newest (3)
            last = await events.store(10, 4)
            await events.relay(last)
            await sink.until(lambda: len(sink.got[1]) == 2)
    assert sink.seqs(1) == [1, 4]
    assert sink.resyncs == []


# -- the index ----------------------------------------------------------------------------
async def test_chat_deleted_is_delivered_then_the_chat_is_left(
    bus: NatsBus, events: Events
) -> None:
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create()
        async with events.router(sink) as router:
            await router.user_connected(1, [10, 11])
            await router.user_connected(2, [10])
            await events.store(10, 1)
            await events.store(10, 2, CHAT_DELETED, {"chat_id": 10, "by": 1})
            await sink.until(lambda: len(sink.got[2]) == 2)
            assert set(router.subscriptions) == {11}
            assert router.members_of(10) == frozenset()
            assert router.chats_of(1) == {11}
            assert router.chats_of(2) == frozenset()
            await events.store(10, 3)  # after the deletion: nobody here follows it
            await events.store(11, 1)
            await sink.until(lambda: len(sink.got[1]) == 3)
    assert [(e.chat_id, e.event_seq, e.name) for e in sink.got[1]] == [
        (10, 1, MESSAGE_CREATED),
        (10, 2, CHAT_DELETED),
        (11, 1, MESSAGE_CREATED),
    ]
    assert sink.seqs(2) == [1, 2]


async def test_member_added_calls_for_strangers_members_and_the_next_event(
    bus: NatsBus, events: Events
) -> None:
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create()
        async with events.router(sink) as router:
            await router.member_added(10, 9)  # not connected here: ignored
            assert dict(router.subscriptions) == {}
            await router.user_connected(1, [10])
            await router.user_connected(2, [])
            await events.store(10, 1)
            await sink.until(lambda: len(sink.got[1]) == 1)
            await router.member_added(10, 2)  # from the next event on
            await router.member_added(10, 2)  # again: idempotent
            await router.member_added(10, 1, joined_event_seq=1)  # already a member: no-op
            assert router.members_of(10) == {1, 2}
            assert router.chats_of(2) == {10}
            await events.store(10, 2)
            await sink.until(lambda: len(sink.got[2]) == 1)
            await router.member_removed(10, 1)
            await router.member_removed(10, 2)  # the last local member: unsubscribed
            assert dict(router.subscriptions) == {}
            await router.member_removed(10, 2)  # idempotent
    assert sink.seqs(1) == [1, 2]
    assert sink.seqs(2) == [2]
    assert sink.resyncs == []


async def test_a_router_started_before_its_stream_exists_positions_once_it_does(
    bus: NatsBus, events: Events, caplog: pytest.LogCaptureFixture
) -> None:
    """The position read fails (no such stream): retried with backoff, not fatal."""
    sink = Sink()
    with trio.fail_after(CEILING):
        async with events.router(sink) as router:
            async with trio.open_nursery() as nursery:
                connected = trio.Event()

                async def connect() -> None:
                    await router.user_connected(1, [10])
                    connected.set()

                nursery.start_soon(connect)
                while "position of chat 10 unknown" not in caplog.text:
                    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
                assert not connected.is_set()
                await events.create()
            await events.store(10, 1)
            await sink.until(lambda: len(sink.got[1]) == 1)
    assert sink.seqs(1) == [1]
