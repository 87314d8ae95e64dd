"""NatsBus against a real nats-server (tests/nats.py): core pub/sub, request/reply,
JetStream dedup and replay, the Gap signal, a server outage under a live bus, and the bus's
asyncio thread: owned by ``open_nats_bus``, joined on exit, invisible to other asyncio users."""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator

import pytest
import trio

from fechatter.bus import (
    BusState,
    Gap,
    JsPublish,
    Message,
    NatsBus,
    NoResponders,
    RequestTimeout,
    open_nats_bus,
)
from fechatter.bus.base import Subscription
from fechatter.errors import Unavailable
from tests.nats import NatsServer

CEILING = 10.0
_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A subject/stream prefix of its own, so tests on the shared server never meet."""
    return f"{prefix}{next(_names)}"


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[NatsBus]:
    async with open_nats_bus(nats_server.url, op_timeout=2.0) as opened:
        yield opened


async def messages(sub: object, n: int) -> list[Message]:
    out: list[Message] = []
    for _ in range(n):
        item = await sub.receive()  # type: ignore[attr-defined]
        assert isinstance(item, Message), item
        out.append(item)
    return out


async def test_publish_subscribe_roundtrip_with_headers(bus: NatsBus) -> None:
    subject = unique("t.rt")
    with trio.fail_after(CEILING):
        sub = await bus.subscribe(subject, buffer=8)
        await bus.publish(subject, b"hello", {"X-Kind": "greeting"})
        (got,) = await messages(sub, 1)
    assert (got.subject, got.payload) == (subject, b"hello")
    assert got.headers == {"X-Kind": "greeting"}


async def test_order_per_subject_and_wildcards(bus: NatsBus) -> None:
    base = unique("t.chat")
    with trio.fail_after(CEILING):
        one = await bus.subscribe(f"{base}.*.events", buffer=500)
        deep = await bus.subscribe(f"{base}.>", buffer=500)
        for i in range(200):
            await bus.publish(f"{base}.{i % 2}.events", str(i).encode())
        await bus.publish(f"{base}.0.other", b"not for *.events")
        got = await messages(one, 200)
        everything = await messages(deep, 201)
    for chat in ("0", "1"):
        seen = [int(m.payload) for m in got if m.subject == f"{base}.{chat}.events"]
        assert seen == sorted(seen)
        assert len(seen) == 100
    assert everything[-1].subject == f"{base}.0.other"


async def test_unsubscribe_ends_the_iteration(bus: NatsBus) -> None:
    subject = unique("t.unsub")
    with trio.fail_after(CEILING):
        sub = await bus.subscribe(subject, buffer=4)
        await bus.publish(subject, b"1")
        (first,) = await messages(sub, 1)
        await bus.unsubscribe(sub)
        assert [item async for item in sub] == []
    assert first.payload == b"1"


async def test_request_reply_no_responders_and_timeout(bus: NatsBus) -> None:
    subject = unique("t.rr")

    async def upper(message: Message) -> bytes:
        return message.payload.upper()

    hold = trio.Event()

    async def stuck(message: Message) -> bytes:
        await hold.wait()
        return b""

    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(bus.serve_requests, subject, upper, buffer=4))
            reply = await bus.request(subject, b"ping", within=2.0)
            assert reply.payload == b"PING"
            await nursery.start(
                functools.partial(bus.serve_requests, f"{subject}.slow", stuck, buffer=4)
            )
            with pytest.raises(RequestTimeout):
                await bus.request(f"{subject}.slow", b"x", within=0.2)
            hold.set()
            nursery.cancel_scope.cancel()
        with pytest.raises(NoResponders):
            await bus.request(f"{subject}.nobody", b"x", within=2.0)


async def test_a_call_failing_as_its_caller_gives_up_leaves_no_unretrieved_exception(
    bus: NatsBus,
) -> None:
    """A bridge call cancelled on the trio side while its asyncio task is running, which then
    fails (a request answered "no responders" as its caller's deadline passes: asyncio's
    wait_for in 3.11 lets the result win over the cancellation): the failure is nobody's to
    raise, and its task must not be left holding an unretrieved exception, which asyncio
    logs as "Task exception was never retrieved" (an ERROR with a traceback in a node's log)
    when the task is freed. ``_log_traceback`` is the flag asyncio's finalizer checks; when
    the task is freed depends on the garbage collector, so the flag is what is asserted.
    Seen under load in tests/cluster/test_leave_procs.py."""
    started = threading.Event()
    tasks: list[asyncio.Future[object]] = []

    async def fails() -> None:  # on the bus's asyncio thread
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        started.set()
        try:
            await asyncio.sleep(CEILING)  # until the trio side's cancellation reaches it
        except asyncio.CancelledError:
            # What nats-py's request does when its reply and the cancellation meet.
            raise RuntimeError("failed after its caller gave up") from None

    async def nothing() -> None:
        return None

    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bus._bridge.call, fails)
            assert await trio.to_thread.run_sync(started.wait, CEILING)
            nursery.cancel_scope.cancel()
        # The loop runs in order: the cancellation, the failure it turned into, then this.
        await bus._bridge.call(nothing)
    [task] = tasks
    assert task.done()
    assert not task._log_traceback, task


@pytest.mark.expect_log_errors("request handler on .* failed", reason="the handler raises")
async def test_a_failing_handler_is_a_clear_error_not_a_timeout(bus: NatsBus) -> None:
    subject = unique("t.fail")

    async def broken(message: Message) -> bytes:
        raise ValueError("boom")

    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(bus.serve_requests, subject, broken, buffer=4))
            with pytest.raises(Unavailable, match="ValueError"):
                await bus.request(subject, b"x", within=2.0)
            nursery.cancel_scope.cancel()


async def test_jetstream_dedup_by_msg_id_and_replay_from_a_sequence(bus: NatsBus) -> None:
    stream, base = unique("T_S"), unique("t.js")
    with trio.fail_after(CEILING):
        await bus.ensure_stream(stream, [f"{base}.>"], max_age=60, max_msgs=1000)
        await bus.ensure_stream(stream, [f"{base}.>"], max_age=120, max_msgs=1000)  # update
        first = await bus.js_publish(f"{base}.a", b"e1", msg_id="chat-1-seq-1")
        again = await bus.js_publish(f"{base}.a", b"e1", msg_id="chat-1-seq-1")
        for i in range(2, 6):
            await bus.js_publish(f"{base}.a", f"e{i}".encode(), msg_id=f"chat-1-seq-{i}")
            await bus.js_publish(f"{base}.b", b"other", msg_id=f"chat-2-seq-{i}")
        all_a = await bus.read_stream(stream, f"{base}.a", 1, 100)
        from_third = await bus.read_stream(stream, f"{base}.a", all_a[2].seq, 100)
        capped = await bus.read_stream(stream, f"{base}.>", 1, 3)
        past_end = await bus.read_stream(stream, f"{base}.a", all_a[-1].seq + 1, 100)
    assert not first.duplicate
    assert again.duplicate
    assert again.seq == first.seq
    assert [m.payload for m in all_a] == [b"e1", b"e2", b"e3", b"e4", b"e5"]
    assert [m.payload for m in from_third] == [b"e3", b"e4", b"e5"]
    assert [m.seq for m in capped] == sorted(m.seq for m in capped)
    assert len(capped) == 3
    assert past_end == []


async def test_publish_chains_store_each_chain_in_order_and_stop_a_chain_at_its_failure(
    bus: NatsBus,
) -> None:
    """One call, three chains: each stored in its order (dedup by msg id as ``js_publish``);
    a chain whose second item has no stream stops there — its third item is never sent —
    while the other chains are stored in full."""
    base = unique("t.chains")
    stream = base.upper().replace(".", "_")
    with trio.fail_after(CEILING):
        await bus.ensure_stream(stream, [f"{base}.s.>"], max_age=60, max_msgs=1000)
        await bus.js_publish(f"{base}.s.a", b"a0", msg_id=f"{base}-a-0")
        results = await bus.js_publish_chains(
            [
                [JsPublish(f"{base}.s.a", f"a{i}".encode(), f"{base}-a-{i}") for i in range(4)],
                [JsPublish(f"{base}.s.b", f"b{i}".encode(), f"{base}-b-{i}") for i in range(3)],
                [
                    JsPublish(f"{base}.s.c", b"c0", f"{base}-c-0", {"Fx-Seq": "1"}),
                    JsPublish(f"{base}.nowhere", b"lost", f"{base}-x"),
                    JsPublish(f"{base}.s.c", b"c2", f"{base}-c-2"),
                ],
            ]
        )
        a = await bus.read_stream(stream, f"{base}.s.a", 1, 100)
        b = await bus.read_stream(stream, f"{base}.s.b", 1, 100)
        c = await bus.read_stream(stream, f"{base}.s.c", 1, 100)
    (a_acks, a_error), (b_acks, b_error), (c_acks, c_error) = results
    assert (a_error, b_error) == (None, None)
    assert [ack.duplicate for ack in a_acks] == [True, False, False, False]
    assert [m.payload for m in a] == [b"a0", b"a1", b"a2", b"a3"]
    assert [m.payload for m in b] == [b"b0", b"b1", b"b2"]
    assert [m.seq for m in b] == [ack.seq for ack in b_acks]
    assert isinstance(c_error, Unavailable)
    assert len(c_acks) == 1
    assert [m.payload for m in c] == [b"c0"]  # c2 was never sent
    assert (c[0].headers or {}).get("Fx-Seq") == "1"


async def test_a_full_buffer_becomes_a_gap_never_a_silent_loss(bus: NatsBus) -> None:
    subject = unique("t.gap")
    with trio.fail_after(CEILING):
        sub = await bus.subscribe(subject, buffer=5)
        for i in range(12):
            await bus.publish(subject, str(i).encode())
        # A request round trip through the server orders after the publishes: all 12 have
        # reached the client (and the subscription) once it returns.
        probe = await bus.subscribe(f"{subject}.probe", buffer=1)
        await bus.publish(f"{subject}.probe", b"")
        await probe.receive()
        stats = sub.statistics()
        first = await messages(sub, 5)
        gap = await sub.receive()
        await bus.publish(subject, b"after")
        (after,) = await messages(sub, 1)
    assert [int(m.payload) for m in first] == [0, 1, 2, 3, 4]
    assert gap == Gap(7)
    assert stats.buffered == 6  # five messages and the gap marker: the bound is buffer + 1
    assert after.payload == b"after"
    final = sub.statistics()
    assert (final.delivered, final.dropped, final.gaps) == (6, 7, 1)


async def test_a_lost_connection_marker_drops_nothing_and_never_overfills() -> None:
    with trio.fail_after(CEILING):
        sub = Subscription("t.lost", buffer=3)
        sub._offer(Message("t.lost", b"0"))
        sub.connection_lost()  # a slot of its own: later messages still enter
        sub._offer(Message("t.lost", b"1"))
        assert [await sub.receive() for _ in range(3)] == [
            Message("t.lost", b"0"),
            Gap(0),
            Message("t.lost", b"1"),
        ]
        for i in range(3):
            sub._offer(Message("t.lost", str(i).encode()))
        sub.connection_lost()  # full: a drop of one instead, reported by its one marker
        sub._offer(Message("t.lost", b"dropped too"))
        sub.connection_lost()  # a gap is waiting: it covers this
        assert sub.statistics().buffered == 4  # the bound: buffer + 1
        items = [await sub.receive() for _ in range(4)]
        assert items[3] == Gap(2)
        assert (sub.statistics().gaps, sub.statistics().dropped) == (2, 2)


async def test_the_watcher_hears_of_every_item_put_in_the_buffer_the_lost_connection_too() -> None:
    # The node's Sequencer waits only for the subscriptions ``on_offer`` reported: an item it
    # was not told of (the connection-lost marker) would let a release pass run before the
    # chat's reader took it and started its catch-up (older events released after newer ones).
    with trio.fail_after(CEILING):
        sub = Subscription("t.watch", buffer=2)
        told: list[int] = []
        sub.on_offer = lambda s: told.append(s.offered)
        sub._offer(Message("t.watch", b"0"))
        await sub.receive()
        sub.connection_lost()  # an idle subscription: its marker is its only backlog
        assert told == [1, 2]
        await sub.receive()
        sub._mark_gap(3)
        assert told == [1, 2, 3]


async def test_a_flush_given_up_on_leaves_the_connection_receiving() -> None:
    """A flush whose wait ends before its PONG (the caller cancelled, or the operation
    timeout) must not break the connection when the PONG comes later: nats-py's own flush
    left a cancelled future queued, its late PONG raised in the read loop, which ended, and
    nothing was received any more while the bus still said connected. The server is paused
    (SIGSTOP) so the PONGs come late, then resumed."""
    server = NatsServer.create()
    try:
        with trio.fail_after(3 * CEILING):
            async with (
                open_nats_bus(server.url, name="paused", op_timeout=0.5) as bus,
                open_nats_bus(server.url, name="other", op_timeout=2.0) as other,
            ):
                subject = unique("t.late-pong")
                sub = await bus.subscribe(subject, buffer=8)
                await bus.flush()
                assert server._process is not None
                pid = server._process.pid
                os.kill(pid, signal.SIGSTOP)
                try:
                    with trio.move_on_after(0.1) as scope:  # the caller gives up
                        await bus.flush()
                    assert scope.cancelled_caught
                    with pytest.raises(Unavailable, match="did not answer within"):
                        await bus.flush()  # the operation timeout gives up
                finally:
                    os.kill(pid, signal.SIGCONT)
                await bus.flush()  # its PONG comes after the two late ones
                await other.publish(subject, b"still receiving")
                got = await sub.receive()
                assert isinstance(got, Message)
                assert got.payload == b"still receiving"
                assert bus.state is BusState.CONNECTED
    finally:
        server.stop_and_remove()


async def test_server_outage_raises_unavailable_then_reconnects() -> None:
    server = NatsServer.create()
    try:
        with trio.fail_after(3 * CEILING):
            async with open_nats_bus(server.url, op_timeout=1.0) as live:
                subject = unique("t.outage")
                sub = await live.subscribe(subject, buffer=8)
                server.stop()
                await live.wait_state(BusState.RECONNECTING)
                with trio.fail_after(1.5):  # within the bus's operation timeout, no hang
                    with pytest.raises(Unavailable):
                        await live.publish(subject, b"lost")
                    with pytest.raises(Unavailable):
                        await live.request(subject, b"x", within=0.5)
                    with pytest.raises(Unavailable, match="reconnecting"):
                        await live.flush()
                server.start()
                await live.wait_state(BusState.CONNECTED)
                await live.flush()  # a round trip again
                await live.publish(subject, b"back")  # the subscription was re-sent on reconnect
                # What was published while disconnected is lost to it: a Gap(0) says so, in
                # its place, before what the new connection brings (which it does not drop).
                assert await sub.receive() == Gap(0)
                (got,) = await messages(sub, 1)
                assert got.payload == b"back"
                assert sub.statistics().gaps == 1
            assert live.state is BusState.CLOSED
    finally:
        server.stop_and_remove()


async def test_a_reconnect_refused_during_the_handshake_leaves_no_unclosed_connection() -> None:
    server = NatsServer.create()
    try:
        with trio.fail_after(3 * CEILING):
            async with open_nats_bus(server.url, op_timeout=1.0) as live:
                server.stop()
                await live.wait_state(BusState.RECONNECTING)
                # On the server's port, something that accepts and hangs up at once: nats-py's
                # attempts connect, then fail in the handshake (UnexpectedEOF).
                (listener,) = await trio.open_tcp_listeners(server.port, host="127.0.0.1")
                for _ in range(3):
                    conn = await listener.accept()
                    await conn.aclose()
                await listener.aclose()
                server.start()
                await live.wait_state(BusState.CONNECTED)
        # Each failed attempt's connection was closed: collecting it warns of nothing
        # (filterwarnings = error turns a ResourceWarning here into a failure).
        gc.collect()
    finally:
        server.stop_and_remove()


async def test_connecting_to_nothing_is_unavailable() -> None:
    server = NatsServer.create()
    url = server.url
    server.stop_and_remove()
    with trio.fail_after(CEILING), pytest.raises(Unavailable):
        async with open_nats_bus(url, op_timeout=1.0):
            pass


# The asyncio functions trio-asyncio monkeypatches on import (its _loop.py).
STDLIB_ASYNCIO = (
    "new_event_loop",
    "get_event_loop",
    "set_event_loop",
    "get_running_loop",
    "_get_running_loop",
    "get_event_loop_policy",
    "set_event_loop_policy",
    "current_task",
)


def bus_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nats-bus-")]


async def test_the_bus_leaves_asyncio_alone(nats_server: NatsServer) -> None:
    """Another asyncio user in the process (Playwright's sync API, a library running its own
    loop in a thread) must not see the bus: no patched asyncio functions, no policy, no loop
    left behind, and the bus's thread is gone after the bus closes."""
    before = bus_threads()
    with trio.fail_after(CEILING):
        async with open_nats_bus(nats_server.url, name="asyncio-alone", op_timeout=2.0) as live:
            assert [t.name for t in bus_threads()] == ["nats-bus-asyncio-alone"]
            sub = await live.subscribe(unique("t.alone"), buffer=1)
            await live.publish(sub.subject, b"x")
            await messages(sub, 1)
        assert bus_threads() == before

        async def running_loop_type() -> type[asyncio.AbstractEventLoop]:
            return type(asyncio.get_running_loop())

        loop_type = await trio.to_thread.run_sync(asyncio.run, running_loop_type())
    assert loop_type is asyncio.SelectorEventLoop
    # trio-asyncio replaces these in both asyncio and asyncio.events, so compare by origin.
    patched = {
        name: getattr(asyncio, name).__module__
        for name in STDLIB_ASYNCIO
        if getattr(asyncio, name).__module__ not in ("asyncio.events", "asyncio.tasks", "_asyncio")
    }
    assert patched == {}
    assert type(asyncio.get_event_loop_policy()).__module__.startswith("asyncio.")
    assert "trio_asyncio" not in sys.modules


def test_importing_the_bus_does_not_import_trio_asyncio() -> None:
    probe = (
        "import sys, fechatter.bus, fechatter.bus.nats; "
        "sys.exit(1 if 'trio_asyncio' in sys.modules else 0)"
    )
    done = subprocess.run([sys.executable, "-c", probe], timeout=CEILING, check=False)
    assert done.returncode == 0


async def test_a_cancelled_body_still_stops_and_joins_the_bus_thread(
    nats_server: NatsServer,
) -> None:
    before = bus_threads()
    with trio.fail_after(CEILING):
        with trio.CancelScope() as scope:
            async with open_nats_bus(nats_server.url, name="cancelled", op_timeout=2.0) as live:
                await live.subscribe(unique("t.cancel"), buffer=1)
                scope.cancel()
                await trio.sleep_forever()
    assert scope.cancelled_caught
    assert live.state is BusState.CLOSED
    assert bus_threads() == before
