"""Reading on a request body its answer did not need, before the connection closes.

Why it exists: a proxy (nginx) sends a buffered request body whole before it reads the answer.
A node that answers early (401, 404, 405, 400 on the Content-Type, a handler that never reads
the body) and then closes with body bytes unread makes the proxy's send fail (nginx:
``writev() failed (32: Broken pipe)``) and answer 502 instead of the node's answer. So the
answer's bytes go out at once, the rest of the body is read and discarded, and only then does
the response end (hypercorn closes the connection there: the early answer says
``Connection: close``). ``FileRoutes`` does it for the file routes (``_send_refusal``, up to
``max_file_bytes + DRAIN_ENVELOPE``); ``ReadOnUnreadBodies`` for every other API route (up to
``max_body_bytes``, nginx's ``client_max_body_size 1m``).

It must never read without a bound: only a body whose declared ``Content-Length`` is within
the caller's limit (h11 enforces the framing, so no more arrives), and never past a deadline.
A chunked body or a larger declared length is answered and closed as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    Scope,
)

# A refused body over the read-on bound (or chunked) is still read on for at most DRAIN_BYTES
# and DRAIN_SECONDS while its answer is sent: hypercorn's queue to the handler must not stay
# full (it would wait on it, SEND_DEADLINE 30 s, before closing, the client stalled on its
# write). Used by FileRoutes.
DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 5.0
# ReadOnUnreadBodies reads an unread body of at most max_body_bytes for at most this long after
# the answer was sent. A proxy's buffered 1 MiB arrives in milliseconds; a client that declared
# a body and never sends it has its connection closed this much later than before.
READ_ON_SECONDS = 5.0
# An answer with this status is never read on: the body's time is used up (quart's BODY_TIMEOUT
# on a trickled body), waiting longer for it would only keep a slow client's connection.
TIMED_OUT = 408


@dataclass(slots=True)
class BodyState:
    """A request body being read: its declared length (None: chunked, or no valid header),
    the bytes received so far, whether the last ``http.request`` message arrived, and the
    deadline (trio time) for reading it."""

    declared: int | None
    deadline: float
    received: int = 0
    complete: bool = False

    def note(self, message: ASGIReceiveEvent) -> None:
        """Count one message from ``receive``: its body bytes, and whether it was the last
        (the body's end, or ``http.disconnect``: nothing more will come)."""
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        else:
            self.complete = True


def declared_length(scope: HTTPScope) -> int | None:
    """The request's ``Content-Length`` in bytes, or None (absent, chunked, not ASCII digits)."""
    for key, value in scope["headers"]:
        if key.lower() == b"content-length":
            text = bytes(value)
            return int(text) if text.isascii() and text.isdigit() else None
    return None


async def drain(receive: ASGIReceiveCallable, limit: int, deadline: float) -> None:
    """Read and discard the rest of a body: until its end, the client's disconnect, more than
    ``limit`` bytes, or ``deadline`` (trio time)."""
    taken = 0
    with trio.move_on_at(deadline):
        while taken <= limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            taken += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


class ReadOnUnreadBodies:
    """ASGI middleware: when ``app`` ends its answer before the request's body arrived whole,
    and the body declared a ``Content-Length`` of at most ``limit`` bytes, the answer's bytes
    are sent at once, the rest of the body is read and discarded (``drain``: until its end,
    the client's disconnect, or ``seconds`` after the answer), and only then does the response
    end. Other requests pass through untouched, and so does a 408: the body's time (quart's
    ``BODY_TIMEOUT``) is used up, it closes at once as the file routes' 408 does.

    ``limit``: bytes (``max_body_bytes``). ``seconds``: the read-on bound after the answer
    (``read_on_seconds``, default ``READ_ON_SECONDS``)."""

    def __init__(self, app: ASGIFramework, limit: int, seconds: float = READ_ON_SECONDS) -> None:
        self.app = app
        self.limit = limit
        self.seconds = seconds

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is None or declared == 0 or declared > self.limit:
            await self.app(scope, receive, send)
            return
        body = BodyState(declared=declared, deadline=0.0)
        ended = trio.Event()
        status = 0  # from http.response.start

        async def tracked_receive() -> ASGIReceiveEvent:
            message = await receive()
            body.note(message)
            if body.complete:
                ended.set()
            return message

        async def send_then_read_on(message: ASGISendEvent) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            if (
                message["type"] != "http.response.body"
                or message.get("more_body", False)
                or body.complete
                or status == TIMED_OUT
            ):
                await send(message)
                return
            await send({**message, "more_body": True})  # the whole answer leaves now
            body.deadline = trio.current_time() + self.seconds
            # The app's own reader (quart's) may be waiting on receive too: whichever of the
            # two takes the body's last message, ``ended`` says so. Should quart's reader take
            # the client's disconnect, quart cancels its handler, this wait included: the
            # response is not ended then, there is no one to end it for.
            with trio.move_on_at(body.deadline):
                async with trio.open_nursery() as nursery:
                    left = declared - body.received
                    nursery.start_soon(drain, tracked_receive, left, body.deadline)
                    await ended.wait()
                    nursery.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app(scope, tracked_receive, send_then_read_on)
