"""The NATS hot path of ``NatsBus`` against a real nats-server (tests/nats.py).

Receive: nats-py's parser hands each message straight to the bridge (``_Direct``), and one
trio drain per burst empties every subscription that became ready (the "ready list"). These
tests drive it with interleaved bursts written by raw publisher connections (one socket
write of thousands of ``PUB`` lines each, several connections at once), so the bus's
connection reads many messages of many subscriptions per socket read.

Acks: ``js_publish_chains`` sends plain ``PUB``s with reply subjects under one reply
subscription (``_Acks``) and reads the JetStream acks itself: failures in the middle of a
chain, acks matched to their publish under concurrency, no ack at all.

Also: the startup check of the nats-py internals those paths patch.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import trio

from fechatter.bus import Gap, JsPublish, Message, NatsBus, open_nats_bus
from fechatter.bus.base import ChainResult, Subscription
from fechatter.bus.nats import (
    NatsClientUnsupported,
    _Acks,
    _Bridge,
    _Lost,
    check_nats_internals,
)
from fechatter.errors import Unavailable
from tests.nats import NatsServer

CEILING = 20.0
_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A subject/stream prefix of its own, so tests on the shared server never meet."""
    return f"{prefix}{next(_names)}"


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[NatsBus]:
    async with open_nats_bus(nats_server.url, name="hot-path", op_timeout=2.0) as opened:
        yield opened


async def raw_burst(server: NatsServer, items: Sequence[tuple[str, bytes]]) -> None:
    """Publish ``items`` (subject, payload) in order from a connection of its own, written in
    one ``send_all``; return once the server answered the ``PING`` after them (so it has
    routed every one). Raw protocol on a trio socket: no client library in between."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        seen = b""
        while b"\r\n" not in seen:  # the server's INFO line
            chunk = await stream.receive_some(65536)
            assert chunk, "nats-server closed before INFO"
            seen += chunk
        out = [b'CONNECT {"verbose":false,"pedantic":false}\r\n']
        out += [b"PUB %s %d\r\n%s\r\n" % (s.encode(), len(p), p) for s, p in items]
        out.append(b"PING\r\n")
        await stream.send_all(b"".join(out))
        seen = b""
        while b"PONG\r\n" not in seen:
            chunk = await stream.receive_some(65536)
            assert chunk, "nats-server closed before PONG"
            seen += chunk
        assert b"-ERR" not in seen, seen


async def registered(bus: NatsBus) -> None:
    """Return once the server has processed every SUB the bus sent before the call (a message
    of the bus's own comes back through the server after them)."""
    echo = await bus.subscribe(unique("t.echo"), buffer=1)
    await bus.publish(echo.subject, b"")
    assert isinstance(await echo.receive(), Message)
    await bus.unsubscribe(echo)


async def take(sub: Subscription, n: int) -> list[Message]:
    out: list[Message] = []
    for _ in range(n):
        item = await sub.receive()
        assert isinstance(item, Message), item
        out.append(item)
    return out


def parse(message: Message | bytes) -> tuple[int, int, str]:
    """A payload ``publisher:round:tag`` (of a message or bytes) → (publisher, round, tag)."""
    payload = message.payload if isinstance(message, Message) else message
    publisher, rnd, tag = payload.decode().split(":")
    return int(publisher), int(rnd), tag


# -- receive: the ready list under concurrent subscriptions ---------------------------------
async def test_interleaved_bursts_reach_every_subscription_once_in_order_without_cross_talk(
    bus: NatsBus, nats_server: NatsServer
) -> None:
    """Four publishers at once, each one burst interleaving 16 subjects in its own shuffled
    order, 60 rounds: every subscription gets exactly its messages, each publisher's in
    publish order, none twice, none of another subject; a wildcard subscription gets all of
    them. And the barrier property the Sequencer relies on (``Bus.barrier``): once a
    publisher's final probe message has been received, a barrier returns only when every
    message that publisher sent before it is offered to its subscription (across
    subscriptions, not just within one). Not at the probe's own offer: one drain hands each
    ready subscription its whole backlog in turn, so within a drain a later message of one
    subscription may be offered before an earlier one of another."""
    base, publishers, rounds, subjects = unique("t.hot"), 4, 60, 16
    per_sub = publishers * rounds
    with trio.fail_after(CEILING):
        subs = [await bus.subscribe(f"{base}.s.{i}", buffer=per_sub) for i in range(subjects)]
        everything = await bus.subscribe(f"{base}.s.*", buffer=per_sub * subjects)
        probe = await bus.subscribe(f"{base}.probe", buffer=publishers)
        # After each probe and a barrier: how many items each subscription had been offered.
        probes: list[int] = []
        snapshots: list[list[int]] = []
        await registered(bus)

        async def watch_probes() -> None:
            for _ in range(publishers):
                item = await probe.receive()
                assert isinstance(item, Message), item
                await bus.barrier()
                snapshots.append([s.offered for s in subs])
                probes.append(parse(item)[0])

        def plan(publisher: int) -> list[tuple[str, bytes]]:
            order = list(range(subjects))
            items: list[tuple[str, bytes]] = []
            for rnd in range(rounds):
                random.Random(publisher * 1000 + rnd).shuffle(order)
                items += [(f"{base}.s.{i}", f"{publisher}:{rnd}:{i}".encode()) for i in order]
            items.append((f"{base}.probe", f"{publisher}:0:probe".encode()))
            return items

        async with trio.open_nursery() as watching:
            watching.start_soon(watch_probes)
            async with trio.open_nursery() as nursery:
                for publisher in range(publishers):
                    nursery.start_soon(raw_burst, nats_server, plan(publisher))
        got = [await take(sub, per_sub) for sub in subs]
        all_got = await take(everything, per_sub * subjects)
    assert sorted(probes) == list(range(publishers))
    for i, (sub, messages) in enumerate(zip(subs, got, strict=True)):
        assert sub.statistics().buffered == 0  # nothing beyond its own messages
        assert {m.subject for m in messages} == {f"{base}.s.{i}"}
        assert {parse(m)[2] for m in messages} == {str(i)}  # no cross-talk
        for publisher in range(publishers):
            own = [parse(m)[1] for m in messages if parse(m)[0] == publisher]
            assert own == list(range(rounds))  # each once, in publish order
    assert everything.statistics().buffered == 0
    for publisher in range(publishers):
        mine = [parse(m) for m in all_got if parse(m)[0] == publisher]
        assert mine == [parse(payload) for _, payload in plan(publisher)[:-1]]
    for publisher, offered in zip(probes, snapshots, strict=True):
        for i, messages in enumerate(got):
            # The position of this publisher's last message in subscription i's order:
            last = max(n for n, m in enumerate(messages) if parse(m)[0] == publisher)
            assert offered[i] > last, (publisher, i, offered[i], last)
    assert all(s.statistics().gaps == 0 for s in [*subs, everything, probe])


async def test_a_slow_subscriptions_full_buffer_is_its_own_gap_and_no_one_elses(
    bus: NatsBus, nats_server: NatsServer
) -> None:
    """Two publishers' interleaved bursts to six subjects; one subscription's buffer holds 8
    and nobody reads it: it gets an unbroken prefix of 8 (each publisher's part in order),
    then one Gap covering the rest, then live messages again. The five others, read only
    after both bursts, get every message, in order, no Gap."""
    base, publishers, rounds = unique("t.slow"), 2, 150
    with trio.fail_after(CEILING):
        slow = await bus.subscribe(f"{base}.s.slow", buffer=8)
        others = [
            await bus.subscribe(f"{base}.s.{i}", buffer=publishers * rounds) for i in range(5)
        ]
        probe = await bus.subscribe(f"{base}.probe", buffer=publishers)
        await registered(bus)
        tags = ["slow", "0", "1", "2", "3", "4"]

        def plan(publisher: int) -> list[tuple[str, bytes]]:
            items = [
                (f"{base}.s.{tag}", f"{publisher}:{rnd}:{tag}".encode())
                for rnd in range(rounds)
                for tag in tags
            ]
            return [*items, (f"{base}.probe", f"{publisher}:0:probe".encode())]

        async with trio.open_nursery() as nursery:
            for publisher in range(publishers):
                nursery.start_soon(raw_burst, nats_server, plan(publisher))
        await take(probe, publishers)
        prefix = await take(slow, 8)
        gap = await slow.receive()
        await bus.publish(slow.subject, b"9:0:after")
        (after,) = await take(slow, 1)
        got = [await take(sub, publishers * rounds) for sub in others]
    total = publishers * rounds
    assert isinstance(gap, Gap)
    # The rest was dropped: counted exactly unless the asyncio thread added to a loss marker
    # the instant trio read it (the count is documented as a lower bound, base.Gap), never 0.
    assert 0 < gap.dropped <= total - 8
    for publisher in range(publishers):
        own = [parse(m)[1] for m in prefix if parse(m)[0] == publisher]
        assert own == list(range(len(own)))
    assert after.payload == b"9:0:after"
    assert (slow.statistics().gaps, slow.statistics().delivered) == (1, 9)
    for tag, sub, messages in zip(tags[1:], others, got, strict=True):
        assert {parse(m)[2] for m in messages} == {tag}
        for publisher in range(publishers):
            assert [parse(m)[1] for m in messages if parse(m)[0] == publisher] == list(
                range(rounds)
            )
        assert (sub.statistics().gaps, sub.statistics().buffered) == (0, 0)


class _DrainedUnderfoot(collections.deque[Message | _Lost]):
    """A subscription's hand-off deque that trio empties between the asyncio thread reading
    its length (full) and reading its last item: the interleaving of the thread race."""

    drained = False

    def __getitem__(self, index: Any) -> Any:
        if index == -1 and not self.drained:  # the asyncio side's look at the last item
            self.drained = True
            self.clear()
        return super().__getitem__(index)


async def test_a_full_hand_off_drained_under_the_asyncio_thread_takes_the_message() -> None:
    # CI saw `pending[-1]` raise IndexError here: the message was dropped with no Gap and an
    # ERROR logged. Now the emptied deque takes it, and trio is woken for it.
    loop = asyncio.new_event_loop()
    try:
        bridge = _Bridge(loop, trio.lowlevel.current_trio_token())
        sub = Subscription("s", buffer=2)
        first, second, third = (Message("s", str(i).encode()) for i in range(3))
        bridge._pending[id(sub)] = _DrainedUnderfoot([first, second])
        bridge.deliver(sub, third)
        with trio.fail_after(CEILING):
            assert await sub.receive() == third
        assert sub.statistics().gaps == 0
    finally:
        loop.close()


async def test_unsubscribing_during_a_burst_ends_that_subscription_only(
    bus: NatsBus, nats_server: NatsServer
) -> None:
    """A burst of 3,000 messages alternating between two subjects; the consumer of one
    unsubscribes after its first 10, while the burst is still being read: its iteration ends
    after what it held (an in-order prefix, no repeats, no Gap), the other subscription gets
    all 1,500, and the bridge keeps no hand-off queue for the ended one."""
    base, each = unique("t.unsub"), 1500
    with trio.fail_after(CEILING):
        leaving = await bus.subscribe(f"{base}.a", buffer=2 * each)
        staying = await bus.subscribe(f"{base}.b", buffer=2 * each)
        probe = await bus.subscribe(f"{base}.probe", buffer=1)
        await registered(bus)
        items = [(f"{base}.{tag}", f"0:{n}:{tag}".encode()) for n in range(each) for tag in "ab"]
        items.append((f"{base}.probe", b"0:0:probe"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raw_burst, nats_server, items)
            first = await take(leaving, 10)
            await bus.unsubscribe(leaving)
            rest = [item async for item in leaving]
        await take(probe, 1)
        kept = await take(staying, each)
        await bus.publish(leaving.subject, b"0:0:late")  # no one listens any more
        await bus.barrier()
    seen = [parse(m)[1] for m in first] + [parse(m)[1] for m in rest if isinstance(m, Message)]
    assert all(isinstance(m, Message) for m in rest)  # no Gap
    assert seen == list(range(len(seen)))
    assert [parse(m)[1] for m in kept] == list(range(each))
    assert staying.statistics().gaps == 0
    assert id(leaving) not in bus._bridge._pending


# -- JetStream acks read by js_publish_chains ----------------------------------------------
async def test_a_chain_stops_at_a_jetstream_error_in_its_middle_with_the_servers_reason(
    bus: NatsBus,
) -> None:
    """An API error answered with an ack (wrong expected last sequence) in the middle of a
    chain: the items before are stored and acked, the error names the server's reason, the
    items after are never sent; a chain beside it is stored in full."""
    base = unique("t.jserr")
    stream = base.upper().replace(".", "_")
    with trio.fail_after(CEILING):
        await bus.ensure_stream(stream, [f"{base}.>"], max_age=60, max_msgs=1000)
        results = await bus.js_publish_chains(
            [
                [
                    JsPublish(f"{base}.a", b"a0", f"{base}-a0"),
                    JsPublish(f"{base}.a", b"a1", f"{base}-a1"),
                    JsPublish(
                        f"{base}.a", b"a2", f"{base}-a2", {"Nats-Expected-Last-Sequence": "999"}
                    ),
                    JsPublish(f"{base}.a", b"a3", f"{base}-a3"),
                ],
                [JsPublish(f"{base}.b", f"b{i}".encode(), f"{base}-b{i}") for i in range(5)],
            ]
        )
        a = await bus.read_stream(stream, f"{base}.a", 1, 100)
        b = await bus.read_stream(stream, f"{base}.b", 1, 100)
    (a_acks, a_error), (b_acks, b_error) = results
    assert isinstance(a_error, Unavailable)
    assert "wrong last sequence" in str(a_error)
    assert [m.payload for m in a] == [b"a0", b"a1"]  # a3 was never sent
    assert [ack.seq for ack in a_acks] == [m.seq for m in a]
    assert b_error is None
    assert [(ack.stream, ack.seq) for ack in b_acks] == [(stream, m.seq) for m in b]
    assert [m.payload for m in b] == [f"b{i}".encode() for i in range(5)]


async def test_acks_are_matched_to_their_publish_under_concurrent_calls(
    nats_server: NatsServer,
) -> None:
    """Six trio tasks call ``js_publish_chains`` at once on a new bus (so the reply
    subscription is made under concurrent first calls), 8 chains of 5 each: every ack carries
    the stream sequence of exactly the message it acknowledged, and the bus made one reply
    subscription."""
    base, callers, chains, length = unique("t.acks"), 6, 8, 5
    stream = base.upper().replace(".", "_")
    results: dict[int, list[tuple[list[JsPublish], ChainResult]]] = {}
    with trio.fail_after(CEILING):
        async with open_nats_bus(nats_server.url, name="acks", op_timeout=2.0) as live:

            async def caller(n: int) -> None:
                batch = [
                    [
                        JsPublish(f"{base}.{n}.{c}", f"{n}.{c}.{i}".encode(), f"{base}-{n}-{c}-{i}")
                        for i in range(length)
                    ]
                    for c in range(chains)
                ]
                answers = await live.js_publish_chains(batch)
                results[n] = list(zip(batch, answers, strict=True))

            await live.ensure_stream(stream, [f"{base}.>"], max_age=60, max_msgs=10_000)
            async with trio.open_nursery() as nursery:
                for n in range(callers):
                    nursery.start_soon(caller, n)
            reply_subs = [s for s in live._nc._subs.values() if isinstance(s._pending_queue, _Acks)]
            stored = await live.read_stream(stream, f"{base}.>", 1, 1000)
            assert live._acks is not None
            assert live._acks.waiting == {}
    assert len(reply_subs) == 1
    seq_of = {m.payload: m.seq for m in stored}
    assert len(seq_of) == callers * chains * length
    for n in range(callers):
        for items, (acks, error) in results[n]:
            assert error is None
            assert [ack.seq for ack in acks] == [seq_of[item.payload] for item in items]
            assert {ack.stream for ack in acks} == {stream}


async def test_no_ack_is_unavailable_within_the_timeout_and_a_deleted_stream_at_once(
    nats_server: NatsServer,
) -> None:
    """A subject some core subscriber listens on but no stream stores: the server sends no
    ack and no "no responders" status, so the publish times out after the operation timeout
    (0.5 s): ``Unavailable`` for that chain, the rest of it never sent. A stream deleted
    between two calls: the next chain fails at once with the server's 503 status. A call
    cancelled while waiting for an ack leaves no waiting future behind."""
    base = unique("t.noack")
    stream = base.upper().replace(".", "_")
    with trio.fail_after(CEILING):
        async with open_nats_bus(nats_server.url, name="noack", op_timeout=0.5) as live:
            silent = await live.subscribe(f"{base}.silent", buffer=8)
            await registered(live)
            start = trio.current_time()
            ((acks, error),) = await live.js_publish_chains(
                [
                    [
                        JsPublish(f"{base}.silent", b"s0", f"{base}-s0"),
                        JsPublish(f"{base}.silent", b"s1", f"{base}-s1"),
                    ]
                ]
            )
            waited = trio.current_time() - start
            await live.publish(silent.subject, b"marker")
            received = await take(silent, 2)

            await live.ensure_stream(stream, [f"{base}.kept"], max_age=60, max_msgs=100)
            ((kept, kept_error),) = await live.js_publish_chains(
                [[JsPublish(f"{base}.kept", b"k0", f"{base}-k0")]]
            )
            deleted = await live.request(f"$JS.API.STREAM.DELETE.{stream}", b"", within=2.0)
            ((after, after_error),) = await live.js_publish_chains(
                [[JsPublish(f"{base}.kept", b"k1", f"{base}-k1")]]
            )

            with trio.move_on_after(0.1) as scope:  # cancelled while waiting for its ack
                await live.js_publish_chains([[JsPublish(f"{base}.silent", b"s2", "s2")]])
            # The asyncio side runs the cancellation before the next call's task starts.
            await live.js_publish_chains([[JsPublish(f"{base}.silent.none", b"x", "x")]])
            assert live._acks is not None
            left_waiting = dict(live._acks.waiting)
    assert acks == []
    assert isinstance(error, Unavailable)
    assert "no ack within 0.5s" in str(error)
    assert waited >= 0.5
    assert [m.payload for m in received] == [b"s0", b"marker"]  # s1 was never sent
    assert (len(kept), kept_error) == (1, None)
    assert b'"success":true' in deleted.payload
    assert after == []
    assert isinstance(after_error, Unavailable)
    assert "503" in str(after_error)  # the server's no-responders status, not a timeout
    assert scope.cancelled_caught
    assert left_waiting == {}


# -- the startup check of nats-py's internals ------------------------------------------------
def test_the_installed_nats_py_has_the_internals_the_hot_path_patches() -> None:
    check_nats_internals()  # raises NatsClientUnsupported otherwise


class _OldSubscription:
    def __init__(self, conn: object, cb: object = None) -> None:
        self._id = 1
        self._pending_queue = None


async def _process_msg_without_queue(sid: int, data: bytes) -> None:
    """A stand-in whose source does not hand messages to ``_pending_queue``."""


class _ClientWithoutTransport:
    """A ``Client`` whose connection's internals were renamed."""

    def __init__(self) -> None:
        self._flush_queue = None


class _ClientWithoutPing:
    """A ``Client`` whose PING internals (``NatsBus.flush``) were renamed."""

    def __init__(self) -> None:
        self._transport = None
        self._flush_queue = None


class _RenamedTransport:
    """A ``TcpTransport`` whose writers were renamed."""

    def __init__(self) -> None:
        self._writer = None


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"version": "2.17.0"}, "version 2.17.0 is not 2.16.x"),
        ({"subscription_cls": _OldSubscription}, "lacks _pending_size, _wait_for_msgs_task"),
        ({"process_msg": _process_msg_without_queue}, "no longer does sub._pending_size"),
        ({"client_cls": _ClientWithoutTransport}, "_ClientWithoutTransport lacks _transport"),
        ({"client_cls": _ClientWithoutPing}, "_ClientWithoutPing lacks _pongs, _send_ping"),
        (
            {"transport_cls": _RenamedTransport},
            "_RenamedTransport lacks _io_writer, _bare_io_writer",
        ),
    ],
)
def test_a_nats_py_without_those_internals_fails_loudly_naming_what_is_missing(
    kwargs: dict[str, object], reason: str
) -> None:
    check: Callable[..., None] = check_nats_internals
    with pytest.raises(NatsClientUnsupported, match=r"nats-py>=2\.16,<2\.17") as caught:
        check(**kwargs)
    assert reason in str(caught.value)
