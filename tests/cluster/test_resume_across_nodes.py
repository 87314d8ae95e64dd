"""Resume across nodes (docs/cluster.md §5, "Built: C3"): event ids are ``<E>-<S>`` (the
stream's incarnation and the event's stream sequence), valid on every node. A stream that
reconnects to another node with its last id gets exactly what it missed (a durable replay
from JetStream), or ``resync`` when that cannot be proved. Real PostgreSQL and NATS, three
nodes in this process, real SSE and WebSocket clients."""

from __future__ import annotations

import json

import trio

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
    ws_next_chat_event,
)
from tests.conftest import Api, User
from tests.realtime.clients import RawWs, Received, SseClient

__all__ = ["cluster", "http"]  # the fixtures, shared with the cross-node tests


async def seen_on(node: RunningNode, user: User, sender: Api, chat: int) -> Received:
    """Open an SSE stream of ``user`` on ``node``, send a message to ``chat`` as
    ``sender``, read it there and close the stream; returns that event (its id is the
    resume point)."""
    client = await sse_ready(node, user)
    sent = await send(sender, chat, "seen")
    got = await next_chat_event(client)
    assert (got.event, got.data["id"]) == ("message.created", sent["id"])
    assert got.id
    await client.aclose()
    return got


async def test_sse_resume_on_another_node_gets_every_missed_event_once_in_order(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        other = await create_group(http.on(c, n3), ws, [a, b])
        got = await seen_on(n2, b, http.on(a, n1), chat)
        missed: dict[int, list[tuple[str, int]]] = {chat: [], other: []}
        for i in range(12):  # through every node, two chats
            node = cluster.nodes[i % 3]
            where, who = (chat, a) if i % 2 == 0 else (other, c)
            sent = await send(http.on(who, node), where, f"away {i}")
            missed[where].append(("message.created", sent["id"]))
        first_id = missed[chat][0][1]
        r = await http.on(a, n2).patch(
            f"/api/chats/{chat}/messages/{first_id}", json={"content": "edited"}
        )
        assert r.status_code == 200, r.text
        missed[chat].append(("message.updated", first_id))
        again = await SseClient.connect(rt(n3), b.api.token, last_event_id=got.id)
        ready = await again.next_event()
        assert ready.event == "ready"
        # Every missed event once, in order within each chat (SPEC: ordered per chat; the
        # two chats' owners publish independently, so they interleave in any order).
        received: dict[int, list[tuple[str, int]]] = {chat: [], other: []}
        ids = []
        for _ in range(13):
            event = await next_chat_event(again)
            received[event.data["chat_id"]].append((event.event, event.data["id"]))
            ids.append(event.id)
        assert received == missed
        # Ids increase, are <E>-<S> with the first stream's E.
        incarnation = got.id.partition("-")[0] if got.id else ""
        seqs = [int(i.partition("-")[2]) for i in ids if i]
        assert all(i and i.partition("-")[0] == incarnation for i in ids)
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        sentinel = await send(http.on(c, n1), other, "sentinel")
        after = await next_chat_event(again)  # the very next one: nothing replayed twice
        assert (after.event, after.data["id"]) == ("message.created", sentinel["id"])
        await again.aclose()


async def test_websocket_resume_on_another_node_is_exact(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n2), ws, [b, c])
        socket = await RawWs.connect(rt(n3), b.api.token)
        assert (await socket.next_message())["event"] == "ready"
        first = await send(http.on(a, n2), chat, "seen")
        frame = await ws_next_chat_event(socket)
        assert (frame["event"], frame["data"]["id"]) == ("message.created", first["id"])
        await socket.stream.aclose()
        missed = [(await send(http.on(a, n2), chat, f"away {i}"))["id"] for i in range(5)]
        again = await RawWs.connect(rt(n1), b.api.token, last_event_id=frame["id"])
        opening = await again.next_message()
        assert opening["event"] == "ready"
        got = [await ws_next_chat_event(again) for _ in missed]
        assert [f["data"]["id"] for f in got] == missed
        assert all(f["event"] == "message.created" for f in got)
        sentinel = await send(http.on(a, n3), chat, "sentinel")
        assert (await ws_next_chat_event(again))["data"]["id"] == sentinel["id"]
        await again.stream.aclose()


async def test_a_member_removed_while_away_gets_the_removal_then_nothing_of_that_chat(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        other = await create_group(http.on(c, n2), ws, [a, b])
        got = await seen_on(n2, b, http.on(a, n1), chat)
        before = await send(http.on(a, n1), chat, "before the removal")
        r = await http.on(a, n3).delete(f"/api/chats/{chat}/members/{b.id}")
        assert r.status_code == 204, r.text
        await send(http.on(a, n1), chat, "after the removal: not for b")
        elsewhere = await send(http.on(c, n2), other, "another chat")
        again = await SseClient.connect(rt(n3), b.api.token, last_event_id=got.id)
        assert (await again.next_event()).event == "ready"
        one = await next_chat_event(again)
        assert (one.event, one.data["id"]) == ("message.created", before["id"])
        two = await next_chat_event(again)
        assert two.event == "chat.member_removed"
        assert (two.data["chat_id"], two.data["user_id"]) == (chat, b.id)
        three = await next_chat_event(again)
        assert (three.event, three.data["id"]) == ("message.created", elsewhere["id"])
        await send(http.on(a, n1), chat, "still not for b")
        sentinel = await send(http.on(c, n2), other, "sentinel")
        four = await next_chat_event(again)
        assert (four.event, four.data["id"]) == ("message.created", sentinel["id"])
        await again.aclose()


async def test_an_id_of_another_incarnation_or_from_the_future_is_unknown(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        got = await seen_on(n2, b, http.on(a, n1), chat)
        assert got.id
        incarnation, _, seq = got.id.partition("-")
        for stale in (f"0{incarnation}-{seq}", f"{incarnation}-{int(seq) + 1000}", "junk"):
            again = await SseClient.connect(rt(n3), b.api.token, last_event_id=stale)
            assert (await again.next_event()).event == "ready"
            resync = await again.next_event()
            assert (resync.event, resync.data) == ("resync", {"reason": "unknown_event_id"})
            await again.aclose()


async def test_an_evicted_resume_point_is_history_unavailable(
    cluster: ClusterHarness, http: Http
) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        got = await seen_on(n2, b, http.on(a, n1), chat)
        await send(http.on(a, n1), chat, "missed, then purged")
        events = n1.info.events
        cluster_node = n1.info.cluster
        assert events is not None
        assert cluster_node is not None
        await events.publisher.wait_idle()
        purge = f"$JS.API.STREAM.PURGE.{events.stream}"
        reply = await cluster_node.bus.request(purge, b"", 5.0)
        assert json.loads(reply.payload).get("success") is True
        again = await SseClient.connect(rt(n3), b.api.token, last_event_id=got.id)
        assert (await again.next_event()).event == "ready"
        resync = await again.next_event()
        assert (resync.event, resync.data) == ("resync", {"reason": "history_unavailable"})
        await again.aclose()


async def test_a_replay_over_the_cap_is_resync(cluster: ClusterHarness, http: Http) -> None:
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        got = await seen_on(n2, b, http.on(a, n1), chat)
        for i in range(4):
            await send(http.on(a, n1), chat, f"away {i}")
        events = n3.info.events
        assert events is not None
        events.durable.limit = 3  # 4 to replay: over the cap
        again = await SseClient.connect(rt(n3), b.api.token, last_event_id=got.id)
        assert (await again.next_event()).event == "ready"
        resync = await again.next_event()
        assert (resync.event, resync.data) == ("resync", {"reason": "history_unavailable"})
        await again.aclose()
        assert events.durable.running == 0


WORKSPACE_EVENTS = ("workspace.updated", "workspace.member_added", "workspace.member_updated")


async def test_a_resume_on_another_node_merges_missed_workspace_and_chat_events_by_sequence(
    cluster: ClusterHarness, http: Http
) -> None:
    """docs/cluster.md "Built: workspace events", Resume: the durable replay reads the user's
    ``ev.user.<uid>`` copies of workspace events along with the chat events and merges them
    by stream sequence. A stream on node 2 leaves; workspace changes and chat messages made
    through every node while it is away come back exactly once, in stream order, on node 3;
    then the next live event of each kind, nothing doubled."""
    n1, n2, n3 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        got = await seen_on(n2, b, http.on(a, n1), chat)
        people = [await Api(http.clients[n1.name]).signup() for _ in range(2)]
        missed: list[tuple[str, int | str]] = []
        for i, node in enumerate([n1, n2, n3, n1]):
            sent = await send(http.on(a, node), chat, f"away {i}")
            missed.append(("message.created", sent["id"]))
            if i < len(people):  # a join of the workspace through this node
                r = await http.on(a, node).post(
                    f"/api/workspaces/{ws}/members", json={"email": people[i].email}
                )
                assert r.status_code == 201, r.text
                missed.append(("workspace.member_added", people[i].id))
            else:  # a change of the workspace itself
                r = await http.on(a, node).put(
                    f"/api/workspaces/{ws}", json={"description": f"away {i}"}
                )
                assert r.status_code == 200, r.text
                missed.append(("workspace.updated", f"away {i}"))
        again = await SseClient.connect(rt(n3), b.api.token, last_event_id=got.id)
        assert (await again.next_event()).event == "ready"
        received: list[tuple[str, int | str]] = []
        seqs: list[int] = []
        for _ in missed:
            event = await again.next_of(*CHAT_EVENTS_SEEN, *WORKSPACE_EVENTS, "resync")
            assert event.event != "resync", event
            assert event.id
            assert got.id
            assert event.id.partition("-")[0] == got.id.partition("-")[0]
            seqs.append(int(event.id.partition("-")[2]))
            received.append(_what(event))
        # Every missed event once, in stream order; each kind in the order it was made (a
        # write is answered once its events are stored, within 1 s, so the two kinds' order
        # across each other is not pinned here: a publish past that bound is the sweeper's).
        assert sorted(received, key=str) == sorted(missed, key=str)
        for kind in ("message.", "workspace."):
            assert [e for e in received if e[0].startswith(kind)] == [
                e for e in missed if e[0].startswith(kind)
            ]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        r = await http.on(a, n2).put(f"/api/workspaces/{ws}", json={"description": "live"})
        assert r.status_code == 200, r.text
        sentinel = await send(http.on(a, n3), chat, "sentinel")
        after = {_what(await again.next_of(*CHAT_EVENTS_SEEN, *WORKSPACE_EVENTS)) for _ in "ab"}
        assert after == {("workspace.updated", "live"), ("message.created", sentinel["id"])}
        await again.aclose()


CHAT_EVENTS_SEEN = ("message.created",)


def _what(event: Received) -> tuple[str, int | str]:
    """An event as (name, what it is about): a message id, a joined user id, a description."""
    data = event.data
    if event.event == "workspace.member_added":
        return event.event, int(data.get("user", {}).get("id", data.get("user_id")))
    if event.event == "workspace.updated":
        return event.event, str(data["description"])
    return event.event, int(data["id"])
