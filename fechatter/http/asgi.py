"""ASGI glue between hypercorn's trio worker and the quart-trio app.

Why it exists (measured here): quart-trio cancels a request's task group as soon as hypercorn
reports the request done, and hypercorn runs its connection bookkeeping — closing a
``Connection: close`` / HTTP/1.0 connection, re-arming the keep-alive timer — inside that
same ``send`` call. The cancellation aborts the bookkeeping, so such connections were never
closed (200 requests held 200 file descriptors) and idle keep-alive connections never timed
out. Shielding each ``send`` lets the bookkeeping finish; a deadline bounds the shield so a
peer that stops reading cannot pin a task forever.

``RequestContext`` gives every HTTP request its id (logs and the ``X-Request-Id`` header).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

from fechatter import logs

SEND_DEADLINE = 30.0


class ShieldedSend:
    """Wrap an ASGI app so that each ``send`` completes even if the app is being cancelled."""

    def __init__(self, app: ASGIFramework, deadline: float = SEND_DEADLINE) -> None:
        self.app = app
        self.deadline = deadline

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        async def shielded_send(message: ASGISendEvent) -> None:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + self.deadline):
                await send(message)

        await self.app(scope, receive, shielded_send)


# A client's X-Request-Id is kept only if it is a short token of these characters, so that it
# can neither forge log fields nor smuggle text into a header we echo.
_CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-Id`` if it is a short safe token, else a fresh random one."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            if _CLIENT_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return secrets.token_hex(8)


class RequestContext:
    """Wrap an ASGI app so that each HTTP request has a request id: bound to every log line
    its handling writes (``fechatter.logs``) and echoed in the ``X-Request-Id`` header."""

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope["headers"])
        header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        # The app's request task starts inside this block, so it inherits the id.
        with logs.bound(request_id=request_id):
            await self.app(scope, receive, send_with_id)
