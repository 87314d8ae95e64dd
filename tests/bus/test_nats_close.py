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
from collections.abc import Awaitable, Callable

import pytest
import trio

from fechatter.bus import NatsBus, open_nats_bus
from fechatter.errors import Unavailable

CEILING = 10.0
INFO = {
    "server_id": "stalling",
    "version": "2.10.0",
    "proto": 1,
    "headers": True,
    "max_payload": 8 * 1024 * 1024,
}


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
    behave: Callable[[trio.SocketStream, trio.Event], Awaitable[None]],
    stream: trio.SocketStream,
    stalled: trio.Event,
) -> None:
    async with stream:  # the server's end: closed when the test ends
        await behave(stream, stalled)


async def serve_one(
    nursery: trio.Nursery,
    behave: Callable[[trio.SocketStream, trio.Event], Awaitable[None]],
) -> tuple[str, trio.Event, trio.MemoryReceiveChannel[trio.SocketStream]]:
    """A listener on a free port that runs ``behave`` on each connection (in ``nursery``);
    its URL, an event set once a connection is stalled, and the accepted streams."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    stalled = trio.Event()
    send, receive = trio.open_memory_channel[trio.SocketStream](16)

    async def accept() -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                send.send_nowait(stream)  # the tests open one or two connections
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
    assert_collects_clean(live)


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


async def first_hang_up_then_stall(stream: trio.SocketStream, stalled: trio.Event) -> None:
    """The first connection is served and then closed by the server; the next one (the
    client's reconnect) gets no ``INFO``."""
    if not stalled.is_set() and not getattr(first_hang_up_then_stall, "served", False):
        first_hang_up_then_stall.served = True  # type: ignore[attr-defined]
        await handshake_then_hang_up(stream, stalled)
        return
    await never_say_info(stream, stalled)


async def test_closing_during_a_pending_reconnect_closes_the_new_socket() -> None:
    first_hang_up_then_stall.served = False  # type: ignore[attr-defined]
    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            url, stalled, accepted = await serve_one(nursery, first_hang_up_then_stall)
            async with open_nats_bus(url, name="reconnecting", op_timeout=0.5) as live:
                await stalled.wait()  # the reconnect's connection, waiting for INFO
                first = accepted.receive_nowait()
                again = accepted.receive_nowait()
            await until_closed(again)
            await first.aclose()
            nursery.cancel_scope.cancel()
    assert_collects_clean(live)


async def first_refused_then_stall(stream: trio.SocketStream, stalled: trio.Event) -> None:
    """The first connection is closed at once (the client's attempt fails in the handshake);
    the next one (its retry) gets no ``INFO``."""
    if not getattr(first_refused_then_stall, "refused", False):
        first_refused_then_stall.refused = True  # type: ignore[attr-defined]
        return  # ``closing`` hangs up
    await never_say_info(stream, stalled)


@pytest.mark.parametrize("give_up", ["timeout", "cancelled"])
async def test_a_connect_retrying_after_a_failed_attempt_closes_the_retrys_socket(
    give_up: str,
) -> None:
    """nats-py's connect marks the client closed after a failed attempt and then retries
    (forever, here): the retry's socket is open while the client says it is closed, so a
    close that trusts ``is_closed`` leaves it open."""
    first_refused_then_stall.refused = False  # type: ignore[attr-defined]
    with trio.fail_after(CEILING):
        async with trio.open_nursery() as nursery:
            url, stalled, accepted = await serve_one(nursery, first_refused_then_stall)
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


def assert_collects_clean(bus: NatsBus) -> None:
    """Dropping the last reference to a closed bus warns of nothing (a ResourceWarning here
    is an error under ``filterwarnings = error``, reported as unraisable)."""
    del bus
    gc.collect()
