"""Closing a ``NatsBus`` closes its socket on every path, before the bus's asyncio loop ends.

A socket left open by the bus is found later by the garbage collector, at any moment of any
later test (``ResourceWarning: unclosed <socket.socket ...>`` — seen in a cluster-spread run
on two busy pytest workers). These tests talk to a NATS "server" of their own on a trio
socket, which can stall where a real one under load might: it answers the handshake and
then stops reading, or never sends ``INFO``. Each checks what the server side sees (the
client's end closing) and that collecting the bus warns of nothing (``filterwarnings =
error``).
"""

from __future__ import annotations

import gc
import json
import logging
import weakref
from collections.abc import Awaitable, Callable

import pytest
import trio
from nats.aio.transport import TcpTransport

from fechatter.bus import NatsBus, open_nats_bus
from fechatter.bus.base import BusState
from fechatter.bus.nats import _socket_closed
from fechatter.errors import Unavailable

CEILING = 10.0
INFO = {
    "server_id": "stalling",
    "version": "2.10.0",
    "proto": 1,
    "headers": True,
    "max_payload": 8 * 1024 * 1024,
}
# What the fake server does with one accepted connection: given the stream (closed by the
# caller when this returns) and an event to set once the connection is where the test wants.
Behaviour = Callable[[trio.SocketStream, trio.Event], Awaitable[None]]


async def read_until(stream: trio.SocketStream, marker: bytes, seen: bytearray) -> None:
    """Read from ``stream`` into ``seen`` until ``marker`` is in it (EOF: an error)."""
    while marker not in seen:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError(f"the client hung up before sending {marker!r}")
        seen += chunk


async def until_closed(stream: trio.SocketStream) -> None:
    """Read and discard until the client's end is closed (EOF or reset)."""
    try:
        while await stream.receive_some(1 << 20):
            pass
    except trio.BrokenResourceError:  # a reset: closed too
        pass


async def handshake_then_stop_reading(stream: trio.SocketStream, stalled: trio.Event) -> None:
    seen = bytearray()
    await stream.send_all(b"INFO " + json.dumps(INFO).encode() + b"\r\n")
    await read_until(stream, b"PING\r\n", seen)
    await stream.send_all(b"PONG\r\n")
    stalled.set()
    await trio.sleep_forever()  # not reading: the client's writes fill the socket buffers


async def never_say_info(stream: trio.SocketStream, stalled: trio.Event) -> None:
    stalled.set()
    await trio.sleep_forever()


async def closing(
    behave: Behaviour,
    stream: trio.SocketStream,
    stalled: trio.Event,
) -> None:
    async with stream:  # the server's end: closed when the test ends
        await behave(stream, stalled)


async def serve_one(
    nursery: trio.Nursery, behave: Behaviour, *, accepts: int = 16
) -> tuple[str, trio.Event, trio.MemoryReceiveChannel[trio.SocketStream]]:
    """A listener on a free port that runs ``behave`` on each connection (in ``nursery``)
    and closes after ``accepts`` of them (later connects are refused); its URL, an event set
    once a connection is stalled, and the accepted streams (a channel that holds them all)."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    stalled = trio.Event()
    send, receive = trio.open_memory_channel[trio.SocketStream](accepts)

    async def accept() -> None:
        async with listener:
            for _ in range(accepts):
                stream = await listener.accept()
                send.send_nowait(stream)  # room for every one of them
                nursery.start_soon(closing, behave, stream, stalled)

    nursery.start_soon(accept)
    return f"nats://127.0.0.1:{port}", stalled, receive


async def test_closing_while_the_server_stopped_reading_still_closes_the_socket() -> None:
    """nats-py's close flushes what is pending, then waits for the transport to be lost; a
    server that stopped reading holds both forever. The close gives up at the operation
    timeout, and the connection is still aborted, before the bus's loop ends."""
    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            url, stalled, accepted = await serve_one(nursery, handshake_then_stop_reading)
            async with open_nats_bus(url, name="stalled-reader", op_timeout=0.5) as live:
                await stalled.wait()
                with pytest.raises(Unavailable):  # the socket buffers fill up: a timeout
                    await publish_until_stuck(live)
                client = accepted.receive_nowait()
            # The bus still exists (``live``): only a close, not the collector, can end it.
            await until_closed(client)
            nursery.cancel_scope.cancel()
    gone = weakref.ref(live)
    del live  # its last reference: collecting it must find its socket closed already
    assert_collected_clean(gone)


async def test_a_connect_that_times_out_before_info_closes_its_socket() -> None:
    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            url, _, accepted = await serve_one(nursery, never_say_info)
            with pytest.raises(Unavailable):
                async with open_nats_bus(url, name="no-info", op_timeout=0.5):
                    pass
            client = accepted.receive_nowait()
            await until_closed(client)
            nursery.cancel_scope.cancel()
    gc.collect()


async def publish_until_stuck(bus: NatsBus) -> None:
    """Publish 4 MiB payloads, 256 MiB at most (far more than any socket buffer), until one
    is not written within the bus's operation timeout (``Unavailable``)."""
    chunk = b"x" * (4 * 1024 * 1024)
    for _ in range(64):
        await bus.publish("t.stall", chunk)


async def test_a_connect_cancelled_from_outside_before_info_closes_its_socket() -> None:
    """The caller gives up (a ``fail_after`` around a node's start, a test's teardown) while
    nats-py waits for ``INFO``: the asyncio task is left running on its own, and nats-py
    retries forever; the close ends it and closes its socket."""
    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            url, stalled, accepted = await serve_one(nursery, never_say_info)
            with trio.CancelScope() as scope:
                nursery.start_soon(cancel_when_set, stalled, scope)
                async with open_nats_bus(url, name="given-up", op_timeout=5.0):
                    pass
            assert scope.cancelled_caught
            client = accepted.receive_nowait()
            await until_closed(client)
            nursery.cancel_scope.cancel()
    gc.collect()


async def handshake_then_hang_up(stream: trio.SocketStream, stalled: trio.Event) -> None:
    seen = bytearray()
    await stream.send_all(b"INFO " + json.dumps(INFO).encode() + b"\r\n")
    await read_until(stream, b"PING\r\n", seen)
    await stream.send_all(b"PONG\r\n")


def first_hang_up_then_stall() -> Behaviour:
    """A server whose first connection is served and then closed by the server; the next
    ones (the client's reconnect) get no ``INFO``."""
    served = False

    async def behave(stream: trio.SocketStream, stalled: trio.Event) -> None:
        nonlocal served
        if not served:
            served = True
            await handshake_then_hang_up(stream, stalled)
            return
        await never_say_info(stream, stalled)

    return behave


async def test_closing_during_a_pending_reconnect_closes_the_new_socket() -> None:
    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            url, stalled, accepted = await serve_one(nursery, first_hang_up_then_stall())
            async with open_nats_bus(url, name="reconnecting", op_timeout=0.5) as live:
                await stalled.wait()  # the reconnect's connection, waiting for INFO
                first = accepted.receive_nowait()
                again = accepted.receive_nowait()
            await until_closed(again)
            await first.aclose()
            nursery.cancel_scope.cancel()
    gone = weakref.ref(live)
    del live  # its last reference: collecting it must find its socket closed already
    assert_collected_clean(gone)


def first_refused_then_stall() -> Behaviour:
    """A server whose first connection is closed at once (the client's attempt fails in the
    handshake); the next ones (its retry) get no ``INFO``."""
    refused = False

    async def behave(stream: trio.SocketStream, stalled: trio.Event) -> None:
        nonlocal refused
        if not refused:
            refused = True
            return  # ``closing`` hangs up
        await never_say_info(stream, stalled)

    return behave


@pytest.mark.parametrize("give_up", ["timeout", "cancelled"])
async def test_a_connect_retrying_after_a_failed_attempt_closes_the_retrys_socket(
    give_up: str,
) -> None:
    """nats-py's connect marks the client closed after a failed attempt and then retries
    (forever, here): the retry's socket is open while the client says it is closed, so a
    close that trusts ``is_closed`` leaves it open."""
    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            url, stalled, accepted = await serve_one(nursery, first_refused_then_stall())
            with trio.CancelScope() as scope:
                if give_up == "cancelled":
                    nursery.start_soon(cancel_when_set, stalled, scope)
                with pytest.raises(Unavailable):  # (timeout): no INFO within 1 s
                    async with open_nats_bus(url, name="retrying", op_timeout=1.0):
                        pass
            assert scope.cancelled_caught == (give_up == "cancelled")
            await accepted.receive_nowait().aclose()
            retry = accepted.receive_nowait()
            await until_closed(retry)
            nursery.cancel_scope.cancel()
    gc.collect()


async def cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def assert_collected_clean(bus: weakref.ref[NatsBus]) -> None:
    """The closed bus behind ``bus`` (its caller dropped its last reference) is collected,
    and warns of nothing: an unclosed socket or transport is a ``ResourceWarning``, reported
    as unraisable and so an error under ``filterwarnings = error``."""
    gc.collect()
    assert bus() is None, gc.get_referrers(bus())


async def test_closing_a_lost_connection_with_bytes_pending_logs_one_warning_and_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server hung up and is gone (reconnects refused) while the client holds bytes
    for it: nats-py's close then drains the lost connection and raises
    ``ConnectionResetError``. The close logs one warning line, no error or traceback, and
    still closes the socket."""
    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            url, _, accepted = await serve_one(nursery, handshake_then_hang_up, accepts=1)
            async with open_nats_bus(url, name="lost", op_timeout=0.5) as live:
                await live.wait_state(BusState.RECONNECTING)
                await publish_past_the_check(live)
                assert live._nc._pending_data_size > 0
                transport = live._nc._transport
                assert isinstance(transport, TcpTransport)
                writer = transport._io_writer
                assert writer is not None
            assert _socket_closed(writer)
            await accepted.receive_nowait().aclose()
            nursery.cancel_scope.cancel()
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert problems == []
    (warning,) = [r for r in caplog.records if r.getMessage().startswith("nats close")]
    assert warning.getMessage() == (
        "nats close failed: ConnectionResetError('Connection lost'); its connection was aborted"
    )
    del writer, transport
    gone = weakref.ref(live)
    del live  # its last reference: collecting it must find its socket closed already
    assert_collected_clean(gone)


async def publish_past_the_check(bus: NatsBus) -> None:
    """What a ``publish`` that passed ``_require_connected`` just before the loss reached trio
    does: hand nats-py a message, which it buffers for the reconnect."""
    nc = bus._nc
    await bus._call(lambda: nc.publish("t.lost", b"pending"))


async def test_a_connect_that_never_reached_nats_py_closes_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """nats-py rejects the URL before it sets anything up: nothing to close, so the close
    says nothing (it used to warn that nats-py's close did not finish)."""
    with trio.fail_after(CEILING), pytest.raises(Unavailable, match="invalid connect url"):
        async with open_nats_bus("nats://127.0.0.1:notaport", name="bad-url", op_timeout=0.5):
            pass
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
