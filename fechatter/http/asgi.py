"""ASGI glue between hypercorn's trio worker and the quart-trio app.

Why it exists (measured here): quart-trio cancels a request's task group as soon as hypercorn
reports the request done, and hypercorn runs its connection bookkeeping — closing a
``Connection: close`` / HTTP/1.0 connection, re-arming the keep-alive timer — inside that
same ``send`` call. The cancellation aborts the bookkeeping, so such connections were never
closed (200 requests held 200 file descriptors) and idle keep-alive connections never timed
out. Shielding each ``send`` lets the bookkeeping finish; a deadline bounds the shield so a
peer that stops reading cannot pin a task forever.
"""

from __future__ import annotations

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

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
