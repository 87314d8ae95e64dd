"""Liveness, readiness, metrics, presence and realtime health."""

from __future__ import annotations

from dataclasses import replace

from quart import Blueprint, Quart, Response

from fechatter.errors import BadRequest, FieldError, Unavailable
from fechatter.http.apidoc import (
    OnlineUsersOut,
    OnlineUsersQuery,
    RealtimeHealthOut,
    StatusOut,
    doc,
)
from fechatter.http.common import Context, current_user_id, json_response, query_int
from fechatter.metrics import LiveCounts
from fechatter.schemas import MAX_ID


def register(app: Quart, ctx: Context) -> None:
    """Add the operational routes to ``app``."""
    bp = Blueprint("ops", __name__)

    @bp.get("/health")
    @doc("ops", "Liveness", ok={200: StatusOut}, auth=False)
    async def health() -> Response:
        return json_response({"status": "ok"})

    @bp.get("/ready")
    @doc(
        "ops",
        "Readiness: storage (and NATS in a cluster) answer",
        ok={200: StatusOut},
        errors=(503,),
        auth=False,
    )
    async def ready() -> Response:
        try:
            await ctx.storage.ping()
        except Unavailable:
            raise Unavailable("storage is not answering", code="not_ready") from None
        # Cluster mode: a node without NATS or with an unconfirmed heartbeat takes no traffic.
        why = ctx.cluster.not_ready() if ctx.cluster is not None else None
        if why is not None:
            raise Unavailable(why, code="not_ready")
        return json_response({"status": "ready"})

    @bp.get("/metrics")
    @doc("ops", "Prometheus metrics (text exposition format)", ok={200: "text/plain"}, auth=False)
    async def metrics() -> Response:
        m = ctx.metrics
        d = ctx.system.directory.statistics()
        m.chat_actors.set(d.chat_actors)
        m.mailbox_depth.set(d.mailbox_depth)
        m.actor_restarts.set(d.restarts)
        hub = ctx.system.users.statistics()
        storage = ctx.storage.statistics()
        m.online_users.set(hub.connected_users)
        m.storage_transactions.set(storage.transactions)
        live = LiveCounts(
            # Rows committed by the ChatActors' group commits: a send succeeded, whichever
            # transport carried it (an idempotent repeat inserts nothing).
            messages_sent=storage.messages_inserted,
            realtime=replace(ctx.realtime),
            streams=hub.connections,
            deliveries=hub.delivered,
            events_published=hub.published,
            fanout=ctx.system.users.fanout.copy(),
        )
        body = m.render(live)
        return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")

    @bp.get("/api/online-users")
    @doc(
        "ops",
        "Members of a chat or workspace with a live stream",
        query=OnlineUsersQuery,
        ok={200: OnlineUsersOut},
        errors=(400, 403, 404),
    )
    async def online_users() -> Response:
        user_id = await current_user_id(ctx)
        chat_id = query_int("chat_id", low=1, high=MAX_ID)
        workspace_id = query_int("workspace_id", low=1, high=MAX_ID)
        if (chat_id is None) == (workspace_id is None):
            raise BadRequest(
                "give exactly one of chat_id and workspace_id",
                code="invalid_query",
                errors=[FieldError("chat_id", "give exactly one of chat_id and workspace_id")],
            )
        if chat_id is not None:
            await ctx.chats.visible(chat_id, user_id)
            members = [m.user_id for m in await ctx.storage.list_chat_members(chat_id)]
        else:
            assert workspace_id is not None
            await ctx.workspaces.role(workspace_id, user_id)
            members = [m.user.id for m in await ctx.storage.list_workspace_members(workspace_id)]
        # Cluster mode: online on any node (one query, docs/cluster.md §6); else this hub.
        online = await ctx.system.users.online_anywhere(members)
        body: dict[str, object] = {"user_ids": online}
        if ctx.statuses is not None:  # those online who show away/busy (docs/api.md)
            shown = await ctx.statuses.shown_of(online, set(online))
            if shown:  # absent when nobody listed shows one (the old shape, unchanged)
                body["statuses"] = {str(uid): view for uid, view in shown.items()}
        return json_response(body)

    @bp.get("/api/sse/health")
    @doc("ops", "Realtime counters of this node", ok={200: RealtimeHealthOut}, auth=False)
    async def realtime_health() -> Response:
        stats = ctx.system.users.statistics()
        d = ctx.system.directory.statistics()
        cluster = ctx.cluster
        # Cluster mode: the live nodes as of this node's last heartbeat (cached, ≤ 1 s old).
        node_id = cluster.node_id if cluster is not None else ctx.node_id
        nodes = list(cluster.nodes) if cluster is not None else [ctx.node_id]
        return json_response(
            {
                "status": "healthy",
                "service": "fechatter",
                "transport": ["sse", "websocket"],
                "connected_users": stats.connected_users,
                "connections": stats.connections,
                "active_chats": d.chat_actors,
                "slow_consumers": ctx.realtime.slow_consumers,
                "node_id": node_id,
                "nodes": nodes,
            }
        )

    app.register_blueprint(bp)
