"""The commit time crosses nodes (``Fx-Committed``): a node delivering another node's event
times its fan-out from the commit (``fechatter_fanout_seconds{stage="commit"}``). Real
PostgreSQL and NATS, three nodes in this process (``ClusterHarness``)."""

from __future__ import annotations

import trio

from tests.cluster.harness import ClusterHarness
from tests.cluster.test_cross_node_events import (
    TEST_CEILING,
    Http,
    cluster,
    create_group,
    http,
    next_chat_event,
    send,
    sse_ready,
    users_in_workspace,
)

__all__ = ["cluster", "http"]  # the fixtures, shared with the cross-node event tests


async def test_a_remote_node_times_the_fanout_from_the_owners_commit(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])  # c never online
        b_sse = await sse_ready(n2, b)
        remote = n2.info.system.users.fanout
        owner = n1.info.system.users.fanout
        before = (sum(remote.commit), sum(remote.hub), remote.commit_sum, remote.hub_sum)
        sent = await send(http.on(a, n1), chat, "timed")
        got = await next_chat_event(b_sse)
        assert (got.event, got.data["id"]) == ("message.created", sent["id"])
        assert n1.info.system.directory.is_running(chat)  # committed on node 1
        # Node 2 counted one event from the commit (the header crossed) and from its hub;
        # node 1 has no stream of the chat's members and times nothing.
        assert (sum(remote.commit) - before[0], sum(remote.hub) - before[1]) == (1, 1)
        from_commit = remote.commit_sum - before[2]
        from_hub = remote.hub_sum - before[3]
        assert 0 < from_hub <= from_commit < TEST_CEILING
        assert sum(owner.commit) == sum(owner.hub) == 0
        await b_sse.aclose()
