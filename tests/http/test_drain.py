"""``ReadOnUnreadBodies`` without a socket: an ASGI app that answers before reading its body,
the server's side played by a memory channel (``receive``) and a list (``send``). The real
path, through hypercorn, quart and nginx, is ``test_refused_bodies.py``."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio
import trio.testing
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    Scope,
)

from fechatter.http.drain import READ_ON_SECONDS, ReadOnUnreadBodies

LIMIT = 1000
ANSWER = b'{"code":"missing_token"}'


def scope(*headers: tuple[bytes, bytes]) -> HTTPScope:
    fields = {"type": "http", "method": "POST", "path": "/api/x", "headers": list(headers)}
    return cast(HTTPScope, fields)


def length(n: int) -> tuple[bytes, bytes]:
    return (b"content-length", str(n).encode())


def chunk(data: bytes, *, more: bool) -> ASGIReceiveEvent:
    return {"type": "http.request", "body": data, "more_body": more}


async def answer_at_once(
    scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """A handler that refuses without reading the body (quart's 401 before ``read_json``)."""
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": ANSWER, "more_body": False})


async def answer_and_read_like_quart(
    scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """quart-trio's shape (``TrioASGIHTTPConnection``): a reader takes ``receive`` until
    ``http.disconnect`` beside the handler, and then cancels the handler; the handler answers
    once the reader waits (quart's checks the token meanwhile) and, its answer ended, cancels
    the reader."""
    reading = trio.Event()
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            while True:
                reading.set()  # receive registers this task as a waiter before any other runs
                if (await receive())["type"] == "http.disconnect":
                    break
            nursery.cancel_scope.cancel()

        async def handle() -> None:
            await reading.wait()
            await answer_at_once(scope, receive, send)
            nursery.cancel_scope.cancel()

        nursery.start_soon(read)
        nursery.start_soon(handle)


class Server:
    """The server's side of one request: the body is fed with ``feed``; what the app sent is
    in ``sent``."""

    def __init__(self) -> None:
        self.feed, self._body = trio.open_memory_channel[ASGIReceiveEvent](8)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> ASGIReceiveEvent:
        return await self._body.receive()

    async def send(self, message: ASGISendEvent) -> None:
        self.sent.append(dict(message))

    def ended(self) -> bool:
        return bool(self.sent) and not self.sent[-1].get("more_body", False)


@pytest.mark.parametrize("app", [answer_at_once, answer_and_read_like_quart])
async def test_the_answer_leaves_at_once_and_the_response_ends_after_the_body(
    app: ASGIFramework,
) -> None:
    server = Server()
    middleware = ReadOnUnreadBodies(app, LIMIT)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(middleware, scope(length(600)), server.receive, server.send)
            await trio.testing.wait_all_tasks_blocked()
            # The whole answer was sent, the response not ended: the body is still coming.
            assert [m.get("body") for m in server.sent] == [None, ANSWER]
            assert not server.ended()
            await server.feed.send(chunk(b"a" * 300, more=True))
            await trio.testing.wait_all_tasks_blocked()
            assert not server.ended()
            await server.feed.send(chunk(b"a" * 300, more=False))
        assert server.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        assert len(server.sent) == 3


async def test_a_body_that_never_comes_is_waited_for_a_bounded_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server()
    started = trio.current_time()
    await ReadOnUnreadBodies(answer_at_once, LIMIT)(scope(length(50)), server.receive, server.send)
    assert server.ended()
    assert trio.current_time() - started == pytest.approx(READ_ON_SECONDS)


async def test_a_disconnect_ends_the_response() -> None:
    server = Server()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            middleware = ReadOnUnreadBodies(answer_at_once, LIMIT)
            nursery.start_soon(middleware, scope(length(600)), server.receive, server.send)
            await trio.testing.wait_all_tasks_blocked()
            assert not server.ended()
            await server.feed.send({"type": "http.disconnect"})
        assert server.ended()


async def test_quarts_reader_taking_the_disconnect_during_the_drain_ends_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """quart's reader waited on ``receive`` before the drain did, so the disconnect is its
    (a memory channel serves its waiters in order): quart cancels its handler, the read-on
    included — at once, not after ``READ_ON_SECONDS``. The response is left unended: the
    client is gone."""
    server = Server()
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        middleware = ReadOnUnreadBodies(answer_and_read_like_quart, LIMIT)
        nursery.start_soon(middleware, scope(length(600)), server.receive, server.send)
        await trio.testing.wait_all_tasks_blocked()
        assert [m.get("body") for m in server.sent] == [None, ANSWER]  # answered, reading on
        await server.feed.send({"type": "http.disconnect"})
    assert trio.current_time() == started
    assert not server.ended()  # had the drain taken the disconnect, it would have ended it


async def test_a_timed_out_body_is_not_read_on(autojump_clock: trio.testing.MockClock) -> None:
    """A 408 (quart's ``BODY_TIMEOUT`` on a trickled body) has used the body's time: its
    response ends with the answer, the rest of the body unread, as the file routes' 408."""

    async def read_some_then_time_out(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        await receive()  # the first part; the rest is late
        await send({"type": "http.response.start", "status": 408, "headers": []})
        await send({"type": "http.response.body", "body": ANSWER, "more_body": False})

    server = Server()
    await server.feed.send(chunk(b"a" * 10, more=True))
    started = trio.current_time()
    await ReadOnUnreadBodies(read_some_then_time_out, LIMIT)(
        scope(length(600)), server.receive, server.send
    )
    assert trio.current_time() == started
    assert server.sent[-1] == {"type": "http.response.body", "body": ANSWER, "more_body": False}


@pytest.mark.parametrize(
    "headers",
    [
        [length(LIMIT + 1)],  # declared over the limit: refused and closed as before
        [(b"transfer-encoding", b"chunked")],  # no declared length
        [length(0)],  # no body
        [(b"content-length", b"+5")],  # not a length h11 would frame by: passed on as is
    ],
)
async def test_other_bodies_pass_through_untouched(
    headers: list[tuple[bytes, bytes]], autojump_clock: trio.testing.MockClock
) -> None:
    server = Server()
    await server.feed.send(chunk(b"a" * 10, more=True))  # a part of the body has arrived
    started = trio.current_time()
    await ReadOnUnreadBodies(answer_at_once, LIMIT)(scope(*headers), server.receive, server.send)
    assert server.sent[-1] == {"type": "http.response.body", "body": ANSWER, "more_body": False}
    assert trio.current_time() == started  # no read-on time was spent
    assert server.feed.statistics().current_buffer_used == 1  # and the part was not read


async def test_a_body_read_before_the_answer_changes_nothing() -> None:
    async def read_then_answer(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        while (await receive()).get("more_body", False):
            pass
        await answer_at_once(scope, receive, send)

    server = Server()
    await server.feed.send(chunk(b"a" * 10, more=True))
    await server.feed.send(chunk(b"a" * 10, more=False))
    with trio.fail_after(5):
        await ReadOnUnreadBodies(read_then_answer, LIMIT)(
            scope(length(20)), server.receive, server.send
        )
    assert server.sent[-1] == {"type": "http.response.body", "body": ANSWER, "more_body": False}
