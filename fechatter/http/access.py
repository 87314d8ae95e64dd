"""The API listener's access log: an ASGI middleware writing one ``fechatter.access`` line per
HTTP request (``fechatter.access_log`` describes the line and what it redacts).

Decision: our middleware, not hypercorn's access log. Hypercorn's line is built from the raw
request target (``%(r)s``) and headers, formatted before any processor of ours sees it, so
redaction would have to parse its text afterwards; here the target is redacted from the ASGI
scope's parts, the user comes from our own auth (``access_log.note_user``), and the client
address goes through ``trusted_proxies`` like the throttles'. Hypercorn's own access log stays
off (``app.py``). Installed only when the ``access_log`` setting is on: no cost otherwise.
"""

from __future__ import annotations

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

from fechatter.access_log import AccessLog


class AccessLogged:
    """Wrap an ASGI app: each ``http`` request gets an access line when it ends (answered,
    failed or cancelled); other scopes (lifespan) pass through. Sits inside ``RequestContext``
    so the line carries the request id."""

    def __init__(self, app: ASGIFramework, access: AccessLog) -> None:
        self.app = app
        self.access = access

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = bytes(scope.get("raw_path") or scope["path"].encode("utf-8"))
        query = bytes(scope.get("query_string", b""))
        record = self.access.start(
            scope["method"], raw_path.decode("latin-1"), query.decode("latin-1")
        )
        peer = scope.get("client")
        forwarded = [
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name.lower() == b"x-forwarded-for"
        ]
        record.client = self.access.client(str(peer[0]) if peer else None, forwarded)

        async def counted_send(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                record.status = int(message["status"])
            elif message["type"] == "http.response.body":
                record.bytes_sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        except Exception:
            if record.status == 0:
                record.status = 500  # hypercorn answers a failed app with a 500
            raise
        finally:
            self.access.emit(record)
