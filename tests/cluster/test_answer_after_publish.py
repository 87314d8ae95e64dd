"""A write is answered once its events are stored (docs/cluster.md "Built: the suites on a
cluster", "answer after publish"): one process publishes before it answers, so a stream
opened after the answer never receives that write's events; the cluster keeps the same
contract by having the owner wait (bounded) for its publisher. Real PostgreSQL and NATS,
three nodes in this process; the publisher is held back by holding its per-chat advisory
lock from another PostgreSQL session."""

from __future__ import annotations

from typing import Any

import psycopg
import trio

from fechatter.storage.outbox import lock_key
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

__all__ = ["cluster", "http"]  # the fixtures, used by name below


class PublisherLock:
    """The chat's publisher lock (``outbox.lock_key``) held by a session of the test's."""

    def __init__(self, database_url: str, chat_id: int) -> None:
        self._url = database_url
        self._key = lock_key(chat_id)
        self._conn: psycopg.Connection[Any] | None = None

    def _hold(self) -> None:
        self._conn = psycopg.connect(self._url, autocommit=True)
        self._conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (self._key,))

    def _release(self) -> None:
        assert self._conn is not None
        self._conn.close()  # the session ends: its advisory lock goes

    async def hold(self) -> None:
        await trio.to_thread.run_sync(self._hold)

    async def release(self) -> None:
        await trio.to_thread.run_sync(self._release)


async def test_a_send_is_answered_after_its_events_are_stored(
    cluster: ClusterHarness, http: Http, pg_database: str
) -> None:
    n1, n2, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        (a, b, c), ws = await users_in_workspace(cluster, http, 3)
        chat = await create_group(http.on(a, n1), ws, [b, c])
        await send(http.on(a, n1), chat, "first")  # node 1 owns the chat now
        assert n1.info.events is not None
        publisher = n1.info.events.publisher
        busy = publisher.statistics().busy
        lock = PublisherLock(pg_database, chat)
        await lock.hold()
        answered = trio.Event()
        held: dict[str, Any] = {}

        async def held_send() -> None:
            held.update(await send(http.on(a, n1), chat, "held"))
            answered.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(held_send)
            # The publisher tried the chat and found its lock taken: committed, not stored.
            await publisher.wait_for(lambda s: s.busy > busy)
            assert not answered.is_set()  # not answered before its events are stored
            await lock.release()
        # Answered now; a stream opened after the answer starts after "held".
        b_sse = await sse_ready(n2, b)
        marker = await send(http.on(c, n1), chat, "marker")
        got = await next_chat_event(b_sse)
        assert (got.event, got.data["id"]) == ("message.created", marker["id"])
        assert held["id"] != marker["id"]
        await b_sse.aclose()
