"""Moving bytes on the realtime listener's non-blocking sockets with trio.

``recv_some`` / ``send_all`` wait on readiness with ``trio.lowlevel`` (no framework, no lock);
``read_head`` feeds a ``protocol.head.HeadReader`` until it answers. No parsing or decisions
live here; callers bound the time.
"""

from __future__ import annotations

import socket

import trio

from fechatter.realtime.protocol.head import Head, HeadError, HeadReader, NeedData


async def recv_some(sock: socket.socket, size: int = 65536) -> bytes:
    """Receive from a non-blocking socket (``b""``: the peer closed); raises ``OSError``.

    Always a checkpoint, also when data was already buffered: a peer that keeps its socket
    full (a flood of pings) must not keep the trio thread from every other connection. The
    checkpoint comes before the read, so a cancellation never takes received bytes with it:
    they stay in the socket for whoever reads next (the listener answering a cut request).
    """
    await trio.lowlevel.checkpoint()
    while True:
        try:
            return sock.recv(size)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


async def read_head(sock: socket.socket, reader: HeadReader | None = None) -> Head | HeadError:
    """Read one request head into ``reader`` (a fresh one by default; a caller that passes
    its own still has what arrived if it is cancelled midway). The caller's deadline bounds
    the time."""
    reader = HeadReader() if reader is None else reader
    while True:
        try:
            data = await recv_some(sock)
        except OSError:
            return HeadError(0, "connection lost")
        answer = reader.feed(data)
        if not isinstance(answer, NeedData):
            return answer


async def send_all(sock: socket.socket, data: bytes) -> bool:
    """Write everything; False if the peer is gone. The caller bounds the time."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except OSError:
            return False
        view = view[sent:]
    return True
