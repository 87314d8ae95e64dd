"""The outbox state machine, close reasons and stream timers, fed bytes and times (no socket).

The outbox writes through a ``Sink`` standing in for a non-blocking socket's send buffer.
"""

from __future__ import annotations

import itertools
import math
import sys
import tracemalloc
from collections.abc import Callable

import pytest

from fechatter.close_reasons import CloseReason
from fechatter.realtime.protocol.outbox import Outbox, OutboxState, Progress, Push
from fechatter.realtime.protocol.timers import Due, Timers


class Sink:
    """A send buffer with ``room`` free bytes: takes what fits, raises like ``socket.send``."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.wire = bytearray()
        self.gone = False

    def write(self, data: bytes | memoryview) -> int:
        if self.gone:
            raise BrokenPipeError(32, "Broken pipe")
        taken = min(self.room, len(data))
        if not taken:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.wire += data[:taken]
        self.room -= taken
        return taken

    def drain(self, outbox: Outbox) -> list[Progress]:
        """The peer reads everything; the writer writes until the queue is empty."""
        steps = []
        while outbox.queued:
            self.room = 1 << 30
            steps.append(outbox.write_some())
        return steps


def _open(sink: Sink, max_events: int = 3, max_bytes: int = 100) -> Outbox:
    outbox = Outbox(sink.write, max_events, max_bytes)
    assert outbox.primed() is False  # nothing was queued while priming
    assert outbox.state is OutboxState.IDLE
    return outbox


def test_push_writes_through_while_nothing_is_queued() -> None:
    sink = Sink(room=1000)
    outbox = _open(sink)
    assert [outbox.push(b"one"), outbox.push(b"two")] == [Push.SENT, Push.SENT]
    assert (bytes(sink.wire), outbox.queued, outbox.state) == (b"onetwo", 0, OutboxState.IDLE)


def test_a_full_socket_queues_behind_a_half_written_frame_then_drains() -> None:
    sink = Sink(room=2)
    outbox = _open(sink)
    assert outbox.push(b"abcd") is Push.QUEUED  # "ab" went out, "cd" waits
    assert outbox.push(b"ef") is Push.QUEUED  # never overtakes the queue
    assert (outbox.state, outbox.queued, outbox.queued_bytes) == (OutboxState.BACKLOGGED, 2, 4)
    assert outbox.write_some() is Progress.BLOCKED  # still full
    sink.room = 1
    assert outbox.write_some() is Progress.MORE  # "c"
    assert sink.drain(outbox) == [Progress.MORE, Progress.DRAINED]
    assert (bytes(sink.wire), outbox.state, outbox.queued_bytes) == (b"abcdef", OutboxState.IDLE, 0)
    assert outbox.write_some() is Progress.DRAINED
    assert outbox.push(b"g") is Push.SENT


@pytest.mark.parametrize(
    ("max_events", "max_bytes"), [(2, 1000), (100, 5)], ids=["events", "bytes"]
)
def test_an_overflow_is_a_slow_consumer_keeping_only_the_half_written_frame(
    max_events: int, max_bytes: int
) -> None:
    sink = Sink(room=1)
    outbox = _open(sink, max_events, max_bytes)
    assert [outbox.push(b"ab"), outbox.push(b"cd")] == [Push.QUEUED, Push.QUEUED]
    assert outbox.push(b"efg") is Push.OVERFLOW
    assert (outbox.state, outbox.close_reason) == (OutboxState.CLOSING, CloseReason.SLOW_CONSUMER)
    assert outbox.push(b"h") is Push.CLOSED
    assert outbox.fail(CloseReason.TOKEN_REVOKED) is False  # the first reason stays
    outbox.finish(b"<close>", CloseReason.GOING_AWAY)
    assert outbox.close_reason is CloseReason.SLOW_CONSUMER
    sink.drain(outbox)
    assert sink.wire == b"ab<close>"  # the frame "ab" whole, then the close frame


def test_other_reasons_keep_the_queue_ahead_of_the_close_frame() -> None:
    sink = Sink(room=0)
    outbox = _open(sink)
    assert outbox.push(b"queued") is Push.QUEUED
    assert outbox.fail(CloseReason.TOKEN_REVOKED) is True
    assert outbox.push(b"dropped") is Push.CLOSED
    outbox.finish(b"<close>", CloseReason.TOKEN_REVOKED)
    sink.drain(outbox)
    assert sink.wire == b"queued<close>"


def test_priming_goes_first_and_does_not_count_against_the_bytes() -> None:
    sink = Sink(room=1000)
    outbox = Outbox(sink.write, 10, 12)
    assert outbox.state is OutboxState.PRIMING
    assert outbox.push(b"live-1") is Push.QUEUED  # queued, not written, while priming
    outbox.prime(b"HTTP/1.1 200 OK\r\n\r\n<ready><replay>")
    assert outbox.push(b"live-2") is Push.QUEUED  # 12 live bytes: the opening is not counted
    assert outbox.push(b"x") is Push.OVERFLOW  # 13
    assert sink.wire == b""

    sink2 = Sink(room=1000)
    outbox = Outbox(sink2.write, 3, 100)
    outbox.push(b"live")
    outbox.prime(b"<opening>")
    assert sink2.drain(outbox) == [Progress.MORE, Progress.DRAINED]
    assert outbox.state is OutboxState.PRIMING  # until the connection says it is primed
    assert outbox.primed() is False
    assert sink2.wire == b"<opening>live"
    with pytest.raises(RuntimeError):
        outbox.prime(b"again")


def test_an_overflow_while_priming_keeps_the_opening() -> None:
    """The response head must go out before the close frame that follows an overflow."""
    sink = Sink(room=1000)
    outbox = Outbox(sink.write, 2, 100)
    outbox.prime(b"<opening>")
    assert outbox.push(b"e1") is Push.QUEUED
    assert outbox.push(b"e2") is Push.OVERFLOW
    assert outbox.close_reason is CloseReason.SLOW_CONSUMER
    assert sink.drain(outbox)[-1] is Progress.DRAINED
    assert sink.wire == b"<opening>"


def test_events_pushed_while_priming_need_a_writer_afterwards() -> None:
    sink = Sink(room=9)
    outbox = Outbox(sink.write, 3, 100)
    outbox.prime(b"<opening>")
    assert outbox.write_some() is Progress.DRAINED
    assert outbox.push(b"live") is Push.QUEUED
    assert outbox.primed() is True
    assert outbox.state is OutboxState.BACKLOGGED


def test_a_lost_peer_closes_the_outbox() -> None:
    sink = Sink(room=1)
    outbox = _open(sink)
    assert outbox.push(b"ab") is Push.QUEUED
    sink.gone = True
    assert outbox.write_some() is Progress.LOST
    assert outbox.close_reason is CloseReason.CONNECTION_LOST

    direct = _open(sink)
    assert direct.push(b"x") is Push.CLOSED
    assert (direct.state, direct.close_reason) == (
        OutboxState.CLOSING,
        CloseReason.CONNECTION_LOST,
    )


def _traced(push: Callable[[bytes], object], data: bytes) -> tuple[int, int]:
    """Bytes (kept, peak) that 10,000 calls of ``push`` allocate."""
    calls = itertools.repeat(data, 10_000)
    # A line tracer (coverage) allocates per traced line: suspend it for the measured loop
    # only, so the test runs — and can fail — under the coverage run in CI too.
    tracer = sys.gettrace()
    sys.settrace(None)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for chunk in calls:
            push(chunk)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sys.settrace(tracer)
    return after - before, peak - before


def test_push_allocates_nothing_on_the_fan_out_path() -> None:
    outbox = Outbox(len, 256, 1 << 20)  # a socket that takes everything (len: all of it)
    outbox.primed()
    data = b"x" * 200
    for _ in range(100):  # warm up
        outbox.push(data)
    control = _traced(len, data)  # the loop and tracemalloc's own bookkeeping
    assert _traced(outbox.push, data) == control


def test_close_reasons_carry_their_wire_codes() -> None:
    codes = {reason: reason.code for reason in CloseReason}
    assert codes[CloseReason.SLOW_CONSUMER] == 4008
    assert codes[CloseReason.TOKEN_EXPIRED] == codes[CloseReason.TOKEN_REVOKED] == 4001
    assert codes[CloseReason.GOING_AWAY] == 1001
    assert (codes[CloseReason.PROTOCOL_ERROR], codes[CloseReason.INVALID_DATA]) == (1002, 1007)
    silent = {r for r in CloseReason if not r.sends_close_frame}
    assert silent == {CloseReason.CONNECTION_LOST, CloseReason.WRITE_TIMEOUT, CloseReason.DEAD_PEER}
    assert str(CloseReason.SLOW_CONSUMER) == "slow consumer"
    assert CloseReason.GOING_AWAY.text == "server shutting down"


def test_timers_order_expiry_death_and_heartbeat() -> None:
    timers = Timers(now=100.0, heartbeat=10.0, expires=135.0, dead_after=25.0)
    assert timers.deadline() == 110.0
    assert timers.due(105.0) is Due.NOTHING
    assert timers.due(110.0) is Due.PING
    assert timers.deadline() == 120.0
    timers.heard_from_peer(118.0)
    assert timers.due(120.0) is Due.PING
    assert timers.deadline() == 130.0
    assert timers.due(143.0) is Due.EXPIRED  # expiry first, though the peer is also dead
    quiet = Timers(now=0.0, heartbeat=10.0, expires=math.inf, dead_after=25.0)
    assert [quiet.due(t) for t in (10.0, 20.0, 25.0)] == [Due.PING, Due.PING, Due.DEAD]
    sse = Timers(now=0.0, heartbeat=10.0, expires=1e9)
    assert (sse.deadline(), sse.due(1e6)) == (10.0, Due.PING)
