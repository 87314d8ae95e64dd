"""Exact resume across chats (docs/cluster.md §10, "Built: exact resume across chats"): a
chat that catches up (a gap, a join) on a node no longer lets another chat's newer event
reach a stream first. Every event reaches the stream with its id, ids increase, and a
resume from any of them, on the same node or another, gets exactly what followed.

The race is built deterministically: node 2's router reads the log through a gate
(``GatedBus``, the real bus with ``read_stream`` held), so the catch-up of chat X is
provably running while chat Y delivers a newer event. Before the ``Sequencer``, that event
reached b's stream first with its id and X's older one followed without one: a client
gone in between and resuming from Y's id never got X's event. Real PostgreSQL and NATS,
three nodes in this process, real SSE clients."""

from __future__ import annotations

import trio

from fechatter.cluster.events import EventRouter
from tests.cluster.harness import ClusterHarness, RunningNode
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
from tests.cluster.test_event_router import GatedBus
from tests.realtime.clients import Received, SseClient

__all__ = ["cluster", "http"]  # the fixtures, shared with the cross-node tests


def gate_reads(node: RunningNode) -> tuple[EventRouter, GatedBus]:
    """Hold ``node``'s router log reads (catch-ups) at a gate the test opens."""
    events = node.info.events
    assert events is not None
    router = events.router
    gated = GatedBus(router._bus)  # type: ignore[arg-type]  # a NatsBus in a cluster node
    router._bus = gated  # type: ignore[assignment]
    return router, gated


def seq(event: Received) -> int:
    """The stream sequence of an event's id; the event must carry one."""
    assert event.id, f"{event.event} reached the stream without an id"
    return int(event.id.partition("-")[2])


async def resume(node: RunningNode, token: str | None, last_id: str) -> SseClient:
    assert token is not None
    client = await SseClient.connect(rt(node), token, last_event_id=last_id)
    ready = await client.next_event()
    assert ready.event == "ready"
    return client


async def test_a_gap_catch_up_holds_the_users_newer_events_and_resume_is_exact(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, v, w), ws = await users_in_workspace(cluster, http, 4)
        x = await create_group(http.on(a, n1), ws, [b, w])  # owned by node 1
        y = await create_group(http.on(a, n1), ws, [b, v])
        b_sse = await sse_ready(n2, b)
        v_sse = await sse_ready(n2, v)  # only in Y: sees what node 2 released of Y
        w_sse = await sse_ready(n3, w)  # only in X: sees that X's event is stored
        router, gated = gate_reads(n2)
        # A drop reported on X's subscription (R2): X catches up, its read held at the gate.
        router._chats[x].sub._mark_gap(1)  # type: ignore[union-attr]
        await gated.reading.wait()
        mx = await send(http.on(a, n1), x, "older, in the chat catching up")
        assert (await next_chat_event(w_sse)).data["id"] == mx["id"]  # stored: S_x
        my = await send(http.on(a, n1), y, "newer, in the other chat")
        got_v = await next_chat_event(v_sse)  # node 2 has taken Y's live copy (S_y > S_x)
        assert got_v.data["id"] == my["id"]
        gated.gate.set()
        first = await next_chat_event(b_sse)
        second = await next_chat_event(b_sse)
        assert [(e.data["chat_id"], e.data["id"]) for e in (first, second)] == [
            (x, mx["id"]),
            (y, my["id"]),
        ]
        assert seq(first) < seq(second) == seq(got_v)
        await b_sse.aclose()
        # Resume from X's id on another node: exactly Y's event, then what follows.
        assert first.id is not None
        assert second.id is not None
        other = await resume(n3, b.api.token, first.id)
        again = await next_chat_event(other)
        assert (again.data["id"], again.id) == (my["id"], second.id)
        s1 = await send(http.on(a, n1), x, "sentinel 1")
        got = await next_chat_event(other)
        assert got.data["id"] == s1["id"]
        assert seq(got) > seq(second)
        await other.aclose()
        # Resume from Y's id on the same node (its ring): the sentinel, then the next one.
        same = await resume(n2, b.api.token, second.id)
        got = await next_chat_event(same)
        assert got.data["id"] == s1["id"]
        s2 = await send(http.on(a, n1), y, "sentinel 2")
        got2 = await next_chat_event(same)
        assert got2.data["id"] == s2["id"]
        assert seq(got) < seq(got2)
        await same.aclose()
        for client in (v_sse, w_sse):
            await client.aclose()


async def test_a_join_catch_up_is_released_before_the_other_chats_newer_events(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, v, w, z), ws = await users_in_workspace(cluster, http, 5)
        x = await create_group(http.on(a, n1), ws, [w, z])  # no member of X on node 2
        y = await create_group(http.on(a, n1), ws, [b, v])
        await send(http.on(a, n1), x, "history before b joins")
        b_sse = await sse_ready(n2, b)
        v_sse = await sse_ready(n2, v)
        w_sse = await sse_ready(n3, w)
        _, gated = gate_reads(n2)
        # b joins X: node 2 learns it from the notice and reads X from it (held at the gate).
        r = await http.on(a, n1).post(f"/api/chats/{x}/members", json={"user_ids": [b.id]})
        assert r.status_code in (200, 201), r.text
        await gated.reading.wait()
        added_w = await next_chat_event(w_sse)
        assert added_w.event == "chat.member_added"
        my = await send(http.on(a, n1), y, "newer, in the other chat")
        got_v = await next_chat_event(v_sse)
        assert got_v.data["id"] == my["id"]
        gated.gate.set()
        added = await next_chat_event(b_sse)
        assert added.event == "chat.member_added", added.data  # not Y's newer message
        assert added.data["user_ids"] == [b.id]
        assert added.id == added_w.id  # the same event, the same id on every node
        newer = await next_chat_event(b_sse)
        assert (newer.data["chat_id"], newer.data["id"]) == (y, my["id"])
        assert seq(added) < seq(newer)
        await b_sse.aclose()
        # Resume from the join's id on another node: Y's event, then X's next one.
        assert added.id is not None
        other = await resume(n3, b.api.token, added.id)
        again = await next_chat_event(other)
        assert (again.data["id"], again.id) == (my["id"], newer.id)
        s1 = await send(http.on(a, n1), x, "sentinel")
        got = await next_chat_event(other)
        assert (got.data["chat_id"], got.data["id"]) == (x, s1["id"])
        assert seq(got) > seq(newer)
        for client in (other, v_sse, w_sse):
            await client.aclose()
