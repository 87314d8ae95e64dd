"""EventRouter (docs/cluster.md §4) after skipped events: a hold overflow, events missing
from the log and the catch-up limit may skip a ``chat.member_removed``; with
``members_of_chat`` the router re-reads the chat's members before delivering again, and a
catch-up stopped by its limit with nothing held resyncs and continues after the log's end.
Real nats-server with JetStream; the source of truth for membership is a dict here (the
node wires storage's ``chat_members``, tests/cluster/test_cross_node_events.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

import pytest
import trio

from fechatter.bus import NatsBus, open_nats_bus
from fechatter.cluster.events import H_EVENT, H_SEQ, H_STREAM_SEQ, live_subject
from fechatter.events import MEMBER_REMOVED, MESSAGE_CREATED
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


class Members:
    """The chats' members as storage would answer them; ``reads`` counts the calls."""

    def __init__(self, members: dict[int, set[int]]) -> None:
        self.members = members
        self.reads = 0

    async def __call__(self, chat_id: int) -> Collection[int]:
        self.reads += 1
        return set(self.members.get(chat_id, set()))


async def test_a_member_removed_by_a_missing_event_gets_nothing_more(
    bus: NatsBus, events: Events
) -> None:
    """Event 2 (user 2 removed) never reaches the router nor the log: after the hole's
    resync the router re-reads the members, so 3 and 4 reach user 1 only."""
    sink = Sink()
    members = Members({10: {1}})  # 2 removed by event 2
    with trio.fail_after(CEILING):
        await events.create(republish=False)
        async with events.router(sink, members_of_chat=members) as router:
            await router.user_connected(1, [10])
            await router.user_connected(2, [10])
            first = await events.store(10, 1)
            await events.relay(first)
            await sink.until(lambda: len(sink.got[2]) == 1)
            headers = {H_EVENT: MESSAGE_CREATED, H_SEQ: "3", H_STREAM_SEQ: "1000"}
            await bus.publish(live_subject(10, events.prefix), b'{"n": 3}', headers)
            await sink.until(lambda: len(sink.got[1]) == 2)
            four = await events.store(10, 4)
            await events.relay(four)
            await sink.until(lambda: len(sink.got[1]) == 3)
            assert router.members_of(10) == {1}
            assert router.chats_of(2) == frozenset()
    assert sink.seqs(1) == [1, 3, 4]
    assert sink.seqs(2) == [1]
    assert sink.resyncs == [([1, 2], 10, "history_unavailable")]
    assert members.reads == 1


async def test_a_member_removed_during_a_hold_overflow_gets_nothing_more(
    bus: NatsBus, events: Events
) -> None:
    """The hold overflows while the log read waits: the skipped events removed user 2, so
    the events after the overflow reach user 1 only."""
    sink = Sink()
    gated = GatedBus(bus)
    members = Members({10: {1, 2}})
    with trio.fail_after(CEILING):
        await events.create(republish=False)
        async with events.router(sink, bus=gated, hold=2, members_of_chat=members) as router:
            await router.user_connected(1, [10])
            await router.user_connected(2, [10])
            stored = [await events.store(10, seq) for seq in range(1, 3)]
            removal = await events.store(10, 3, MEMBER_REMOVED, {"chat_id": 10, "user_id": 2})
            members.members[10] = {1}
            stored += [removal] + [await events.store(10, seq) for seq in range(4, 8)]
            await events.relay(stored[0])
            await sink.until(lambda: len(sink.got[1]) == 1)
            await events.relay(stored[3])  # 2, 3 lost: a catch-up starts, its read is held
            await gated.reading.wait()
            await events.relay(stored[4])
            await events.relay(stored[5])  # full: resync, continue after 6
            await sink.until(lambda: bool(sink.resyncs))
            gated.gate.set()
            await events.relay(stored[6])
            await sink.until(lambda: len(sink.got[1]) == 2)
            assert router.members_of(10) == {1}
    assert sink.resyncs == [([1, 2], 10, "history_unavailable")]
    assert sink.seqs(1) == [1, 7]
    assert sink.seqs(2) == [1]


async def test_the_catch_up_limit_with_nothing_held_resyncs_and_skips_to_the_end(
    bus: NatsBus, events: Events
) -> None:
    """A member added from event 1 while the chat is at 8, with a catch-up limit of 3: they
    get 1-3, then a resync, then 9 — never 9 without the resync for 4-8 missing."""
    sink = Sink()
    with trio.fail_after(CEILING):
        await events.create()
        async with events.router(sink, read_page=2, catch_up_limit=3) as router:
            await router.user_connected(1, [10])
            await router.user_connected(2, [])
            for seq in range(1, 9):
                await events.store(10, seq)
            await sink.until(lambda: len(sink.got[1]) == 8)
            await router.member_added(10, 2, 1, 0)
            await sink.until(lambda: bool(sink.resyncs))
            await events.store(10, 9)
            await sink.until(lambda: len(sink.got[2]) == 4)
    assert sink.seqs(1) == list(range(1, 10))
    assert sink.seqs(2) == [1, 2, 3, 9]
    assert sink.resyncs == [([2], 10, "history_unavailable")]
