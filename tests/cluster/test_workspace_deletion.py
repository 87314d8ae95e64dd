"""A workspace deleted in a cluster tells every member on every node (docs/cluster.md,
"Built: workspace deletion"): each of its chats' ``chat.deleted`` is written to the outbox in
the deletion's transaction, so it reaches streams on other nodes than the deleting one and
the chat's owner, and the nodes drop the chat's subscription. Real PostgreSQL and NATS, three
nodes in this process."""

from __future__ import annotations

import psycopg
import trio

from tests.cluster.harness import ClusterHarness
from tests.cluster.test_cross_node_events import (
    TEST_CEILING,
    Http,
    cluster,
    create_group,
    http,
    next_chat_event,
    rt,
    send,
    sse_ready,
    users_in_workspace,
)
from tests.cluster.test_resume_across_nodes import seen_on
from tests.conftest import make_workspace
from tests.realtime.clients import SseClient

__all__ = ["cluster", "http"]  # the fixtures, used by name below


async def test_workspace_deletion_reaches_members_on_every_node(
    cluster: ClusterHarness, http: Http, pg_database: str
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        first = await create_group(http.on(a, n1), ws, [b, c])
        second = await create_group(http.on(a, n1), ws, [b, c])
        await send(http.on(a, n1), first, "owned by node 1")  # node 1 runs its actor
        await send(http.on(a, n3), second, "owned by node 3")
        b_sse = await sse_ready(n2, b)
        c_sse = await sse_ready(n3, c)
        r = await http.on(a, n2).delete(f"/api/workspaces/{ws}")  # deleted through node 2
        assert r.status_code == 204, r.text
        for client in (b_sse, c_sse):
            deleted = [await next_chat_event(client) for _ in range(2)]
            assert sorted((e.event, e.data["id"]) for e in deleted) == [
                ("chat.deleted", first),
                ("chat.deleted", second),
            ]
        # A marker in another workspace, after: once it arrives, each node has processed
        # the deletions before it (one feed per node, in order) and dropped the chats.
        other = await create_group(http.on(a, n1), await make_workspace(a, b, c), [b, c])
        marker = await send(http.on(a, n1), other, "marker")
        for client in (b_sse, c_sse):
            got = await next_chat_event(client)
            if got.event == "chat.created":
                got = await next_chat_event(client)
            assert (got.event, got.data["id"]) == ("message.created", marker["id"])
        for node in (n2, n3):
            assert node.info.events is not None
            assert not {first, second} & set(node.info.events.router.subscriptions)
        assert n2.info.events is not None  # the deleting node published the rows it wrote
        await n2.info.events.publisher.wait_idle()
        assert await trio.to_thread.run_sync(outbox_rows, pg_database) == 0
        await b_sse.aclose()
        await c_sse.aclose()


def outbox_rows(database_url: str) -> int:
    """Rows left in the shared database's outbox."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM outbox").fetchone()
    assert row is not None
    return int(row[0])


async def test_a_member_away_during_a_workspace_deletion_gets_it_on_resume_elsewhere(
    cluster: ClusterHarness, http: Http
) -> None:
    """The deletion's rows carry the members as ``notify``: the publisher stores a departure
    notice for each before ``chat.deleted``, so a resume on another node (durable replay)
    still replays the deleted chats' events up to their deletion."""
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        other = await create_group(http.on(a, n1), await make_workspace(a, b, c), [b, c])
        got = await seen_on(n2, b, http.on(a, n1), chat)
        missed = await send(http.on(a, n1), chat, "sent while b was away")
        r = await http.on(a, n3).delete(f"/api/workspaces/{ws}")
        assert r.status_code == 204, r.text
        after = await send(http.on(a, n1), other, "after the deletion")
        again = await SseClient.connect(rt(n3), b.api.token, last_event_id=got.id)
        assert (await again.next_event()).event == "ready"
        seen = [await next_chat_event(again) for _ in range(3)]
        # In order within each chat; across chats the order is the publishers' (SPEC:
        # ordered per chat), so the other chat's message may come before the deletion.
        deleted_chat = [
            (e.event, e.data["id"])
            for e in seen
            if e.event != "message.created" or e.data["chat_id"] == chat
        ]
        assert deleted_chat == [("message.created", missed["id"]), ("chat.deleted", chat)]
        assert [e.data["id"] for e in seen if e.data.get("chat_id") == other] == [after["id"]]
        await again.aclose()
