"""The realtime listener (default :6687): a lean trio server for the two stream routes.

It owns plain non-blocking sockets and waits on them with ``trio.lowlevel.wait_readable`` /
``wait_writable``: no framework, no per-write lock or task switch (see DESIGN.md for the
measurements behind this). Per connection: one task in the listener's nursery, plus a writer
task only while that socket's buffer is full. Every connection is bounded: the request head
in size, the outbox in events and bytes; until it presents a valid token it is *pending*,
held for at most ``head_timeout`` and within its own budget, so silent or anonymous
connections never take the slots of signed-in users' streams (see ``admission``).
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from fechatter import logs
from fechatter.access_log import AccessRecord, redact_target
from fechatter.auth import AccessClaims, bearer_token
from fechatter.errors import (
    BadRequest,
    FechatterError,
    Forbidden,
    HeadersTooLarge,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    Unavailable,
)
from fechatter.realtime.admission import Admission, Dropped, Gate
from fechatter.realtime.context import RealtimeContext
from fechatter.realtime.protocol.head import (
    MAX_HEAD_BYTES,
    Head,
    HeadError,
    HeadReader,
    NeedData,
    problem_response,
    response_head,
)
from fechatter.realtime.protocol.ws import handshake_response
from fechatter.realtime.sockets import read_head
from fechatter.realtime.sockets import send_all as send_all_bytes
from fechatter.realtime.sse import serve_sse
from fechatter.realtime.ws import WsSession

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger(__name__)

SSE_PATH = "/api/notifications/events"
WS_PATH = "/api/notifications/ws"
ANSWER_TIMEOUT = 5.0
# A request the gate cut before it was answered (dropped from a full pending budget, or past
# AUTH_TIMEOUT) gets its 503 within this: a few hundred bytes into an idle socket's buffer.
CUT_ANSWER_TIMEOUT = 1.0
# From a complete head to an admitted stream (token check, which may read the database, and
# the answer): the server's own work, bounded generously so a reconnect storm queued behind
# thousands of token checks is served rather than cut.
AUTH_TIMEOUT = 30.0
# Longer than any real access token (about 200 characters) with room for more claims; a
# longer one is refused before it is decoded.
MAX_TOKEN_CHARS = 4096
# Event ids are "<8 hex>-<decimal seq>"; anything longer cannot be one of ours (-> resync).
MAX_EVENT_ID_CHARS = 64
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)


def open_listening_socket(
    host: str, port: int, backlog: int, *, reuse_port: bool = False
) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port`` (0: the kernel picks a port).

    ``reuse_port`` sets ``SO_REUSEPORT`` first, so several processes (``--workers``) listen
    on one port and the kernel spreads new connections over them. Raises ``OSError``
    (``EADDRINUSE`` when the port is taken; on platforms without ``SO_REUSEPORT``
    ``reuse_port`` raises ``OSError`` too, errno ``ENOPROTOOPT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            option = getattr(socket, "SO_REUSEPORT", None)
            if option is None:
                raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available here")
            sock.setsockopt(socket.SOL_SOCKET, option, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_realtime(
    ctx: RealtimeContext,
    sock: socket.socket,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept stream connections on ``sock`` until cancelled or until
    ``ctx.streams.close_all`` (then ``sock`` closes at once and this returns when the open
    connections have ended); closes ``sock`` at the end."""
    settings = ctx.settings
    gate = Gate(
        ctx.stats,
        max_pending=settings.max_pending_connections,
        max_streams=settings.max_connections,
        per_user=settings.max_streams_per_user,
        head_timeout=settings.head_timeout,
    )
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            with ctx.streams.accepting:  # ``OpenStreams.close_all`` ends accepting
                await _accept(ctx, gate, sock, nursery)
            # Stopping: no new connection (refused by the kernel from here); the open ones
            # end in the nursery, each writing its close.
            _close_listener(sock)
    finally:
        _close_listener(sock)


def _close_listener(sock: socket.socket) -> None:
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def _accept(
    ctx: RealtimeContext, gate: Gate, sock: socket.socket, nursery: trio.Nursery
) -> None:
    """Accept connections into ``nursery`` until cancelled (never returns otherwise)."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            conn, _ = sock.accept()
            if ctx.access is not None:
                conn = CountingSocket.adopt(conn)
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.warning("realtime accept failed (%s); backing off", exc)
                await trio.sleep(0.1)  # back-off while descriptors are exhausted
                continue
            raise
        ctx.stats.accepted += 1
        _tune(ctx, conn)
        ctx.stats.active += 1
        nursery.start_soon(_serve_connection, ctx, gate, gate.accept(trio.current_time()), conn)


class CountingSocket(socket.socket):
    """A connection whose ``send`` counts the bytes it wrote (the access log's ``bytes``);
    used only while the access log is on."""

    sent = 0

    @classmethod
    def adopt(cls, conn: socket.socket) -> CountingSocket:
        """The same connection (its descriptor moves over; ``conn`` is left closed)."""
        return cls(conn.family, conn.type, conn.proto, fileno=conn.detach())

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        sent = super().send(data, flags)
        self.sent += sent
        return sent


def _tune(ctx: RealtimeContext, conn: socket.socket) -> None:
    conn.setblocking(False)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if TCP_USER_TIMEOUT is not None and ctx.settings.tcp_user_timeout_ms:
        # Unacknowledged data (our heartbeats) older than this kills the connection: a peer
        # that vanished without a FIN is noticed within heartbeat + this.
        conn.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, ctx.settings.tcp_user_timeout_ms)
    if ctx.settings.stream_sndbuf:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ctx.settings.stream_sndbuf)


async def _serve_connection(
    ctx: RealtimeContext, gate: Gate, entry: Admission, conn: socket.socket
) -> None:
    """One connection's error boundary: nothing it does can take the listener down.

    ``entry.scope`` ends the pending phase at ``head_timeout`` or when the gate drops the
    connection; once it is a stream, the scope no longer has a deadline.
    """
    # This task's log lines (and its stream's tasks') name the connection, and its user once
    # admitted: the admission key is the listener's id for the connection.
    logs.bind(connection_id=entry.key, user_id=logs.Deferred(lambda: entry.user_id or None))
    gate.rearm(entry, trio.current_time())
    record = AccessRecord() if ctx.access is not None else None
    exchange = _Exchange()
    try:
        try:
            with entry.scope:
                await _route(ctx, gate, entry, conn, record, exchange)
        except Dropped:
            await _answer_cut(conn, exchange, record)
        else:
            if entry.scope.cancelled_caught:  # dropped meanwhile, or past its deadline
                await _answer_cut(conn, exchange, record)
    except Exception:
        log.exception("realtime connection failed")
    finally:
        if ctx.access is not None and record is not None and (record.status or record.method):
            record.bytes_sent = getattr(conn, "sent", 0)
            ctx.access.emit(record)  # one line per request; a silent connection has none
        gate.release(entry)
        ctx.stats.active -= 1
        trio.lowlevel.notify_closing(conn)
        conn.close()


@dataclass(slots=True)
class _Exchange:
    """How far a connection's request got: its head read, an answer begun (``_answer_cut``)."""

    head_read: bool = False
    answering: bool = False
    reader: HeadReader = field(default_factory=HeadReader)  # what of the head has arrived


async def _answer(conn: socket.socket, data: bytes, exchange: _Exchange | None = None) -> None:
    if exchange is not None:
        exchange.answering = True
    with trio.move_on_after(ANSWER_TIMEOUT):
        await send_all_bytes(conn, data)


async def _answer_cut(
    conn: socket.socket, exchange: _Exchange, record: AccessRecord | None
) -> None:
    """A pending connection the gate cut (dropped from a full budget, or past its deadline):
    a whole request that came in — read, or still waiting unread in the socket's buffer —
    gets 503 ``over_capacity`` (``Retry-After: 1``) before the close; a silent or half-sent
    head, or one whose answer had begun, is closed as it is.

    Behind nginx every request arrives whole, and a connection closed without a response is
    a failed attempt to nginx: with ``max_fails=1`` a node cut in a reconnect storm would be
    out of the streams upstream for ``fail_timeout`` (docs/deploy.md "Proxy"). Reading the
    buffered bytes first also keeps the close a FIN, not a reset that could discard the
    answer in flight."""
    if exchange.answering:
        return
    whole = exchange.head_read
    reader: HeadReader | None = None if whole or exchange.reader.done else exchange.reader
    for _ in range(MAX_HEAD_BYTES // 65536 + 2):  # what is buffered now, without waiting
        try:
            data = conn.recv(65536)
        except OSError:  # BlockingIOError: nothing more now; anything else: peer gone
            break
        if not data:
            break
        if reader is not None:
            parsed = reader.feed(data)
            if not isinstance(parsed, NeedData):
                whole, reader = isinstance(parsed, Head), None
    if not whole:
        return
    if record is not None:
        record.status = Unavailable.status
    exchange.answering = True
    answer = problem_response(Unavailable("too many connections", code="over_capacity"))
    with trio.move_on_after(CUT_ANSWER_TIMEOUT):
        await send_all_bytes(conn, answer)


async def _route(
    ctx: RealtimeContext,
    gate: Gate,
    entry: Admission,
    conn: socket.socket,
    record: AccessRecord | None = None,
    exchange: _Exchange | None = None,
) -> None:
    """Read the head and serve the route; ``record`` (the access log's, when on) learns the
    request, the client, the user and the status answered (0: none); ``exchange`` learns
    when the head is read and when an answer begins."""
    exchange = exchange if exchange is not None else _Exchange()
    head = await read_head(conn, exchange.reader)
    if not isinstance(head, HeadError):
        exchange.head_read = True
        gate.rearm(entry, trio.current_time(), AUTH_TIMEOUT)
        if record is not None and ctx.access is not None:
            _note_request(ctx, record, head, conn)
    if isinstance(head, HeadError):
        if head.status:
            if record is not None:
                record.status = head.status
            ctx.stats.bad_requests += 1
            error: FechatterError = (
                HeadersTooLarge(head.detail)
                if head.status == 431
                else BadRequest(head.detail, code="bad_request_head")
            )
            await _answer(conn, problem_response(error), exchange)
        return
    cors = ctx.cors_headers(head.header("origin"))
    try:
        if head.path not in (SSE_PATH, WS_PATH):
            raise NotFound("no such stream route", code="route_not_found")
        if head.method == "OPTIONS":
            if record is not None:
                record.status = 204 if cors else Forbidden.status
            await _answer(conn, _preflight(cors), exchange)
            return
        if head.method != "GET":
            raise MethodNotAllowed("streams are opened with GET", headers={"Allow": "GET, OPTIONS"})
        origin = head.header("origin")
        if origin is not None and not ctx.origin_allowed(origin):
            raise Forbidden("origin not allowed", code="origin_not_allowed")
        claims = await _authenticate(ctx, head)
        last_event_id = _last_event_id(head)
        accept = None
        if head.path == WS_PATH:
            accept = handshake_response(head, cors) if head.wants_websocket else None
            if accept is None:
                raise BadRequest(
                    "a WebSocket upgrade (version 13) is required",
                    code="websocket_upgrade_required",
                    headers={"Sec-WebSocket-Version": "13"},
                )
        gate.promote(entry, claims.user_id)  # 503 / 429 here, before any stream starts
        if record is not None:
            record.user_id = claims.user_id
            record.status = 200 if accept is None else 101
        exchange.answering = True  # a stream now: no longer the gate's to cut
        if accept is None:
            await serve_sse(ctx, conn, claims, last_event_id, cors)
        else:
            await WsSession(ctx, conn, claims).run(accept, head.trailing, last_event_id)
    except FechatterError as exc:
        if isinstance(exc, BadRequest):
            ctx.stats.bad_requests += 1
        if record is not None:
            record.status = exc.status
        await _answer(conn, problem_response(exc, cors), exchange)


def _note_request(
    ctx: RealtimeContext, record: AccessRecord, head: Head, conn: socket.socket
) -> None:
    """Fill the access record's request line and client (``X-Forwarded-For`` through
    ``trusted_proxies``; headers themselves are never logged)."""
    assert ctx.access is not None
    record.method = head.method[:16]
    record.path = redact_target(head.path, head.raw_query)
    try:
        peer: str | None = str(conn.getpeername()[0])
    except (OSError, IndexError, TypeError):
        peer = None
    forwarded = head.header("x-forwarded-for")
    record.client = ctx.access.client(peer, [forwarded] if forwarded else [])


async def _authenticate(ctx: RealtimeContext, head: Head) -> AccessClaims:
    token = bearer_token(head.header("authorization")) or head.query.get("access_token")
    if not token:
        raise Unauthorized("missing access token", code="missing_token")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("invalid token", code="invalid_token")
    claims = ctx.auth.verify_access_token(token)
    await ctx.guard.check(claims)
    return claims


def _last_event_id(head: Head) -> str | None:
    """The resume point asked for; one too long to be ours becomes unprovable (-> resync)."""
    value = head.header("last-event-id") or head.query.get("last_event_id") or None
    if value is not None and len(value) > MAX_EVENT_ID_CHARS:
        return ""  # presented but unknown: the stream opens with resync
    return value


def _preflight(cors: list[tuple[str, str]]) -> bytes:
    if not cors:
        return problem_response(Forbidden("origin not allowed", code="origin_not_allowed"))
    return response_head(
        204,
        [
            *cors,
            ("Access-Control-Allow-Methods", "GET, OPTIONS"),
            ("Access-Control-Allow-Headers", "Authorization, Last-Event-ID"),
            ("Access-Control-Max-Age", "600"),
            ("Content-Length", "0"),
            ("Connection", "close"),
        ],
    )
