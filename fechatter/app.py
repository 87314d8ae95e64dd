"""``serve(settings)``: storage ⊃ actor system ⊃ listeners, nested by lifetime.

Shutdown (the ``shutdown`` event, set by SIGINT/SIGTERM in the CLI) stops the listeners from
accepting and closes every open stream (WebSocket 1001 in one process; in a cluster the
reconnect hint of SPEC §10: WebSocket 1012, SSE ``retry:`` then the end), lets in-flight
requests finish within ``shutdown_grace`` seconds, then — in a cluster — hands the node's
chats over (``fechatter.cluster.leave``: actors drained, outbox published, row ended), then
stops the actors (a commit already handed to storage completes) and closes storage.
"""

from __future__ import annotations

import logging
import resource
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import cast

import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIFramework

from fechatter.access_log import LOGGER as ACCESS_LOGGER
from fechatter.access_log import AccessLog
from fechatter.actors.directory import ChatCaller, DirectoryConfig
from fechatter.actors.system import ActorSystem, open_actor_system
from fechatter.actors.user import HubConfig
from fechatter.auth import Authenticator
from fechatter.bus import open_nats_bus
from fechatter.close_reasons import CloseReason
from fechatter.cluster.leave import hand_over
from fechatter.cluster.node import ClusterNode, open_cluster_node, serve_rate_share
from fechatter.cluster.router import ChatRouter, open_chat_router
from fechatter.cluster.wiring import ClusterEvents, open_cluster_events
from fechatter.cluster.workspace_events import ClusterWorkspaceEvents
from fechatter.config import (
    Settings,
    default_node_id,
    redact_url,
    resolve_jwt_secret,
    worker_node_name,
)
from fechatter.domain.accounts import Accounts
from fechatter.domain.chats import Chats
from fechatter.domain.files import Files
from fechatter.domain.messages import Messages
from fechatter.domain.status import UserStatuses
from fechatter.domain.workspace_events import LocalWorkspaceEvents, WorkspaceEventSink
from fechatter.domain.workspaces import Workspaces
from fechatter.errors import Unavailable
from fechatter.http import create_app
from fechatter.http.access import AccessLogged
from fechatter.http.asgi import RequestContext, ShieldedSend
from fechatter.http.common import Context
from fechatter.http.drain import ReadOnUnreadBodies
from fechatter.http.files import FileRoutes
from fechatter.metrics import Metrics, RealtimeStats
from fechatter.ratelimit import RateLimiter
from fechatter.realtime.context import RealtimeContext
from fechatter.realtime.listener import open_listening_socket, serve_realtime
from fechatter.realtime.stream import StreamLimits
from fechatter.security import TokenGuard
from fechatter.status import wall_clock
from fechatter.storage import Storage, open_storage
from fechatter.storage.blobs import LocalBlobStore
from fechatter.storage.cluster import ClusterStore
from fechatter.storage.core import SqlStorage
from fechatter.storage.files import FileStore
from fechatter.storage.postgres import PostgresStorage
from fechatter.throttle import AuthThrottle

log = logging.getLogger(__name__)

MAX_API_HEAD_BYTES = 16 * 1024
# Shutdown: seconds the open streams get to write their close (each waits ≤ 1 s for a peer
# that reads nothing); then the listener is cancelled.
STREAMS_CLOSE_CEILING = 2.0


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Where a started server listens (ports resolved when 0 was asked for)."""

    api_url: str
    realtime_url: str  # "" for role api (no stream listener)
    system: ActorSystem  # live handles, for operators' tooling and tests
    realtime: RealtimeStats
    node_id: str
    cluster: ClusterNode | None = None  # cluster mode (nats_url) only
    router: ChatRouter | None = None  # cluster mode only: where chat commands go
    events: ClusterEvents | None = None  # cluster mode only: publisher and event router
    files: Files | None = None  # uploads and the file collector (SPEC §8)
    api: ASGIFramework | None = None  # the API listener's app (tests read its route table)


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - platform refusal
            log.warning("could not raise the open-files limit above %d", soft)
    return soft


def build_authenticator(settings: Settings) -> Authenticator:
    return Authenticator(
        resolve_jwt_secret(settings),
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
        hash_threads=settings.hash_threads,
        hash_queue_max=settings.hash_queue_limit,
    )


def directory_config(settings: Settings) -> DirectoryConfig:
    return DirectoryConfig(
        mailbox_size=settings.chat_mailbox_size,
        group_commit_max=settings.group_commit_max,
        idle_seconds=settings.chat_idle_seconds,
        restart_budget=settings.actor_restart_budget,
        restart_window=settings.actor_restart_window,
        call_timeout=settings.actor_call_timeout,
        typing_ttl=settings.typing_ttl,
        max_reactions=settings.max_reactions_per_message,
    )


def hub_config(settings: Settings) -> HubConfig:
    return HubConfig(
        ring_size=settings.ring_size,
        retention=settings.resume_window,
        presence_grace=settings.presence_grace,
        presence_max_chat_size=settings.presence_max_chat_size,
    )


class NatsUnreachable(Exception):
    """Cluster mode: the first connection to NATS failed (the CLI prints it in one line)."""


def nats_tls(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context for NATS from ``nats_tls_*``; None when none is set (nats-py
    then uses its own default for ``tls://`` URLs)."""
    if settings.nats_tls_ca is None and settings.nats_tls_cert is None:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
    )
    if settings.nats_tls_cert is not None and settings.nats_tls_key is not None:
        context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
    return context


@asynccontextmanager
async def open_router(
    settings: Settings, cluster: ClusterNode | None, system: ActorSystem
) -> AsyncIterator[tuple[ChatRouter, ClusterEvents] | None]:
    """The cluster's ``ChatRouter`` (its inbox served) and its event wiring (outbox
    publisher, event router) for the block; None in one process, where the ``Directory``
    takes the commands and the ``UserHub`` the events itself.

    Stop order (the listeners have already stopped, the streams are closed): the graceful
    leave (``hand_over``: actors drained, outbox published, node row ended, held commands
    answered ``chat_moved``), then the event wiring (no new routing, the router's
    subscriptions end), then the inbox, then (in ``open_cluster``) the bus closes, then the
    actors stop. An error in the block skips the leave (the row is still ended on exit)."""
    if cluster is None:
        yield None
        return
    async with (
        open_chat_router(
            cluster,
            system.directory,
            prefix=settings.nats_prefix,
            call_timeout=settings.actor_call_timeout,
        ) as router,
        open_cluster_events(
            cluster, system.users, system.directory, router, prefix=settings.nats_prefix
        ) as wiring,
    ):
        yield router, wiring
        await hand_over(cluster, router, system.directory, wiring.publisher)


def workspace_events(
    storage: Storage, system: ActorSystem, wiring: ClusterEvents | None
) -> WorkspaceEventSink:
    """Where workspace writes commit and their events go (SPEC §7): this process's hub, or
    in cluster mode the outbox and each recipient's user subject."""
    if wiring is None:
        return LocalWorkspaceEvents(storage, system.users)
    return ClusterWorkspaceEvents(cast(PostgresStorage, storage), wiring.publisher)


async def check_connection_budget(storage: PostgresStorage, node: ClusterNode) -> None:
    """Log an ERROR at start when the live nodes' pools (this one's size assumed for each)
    may together need more connections than PostgreSQL allows (docs/cluster.md §6). Never
    fails the start: an unanswered check is logged and skipped."""
    try:
        budget = await storage.connection_budget()
        live = len(await node.store.live_nodes())
    except Unavailable as exc:
        log.warning("connection budget not checked: %s", exc)
        return
    problem = budget.cluster_overcommitted(max(1, live), storage.pool_size)
    if problem is not None:
        log.error("%s", problem)


@asynccontextmanager
async def open_cluster(
    settings: Settings, storage: Storage, boot: str
) -> AsyncIterator[ClusterNode | None]:
    """This process's cluster membership for the block; None without ``nats_url``.

    The node id is ``<node_id>.<boot>`` (or ``default_node_id(boot)``) so a restarted node
    never inherits its old row or leases (docs/cluster.md §1).
    """
    if settings.nats_url is None:
        yield None
        return
    if not isinstance(storage, PostgresStorage):  # Settings refuses this; a guard for callers
        raise ValueError("cluster mode needs a PostgreSQL database_url")

    def make_id(boot: str) -> str:
        if settings.worker_index is not None:  # a --workers child: <name>-w<i>.<boot>
            return f"{worker_node_name(settings.node_id, settings.worker_index)}.{boot}"
        return f"{settings.node_id}.{boot}" if settings.node_id else default_node_id(boot)

    log.info("cluster mode: NATS %s", ",".join(redact_url(u) for u in settings.nats_servers))
    async with AsyncExitStack() as stack:
        try:
            bus = await stack.enter_async_context(
                open_nats_bus(
                    settings.nats_servers,
                    name=make_id(boot),
                    credentials=str(settings.nats_creds) if settings.nats_creds else None,
                    tls=nats_tls(settings),
                )
            )
        except Unavailable as exc:
            urls = ",".join(redact_url(u) for u in settings.nats_servers)
            raise NatsUnreachable(f"cannot reach NATS at {urls}: {exc}") from exc
        # The node's row is written on a connection of its own: a pool busy with writes
        # must never delay a heartbeat into a self-fence (docs/cluster.md §6).
        beat = await stack.enter_async_context(storage.reserved())
        node = await stack.enter_async_context(
            open_cluster_node(ClusterStore(storage, beat), bus, settings.role, make_id, boot)
        )
        await check_connection_budget(storage, node)
        yield node


async def open_files(settings: Settings, storage: Storage) -> Files:
    """The file use cases over a local blob store in ``settings.files_path`` (created, mode
    0700; a cluster's nodes share it, docs/cluster.md "Built: files on the cluster")."""
    if not isinstance(storage, SqlStorage):  # pragma: no cover - both backends are
        raise TypeError("file metadata needs a SQL storage backend")
    blobs = LocalBlobStore(settings.files_path)
    await blobs.open()
    return Files(storage, FileStore(storage), blobs, settings, resolve_jwt_secret(settings))


def access_logs(settings: Settings) -> tuple[AccessLog, AccessLog] | None:
    """The access logs of the API and realtime listeners when ``access_log`` is on, else None.

    Their logger is set to INFO, so the flag alone shows the lines whatever ``log_level``.
    """
    if not settings.access_log:
        return None
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
    trusted = settings.trusted_proxies
    return AccessLog("api", trusted), AccessLog("realtime", trusted)


def api_app(ctx: Context, files: Files) -> ASGIFramework:
    """The API listener's ASGI app: quart's, which reads on a body it answered without reading
    (``ReadOnUnreadBodies``, up to ``max_body_bytes`` for ``read_on_seconds``: a proxy's send
    must not fail), behind the streaming file routes (not on a node with role realtime, which
    serves no API route)."""
    settings = ctx.settings
    app: ASGIFramework = ReadOnUnreadBodies(
        create_app(ctx), settings.max_body_bytes, settings.read_on_seconds
    )
    if ctx.settings.role == "realtime":
        return app
    return FileRoutes(app, ctx, files)


async def serve(
    settings: Settings,
    shutdown: trio.Event,
    *,
    authenticator: Authenticator | None = None,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a Fechatter server until ``shutdown`` is set.

    ``authenticator`` replaces the one built from ``settings`` (tests hold its hash threads).
    """
    limit = raise_fd_limit()
    auth = authenticator or build_authenticator(settings)
    # --workers children share both ports (SO_REUSEPORT); an api node has no stream listener.
    reuse_port = settings.worker_index is not None
    rt_sock = None
    if settings.role != "api":
        rt_sock = open_listening_socket(
            settings.host, settings.realtime_port, settings.backlog, reuse_port=reuse_port
        )
    try:
        async with (
            open_storage(settings.database_url, pool_size=settings.database_pool_size) as storage,
            open_actor_system(storage, directory_config(settings), hub_config(settings)) as system,
            # The boot epoch is the one in this process's event ids: a restart is a new node.
            open_cluster(settings, storage, system.users.epoch) as cluster,
            open_router(settings, cluster, system) as routing,
        ):
            router, wiring = routing if routing is not None else (None, None)
            commands: ChatCaller = system.directory if router is None else router
            if cluster is not None:
                node_id = cluster.node_id
            else:
                node_id = settings.node_id or default_node_id(system.users.epoch)
            stats = RealtimeStats()
            guard = TokenGuard(storage, on_revoke=system.users.revoke)
            # The one per-user write limiter: sends, edits, deletions and reactions (SPEC §6).
            send_limiter = RateLimiter(
                settings.send_rate,
                settings.send_burst,
                trio.current_time,
                detail="too many writes (messages, edits, deletions, reactions); slow down",
            )
            metrics = Metrics()
            # The credential routes' throttles (here: a cluster node enforces its share).
            throttle = AuthThrottle.from_settings(settings, trio.current_time)
            chats = Chats(
                storage,
                commands,
                system.users,
                max_members=settings.max_members_per_request,
                create_chat=None if wiring is None else wiring.create_chat,
            )
            files = await open_files(settings, storage)
            messages = Messages(storage, commands, chats, settings, send_limiter, uploads=files)
            statuses = UserStatuses(
                storage,
                system.users,
                chats,
                wall_clock(),
                publish_to_user=None if wiring is None else wiring.publish_to_user,
            )
            ctx = Context(
                settings=settings,
                storage=storage,
                system=system,
                auth=auth,
                metrics=metrics,
                realtime=stats,
                # api nodes: the port the realtime nodes share (web client's stream URL)
                realtime_port=(
                    int(rt_sock.getsockname()[1]) if rt_sock else settings.realtime_port
                ),
                guard=guard,
                workspaces=Workspaces(
                    storage,
                    system.directory,
                    commands,
                    events=workspace_events(storage, system, wiring),
                ),
                accounts=Accounts(storage, auth, guard),
                chats=chats,
                messages=messages,
                node_id=node_id,
                cluster=cluster,
                throttle=throttle,
                files=files,
                statuses=statuses,
            )
            config = HypercornConfig()
            config.bind = [f"{settings.host}:{settings.port}"]
            if reuse_port:  # pre-bound with SO_REUSEPORT; hypercorn owns the fd from here
                api_sock = open_listening_socket(
                    settings.host, settings.port, settings.backlog, reuse_port=True
                )
                config.bind = [f"fd://{api_sock.detach()}"]
            config.backlog = settings.backlog
            # Hypercorn's idle timer runs from accept until a request head is complete (and
            # between keep-alive requests): a connection that never sends a whole head is
            # closed after keep_alive_timeout, trickled or silent. Heads are bounded in size.
            config.keep_alive_timeout = settings.keep_alive_timeout
            config.h11_max_incomplete_size = MAX_API_HEAD_BYTES
            config.graceful_timeout = settings.shutdown_grace
            config.accesslog = None
            # A Logger (not "-"): hypercorn then adds no handler of its own, and its records
            # reach the root handler, rendered like ours (fechatter.logs).
            config.errorlog = logging.getLogger("hypercorn.error")
            async with trio.open_nursery() as nursery:
                background = trio.CancelScope()  # tasks that end with the listeners

                async def follow_security(*, task_status: trio.TaskStatus[None]) -> None:
                    with background:
                        await guard.serve_follower(
                            settings.security_poll_interval, task_status=task_status
                        )

                await nursery.start(follow_security)
                collecting = trio.CancelScope()  # ends with the listeners, as ``background``
                if settings.role != "realtime":

                    async def collect_files(*, task_status: trio.TaskStatus[None]) -> None:
                        with collecting:
                            await files.serve_collector(task_status=task_status)

                    await nursery.start(collect_files)

                expiring = trio.CancelScope()  # ends with the listeners, as ``background``

                async def expire_statuses(*, task_status: trio.TaskStatus[None]) -> None:
                    with expiring:
                        await statuses.serve_expiry(task_status=task_status)

                await nursery.start(expire_statuses)
                sharing = trio.CancelScope()  # ends with the listeners, as ``background``
                if cluster is not None:
                    # Each node enforces its share of the per-user write limit (api.md).
                    node = cluster

                    async def follow_node_count() -> None:
                        with sharing:
                            await serve_rate_share(
                                node,
                                send_limiter,
                                settings.send_rate,
                                settings.send_burst,
                                also=[throttle.share],
                            )

                    nursery.start_soon(follow_node_count)
                api = api_app(ctx, files)
                asgi_app: ASGIFramework = ShieldedSend(api)
                access = access_logs(settings)
                if access is not None:  # inside RequestContext: its lines carry request_id
                    asgi_app = AccessLogged(asgi_app, access[0])
                binds = await nursery.start(
                    partial(
                        hypercorn.trio.serve,
                        RequestContext(asgi_app),
                        config,
                        shutdown_trigger=shutdown.wait,
                    )
                )
                api_port = int(binds[0].rsplit(":", 1)[1])
                rt_ctx = RealtimeContext(
                    settings=settings,
                    hub=system.users,
                    auth=auth,
                    messages=messages,
                    limits=StreamLimits(
                        settings.stream_max_events,
                        settings.stream_max_bytes,
                        settings.stream_write_timeout,
                    ),
                    origins=frozenset(settings.origins(api_port)),
                    guard=guard,
                    stats=stats,
                    access=access[1] if access is not None else None,
                )
                realtime = trio.CancelScope()

                async def run_realtime(
                    sock: socket.socket, *, task_status: trio.TaskStatus[None]
                ) -> None:
                    with realtime:
                        await serve_realtime(rt_ctx, sock, task_status=task_status)

                rt_url = ""  # role api: no stream listener
                if rt_sock is not None:
                    await nursery.start(run_realtime, rt_sock)
                    host, rt_port = rt_sock.getsockname()[:2]
                    rt_url = f"http://{host}:{rt_port}"
                log.info("fechatter API on %s (open-files limit %d)", binds[0], limit)
                log.info("fechatter realtime streams on %s", rt_url or "none (role api)")
                log.info("fechatter node %s", node_id)
                if settings.binds_every_address and not settings.allowed_origins:
                    log.warning(
                        "listening on every address (%s) without allowed_origins: browser "
                        "pages may open streams only from %s; set allowed_origins to the "
                        "origins your users load the client from",
                        settings.host,
                        ", ".join(sorted(rt_ctx.origins)),
                    )
                task_status.started(
                    ServerInfo(
                        binds[0],
                        rt_url,
                        system,
                        stats,
                        node_id,
                        cluster,
                        router,
                        wiring,
                        files,
                        api,
                    )
                )
                await shutdown.wait()
                # Streams close first, with the hint (the HTTP listener drains meanwhile).
                rt_ctx.streams.close_all(
                    CloseReason.GOING_AWAY if cluster is None else CloseReason.SERVICE_RESTART
                )
                with trio.move_on_after(STREAMS_CLOSE_CEILING):
                    await rt_ctx.streams.wait_closed()
                realtime.cancel()
                background.cancel()
                sharing.cancel()
                collecting.cancel()
                expiring.cancel()
    finally:
        if rt_sock is not None:
            rt_sock.close()
