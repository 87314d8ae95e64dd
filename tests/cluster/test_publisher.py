"""The ``OutboxPublisher`` (issue 12, docs/cluster.md §4, plan step B2) on a real PostgreSQL
and a real NATS server with JetStream: rows written through ``ChatStore(outbox=True)`` reach
the stream once each, in ``event_seq`` order, with their msg ids, headers and payloads; the
outbox is empty after; leftovers go out through another node's sweeper; outages of NATS and a
failed delete lose nothing and store nothing twice."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import trio

from fechatter import events
from fechatter.bus import BusState, Message, StoredMessage, open_nats_bus
from fechatter.bus.nats import NatsBus
from fechatter.cluster.publisher import OutboxPublisher, PublisherStatistics
from fechatter.models import Role, User
from fechatter.storage import outbox
from fechatter.storage.cluster import ChatStore
from fechatter.storage.outbox import rehydrate
from fechatter.storage.postgres import PostgresStorage, open_postgres_storage, run_op
from tests.nats import NatsServer
from tests.pg import PgServer
from tests.storage.factories import make_group, make_user, msg

CEILING = 20.0
_names = itertools.count(1)


def _admin(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def _outbox_count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM outbox").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
async def storage(pg_database: str) -> AsyncIterator[PostgresStorage]:
    async with open_postgres_storage(
        pg_database, pool_size=6, acquire_timeout=2.0, connect_timeout=2, operation_timeout=5.0
    ) as opened:
        yield opened


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[NatsBus]:
    async with open_nats_bus(nats_server.url, op_timeout=2.0) as opened:
        yield opened


def _names_pair() -> tuple[str, str]:
    """A subject prefix and a stream name of their own (the NATS server is the session's)."""
    n = f"{os.getpid()}x{next(_names)}"
    return f"tpub{n}", f"TPUB{n}"


@asynccontextmanager
async def running(
    storage: PostgresStorage, bus: NatsBus, prefix: str, stream: str, **kw: Any
) -> AsyncIterator[OutboxPublisher]:
    """A started publisher whose stream exists; cancelled on exit."""
    kw.setdefault("sweep_every", 600.0)  # no sweeps unless the test asks for them
    publisher = OutboxPublisher(
        storage, bus, prefix=prefix, stream=stream, max_bytes=64 << 20, **kw
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        await publisher.ready.wait()
        yield publisher
        nursery.cancel_scope.cancel()


async def wait_all(
    publishers: Sequence[OutboxPublisher],
    predicate: Callable[[list[PublisherStatistics]], bool],
) -> None:
    """Return once ``predicate`` holds over the publishers' statistics (re-checked on every
    change of any of them)."""
    while not predicate([p.statistics() for p in publishers]):
        async with trio.open_nursery() as nursery:

            async def woken(p: OutboxPublisher) -> None:
                await p.wait_change()
                nursery.cancel_scope.cancel()

            for p in publishers:
                nursery.start_soon(woken, p)


async def stored(bus: NatsBus, stream: str, subject: str) -> list[StoredMessage]:
    return await bus.read_stream(stream, subject, 1, 10_000)


def _seqs(messages: list[StoredMessage]) -> list[int]:
    return [int((m.headers or {})["Fx-Seq"]) for m in messages]


async def _fill(storage: PostgresStorage, chat_id: int, sender: User, n: int) -> None:
    """``n`` message.created events in ``chat_id``, through the outbox (batches of 5)."""
    store = storage.chat_store(None, outbox=True)
    for start in range(0, n, 5):
        batch = [msg(sender, f"m{i}") for i in range(start, min(n, start + 5))]
        await store.insert_messages(chat_id, batch)


async def test_notify_publishes_a_chats_events_in_order_with_ids_headers_and_payloads(
    storage: PostgresStorage, bus: NatsBus, pg_database: str
) -> None:
    prefix, stream = _names_pair()
    with trio.fail_after(CEILING):
        workspace, (alice, bob, _), chat = await make_group(storage, 3)
        dave = await make_user(storage, "dave")
        await storage.add_workspace_member(workspace.id, dave.id, Role.MEMBER)
        store: ChatStore = storage.chat_store(None, outbox=True)
        (root,) = await store.insert_messages(chat.id, [msg(alice, "hello")])
        assert root.message is not None
        await store.insert_messages(
            chat.id, [replace(msg(bob, "in thread"), thread_id=root.message.id)]
        )
        await store.add_reaction(chat.id, root.message.id, bob.id, "👍", 50)
        await store.edit_message(chat.id, root.message.id, "edited", [], False)
        await store.add_chat_members(chat.id, [dave.id], Role.MEMBER, by=alice.id)
        rows = await storage._call(lambda conn: run_op(conn, outbox.rows(chat.id)))
        expected = []
        for row in rows:
            if row.data.get("$ref") == "message":
                message = await storage.get_message(int(row.data["id"]))
                assert message is not None
                expected.append(rehydrate(row.data, message))
            else:
                expected.append(row.data)
        async with running(storage, bus, prefix, stream) as publisher:
            live = await bus.subscribe(f"{prefix}.rt.chat.{chat.id}", buffer=16)
            assert publisher.notify(chat.id)
            await publisher.wait_idle()
            republished = [await live.receive() for _ in rows]
            got = await stored(bus, stream, f"{prefix}.ev.chat.{chat.id}")
            notices = await stored(bus, stream, f"{prefix}.ev.user.>")
            stats = publisher.statistics()
    names = [r.name for r in rows]
    assert names == [
        events.MESSAGE_CREATED,
        events.MESSAGE_CREATED,
        events.MESSAGE_UPDATED,  # the thread root, a $ref row rehydrated at publish time
        events.REACTION_ADDED,
        events.MESSAGE_UPDATED,
        events.MEMBER_ADDED,
    ]
    assert _seqs(got) == [1, 2, 3, 4, 5, 6]
    assert [m.seq for m in got] == sorted(m.seq for m in got)
    for item, row, payload in zip(got, rows, expected, strict=True):
        headers = item.headers or {}
        assert headers["Nats-Msg-Id"] == f"c:{chat.id}:{row.event_seq}"
        assert headers["Fx-Event"] == row.name
        assert headers["Fx-Seq"] == str(row.event_seq)
        assert json.loads(item.payload) == payload
    assert json.loads(got[2].payload)["reply_count"] == 1
    # The stream republishes each stored event on <prefix>.rt.> with its stream sequence.
    for item, again in zip(got, republished, strict=True):
        assert isinstance(again, Message)
        assert (again.headers or {})["Nats-Sequence"] == str(item.seq)
        assert again.payload == item.payload
    assert json.loads(got[2].payload)["id"] == root.message.id
    # The membership notice for dave, stored before the member_added it announces.
    (notice,) = notices
    assert notice.subject == f"{prefix}.ev.user.{dave.id}"
    assert json.loads(notice.payload) == {"joined": "c", "id": chat.id, "event_seq": 6}
    assert (notice.headers or {})["Nats-Msg-Id"] == f"n:c:{chat.id}:6:{dave.id}"
    assert got[4].seq < notice.seq < got[5].seq
    assert (stats.stored, stats.duplicates, stats.notices, stats.removed) == (6, 0, 1, 6)
    assert _outbox_count(pg_database) == 0


async def test_many_notifies_while_publishing_coalesce_and_nothing_is_left(
    storage: PostgresStorage, bus: NatsBus, pg_database: str
) -> None:
    prefix, stream = _names_pair()
    with trio.fail_after(CEILING):
        _, (alice, *_), chat = await make_group(storage, 2)
        async with running(storage, bus, prefix, stream, batch=4) as publisher:
            store = storage.chat_store(None, outbox=True)
            for i in range(30):
                await store.insert_messages(chat.id, [msg(alice, f"m{i}")])
                assert publisher.notify(chat.id)
                assert publisher.notify(chat.id)  # coalesced: queued or one more pass
                assert publisher.statistics().pending <= 1
            await publisher.wait_idle()
            got = await stored(bus, stream, f"{prefix}.ev.chat.{chat.id}")
    assert _seqs(got) == list(range(1, 31))
    assert _outbox_count(pg_database) == 0


async def test_a_dead_owners_rows_go_out_once_through_another_nodes_sweeper(
    storage: PostgresStorage, bus: NatsBus, pg_database: str
) -> None:
    prefix, stream = _names_pair()
    with trio.fail_after(CEILING):
        _, (alice, *_), chat = await make_group(storage, 2)
        # The owner committed and died before publishing: rows, and nobody notifies.
        await _fill(storage, chat.id, alice, 12)
        async with running(storage, bus, prefix, stream, sweep_every=0.1, sweep_age=0.3) as other:
            await other.wait_for(lambda s: s.removed == 12)
            assert other.statistics().sweeps >= 1
            assert await other.sweep_once() == []  # nothing left to sweep
            await other.wait_idle()
            got = await stored(bus, stream, f"{prefix}.ev.chat.{chat.id}")
            stats = other.statistics()
    assert _seqs(got) == list(range(1, 13))
    assert (stats.stored, stats.duplicates) == (12, 0)
    assert _outbox_count(pg_database) == 0


async def test_two_nodes_sweeping_the_same_leftovers_store_each_event_once(
    storage: PostgresStorage, bus: NatsBus, pg_database: str, nats_server: NatsServer
) -> None:
    prefix, stream = _names_pair()
    with trio.fail_after(CEILING):
        _, (alice, *_), first = await make_group(storage, 2)
        chats = [first.id]
        for _ in range(3):
            chat = await storage.create_chat(
                first.workspace_id, first.type, None, None, alice.id, [alice.id]
            )
            chats.append(chat.id)
        for chat_id in chats:
            await _fill(storage, chat_id, alice, 25)
        total = 25 * len(chats)
        # Two "nodes": separate storages (pools) and buses on the same database and NATS.
        async with (
            open_postgres_storage(pg_database, pool_size=6) as storage_b,
            open_nats_bus(nats_server.url, op_timeout=2.0) as bus_b,
        ):
            fast = {"sweep_every": 0.02, "sweep_age": 0.0, "batch": 7}
            async with (
                running(storage, bus, prefix, stream, **fast) as a,
                running(storage_b, bus_b, prefix, stream, **fast) as b,
            ):
                await wait_all([a, b], lambda ss: sum(s.removed for s in ss) >= total)
                sa, sb = a.statistics(), b.statistics()
            got = {c: await stored(bus, stream, f"{prefix}.ev.chat.{c}") for c in chats}
    for chat_id in chats:
        assert _seqs(got[chat_id]) == list(range(1, 26)), chat_id
    assert sa.stored + sb.stored == total
    assert sa.duplicates + sb.duplicates == 0  # the chat lock: no batch published twice
    assert _outbox_count(pg_database) == 0


async def test_nats_down_rows_wait_with_backoff_and_flow_in_order_after_restart(
    storage: PostgresStorage, pg_database: str
) -> None:
    prefix, stream = _names_pair()
    server = NatsServer.create()
    try:
        with trio.fail_after(3 * CEILING):
            _, (alice, *_), chat = await make_group(storage, 2)
            async with (
                open_nats_bus(server.url, op_timeout=1.0) as bus,
                running(storage, bus, prefix, stream, batch=4) as publisher,
            ):
                await _fill(storage, chat.id, alice, 5)
                publisher.notify(chat.id)
                await publisher.wait_for(lambda s: s.removed == 5)
                server.stop()
                await bus.wait_state(BusState.RECONNECTING)
                await _fill(storage, chat.id, alice, 10)
                began = trio.current_time()
                publisher.notify(chat.id)
                await publisher.wait_for(lambda s: s.failures >= 3)
                # Backoff, not a busy loop: the third attempt waited 0.1 s + 0.2 s.
                assert trio.current_time() - began >= 0.3
                assert publisher.statistics().failures <= 4
                assert _outbox_count(pg_database) == 10  # nothing lost, nothing deleted
                server.start()
                await bus.wait_state(BusState.CONNECTED)
                await publisher.wait_for(lambda s: s.removed == 15)
                got = await stored(bus, stream, f"{prefix}.ev.chat.{chat.id}")
                stats = publisher.statistics()
    finally:
        server.stop_and_remove()
    assert _seqs(got) == list(range(1, 16))
    assert (stats.stored, stats.duplicates) == (15, 0)
    assert _outbox_count(pg_database) == 0


async def test_a_failed_delete_after_the_acks_is_republished_and_deduplicated(
    storage: PostgresStorage, bus: NatsBus, pg_database: str
) -> None:
    prefix, stream = _names_pair()
    # A real database failure at the delete, after every publish of the batch was acked.
    _admin(
        pg_database,
        "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'the test refuses deletes'; END $$;"
        " CREATE TRIGGER outbox_refuse_delete BEFORE DELETE ON outbox"
        " FOR EACH ROW EXECUTE FUNCTION refuse_delete()",
    )
    with trio.fail_after(CEILING):
        _, (alice, *_), chat = await make_group(storage, 2)
        await _fill(storage, chat.id, alice, 6)
        async with running(storage, bus, prefix, stream) as publisher:
            publisher.notify(chat.id)
            await publisher.wait_for(lambda s: s.stored == 6 and s.failures >= 1)
            assert _outbox_count(pg_database) == 6  # acked, not deleted
            _admin(pg_database, "DROP TRIGGER outbox_refuse_delete ON outbox")
            await publisher.wait_for(lambda s: s.removed == 6)
            got = await stored(bus, stream, f"{prefix}.ev.chat.{chat.id}")
            stats = publisher.statistics()
    assert _seqs(got) == [1, 2, 3, 4, 5, 6]  # each stored once
    assert stats.stored == 6
    assert stats.duplicates >= 6  # every retry republished all six; JetStream dropped them
    assert _outbox_count(pg_database) == 0


async def test_a_full_pending_set_refuses_the_notify_and_the_sweeper_publishes_later(
    storage: PostgresStorage, bus: NatsBus, pg_database: str
) -> None:
    prefix, stream = _names_pair()
    with trio.fail_after(CEILING):
        _, (alice, *_), first = await make_group(storage, 2)
        chats = [first.id]
        for _ in range(2):
            chat = await storage.create_chat(
                first.workspace_id, first.type, None, None, alice.id, [alice.id]
            )
            chats.append(chat.id)
        for chat_id in chats:
            await _fill(storage, chat_id, alice, 3)
        publisher = OutboxPublisher(
            storage, bus, prefix=prefix, stream=stream, max_bytes=64 << 20,
            pending_max=2, sweep_every=0.1, sweep_age=0.2,
        )  # fmt: skip
        # Not running yet: nothing takes chats off the pending set.
        assert publisher.notify(chats[0])
        assert publisher.notify(chats[0])  # already queued: coalesced, not counted
        assert publisher.notify(chats[1])
        assert not publisher.notify(chats[2])  # full: left to the sweeper
        assert (publisher.statistics().pending, publisher.statistics().dropped) == (2, 1)
        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.run)
            await publisher.wait_for(lambda s: s.removed == 9)
            nursery.cancel_scope.cancel()
        got = {c: await stored(bus, stream, f"{prefix}.ev.chat.{c}") for c in chats}
    assert all(_seqs(got[c]) == [1, 2, 3] for c in chats)
    assert publisher.statistics().sweeps >= 1
    assert _outbox_count(pg_database) == 0


async def test_postgresql_down_rows_wait_and_go_out_when_it_is_back(
    storage: PostgresStorage, bus: NatsBus, pg_server: PgServer, pg_database: str
) -> None:
    prefix, stream = _names_pair()
    with trio.fail_after(3 * CEILING):
        _, (alice, *_), chat = await make_group(storage, 2)
        await _fill(storage, chat.id, alice, 4)
        async with running(storage, bus, prefix, stream) as publisher:
            await trio.to_thread.run_sync(pg_server.stop)
            try:
                publisher.notify(chat.id)
                await publisher.wait_for(lambda s: s.failures >= 2)
                assert publisher.statistics().stored == 0
            finally:
                await trio.to_thread.run_sync(pg_server.start)
            await publisher.wait_for(lambda s: s.removed == 4)
            got = await stored(bus, stream, f"{prefix}.ev.chat.{chat.id}")
    assert _seqs(got) == [1, 2, 3, 4]
    assert _outbox_count(pg_database) == 0


@pytest.mark.expect_log_errors(
    r"outbox publisher: chat \d+ quarantined after KeyError",
    reason="a malformed $ref row is quarantined on purpose",
)
async def test_a_malformed_row_quarantines_its_chat_and_the_others_still_go_out(
    storage: PostgresStorage, bus: NatsBus, pg_database: str
) -> None:
    prefix, stream = _names_pair()
    with trio.fail_after(CEILING):
        _, (alice, *_), bad = await make_group(storage, 2)
        good = await storage.create_chat(
            bad.workspace_id, bad.type, None, None, alice.id, [alice.id]
        )
        (root,) = await storage.chat_store(None, outbox=True).insert_messages(
            bad.id, [msg(alice, "root")]
        )
        assert root.message is not None
        # A $ref row without its counters: rehydrate raises KeyError (not Unavailable).
        _admin(
            pg_database,
            "INSERT INTO outbox (topic, topic_id, event_seq, name, data) VALUES ('c', "
            f'{bad.id}, 1000, \'message.updated\', \'{{"$ref": "message", "id": '
            f"{root.message.id}}}')",
        )
        await _fill(storage, good.id, alice, 3)
        # One worker: a dead worker (or publisher) would never reach the good chat.
        async with running(storage, bus, prefix, stream, workers=1, sweep_every=0.05,
                           sweep_age=0.0, quarantine_first=600.0) as publisher:  # fmt: skip
            assert publisher.notify(bad.id)
            assert publisher.notify(good.id)
            await publisher.wait_for(lambda s: s.removed == 3 and s.errors == 1)
            # Quarantined: a notify is deferred and the sweeps pass it over.
            assert publisher.notify(bad.id)
            sweeps = publisher.statistics().sweeps
            await publisher.wait_for(lambda s: s.sweeps >= sweeps + 2)
            stats = publisher.statistics()
            got = await stored(bus, stream, f"{prefix}.ev.chat.{good.id}")
    assert _seqs(got) == [1, 2, 3]
    assert (stats.errors, stats.quarantined, stats.pending) == (1, 1, 0)
    assert _outbox_count(pg_database) == 2  # the bad chat's two rows wait (its batch rolled back)


async def test_a_batch_too_slow_for_the_timeout_is_halved_until_it_fits(
    pg_database: str, bus: NatsBus
) -> None:
    """The server takes 50 ms per deleted row (a trigger standing in for a slow database)
    and the operation timeout is 1 s: a batch of 20+ rows can never commit. The publisher
    halves the chat's batch after each timeout (100 → 50 → 25 → 12) and doubles it after
    each commit, so all 36 events go out in order instead of the same batch being retried
    for ever."""
    prefix, stream = _names_pair()
    _admin(
        pg_database,
        "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(0.05); RETURN OLD; END $$;"
        " CREATE TRIGGER outbox_slow_delete BEFORE DELETE ON outbox"
        " FOR EACH ROW EXECUTE FUNCTION slow_delete()",
    )
    async with open_postgres_storage(
        pg_database, pool_size=4, acquire_timeout=2.0, connect_timeout=2, operation_timeout=1.0
    ) as storage:
        with trio.fail_after(3 * CEILING):
            _, (alice, *_), chat = await make_group(storage, 2)
            await _fill(storage, chat.id, alice, 36)
            async with running(storage, bus, prefix, stream) as publisher:
                assert publisher.workers == 1  # pool of 4: at most 4 // 4
                assert publisher.batch_size(chat.id) == 100
                publisher.notify(chat.id)
                await publisher.wait_for(lambda s: s.removed == 36)
                await publisher.wait_idle()
                stats = publisher.statistics()
                got = await stored(bus, stream, f"{prefix}.ev.chat.{chat.id}")
    assert _seqs(got) == list(range(1, 37))
    assert stats.failures >= 3  # 100, 50 and 25 rows timed out
    assert stats.stored == 36
    assert _outbox_count(pg_database) == 0


async def test_workers_are_capped_to_a_quarter_of_the_pool(pg_database: str, bus: NatsBus) -> None:
    """Each worker holds a pooled connection per batch: never more than pool_size // 4 (≥ 1),
    so the heartbeat and the writes always find a connection."""
    with trio.fail_after(CEILING):
        async with open_postgres_storage(pg_database, pool_size=12) as storage:
            assert storage.pool_size == 12
            assert OutboxPublisher(storage, bus, workers=8).workers == 3
            assert OutboxPublisher(storage, bus, workers=2).workers == 2
        async with open_postgres_storage(pg_database, pool_size=2) as storage:
            assert OutboxPublisher(storage, bus, workers=8).workers == 1


async def test_claim_many_locks_each_chat_skips_a_busy_one_and_reads_each_in_order(
    storage: PostgresStorage, pg_database: str
) -> None:
    """``outbox.claim_many`` in one transaction: a chat another transaction is publishing
    (its advisory lock taken) is left out; a locked chat without rows is an empty list; each
    other chat's first ``rows`` rows come in ``event_seq`` order."""
    with trio.fail_after(CEILING):
        _, (alice, *_), first = await make_group(storage, 2)
        chats = [first.id]
        for _ in range(3):
            chat = await storage.create_chat(
                first.workspace_id, first.type, None, None, alice.id, [alice.id]
            )
            chats.append(chat.id)
        busy, full, short, empty = chats
        for chat_id in (busy, full, short):
            await _fill(storage, chat_id, alice, 4)
        with psycopg.connect(pg_database) as holder:  # another publisher, mid-transaction
            holder.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (outbox.lock_key(busy),)
            )

            async def claim(conn: Any) -> dict[int, list[outbox.PendingEvent]]:
                await conn.execute("BEGIN")
                try:
                    return await run_op(
                        conn, outbox.claim_many([(busy, 9), (full, 3), (short, 9), (empty, 9)])
                    )
                finally:
                    await conn.execute("ROLLBACK")

            got = await storage._call(claim)
            holder.rollback()
    assert set(got) == {full, short, empty}
    assert [e.event_seq for e in got[full]] == [1, 2, 3]
    assert [e.event_seq for e in got[short]] == [1, 2, 3, 4]
    assert got[empty] == []
    assert all(e.chat_id == c for c in got for e in got[c])


async def test_chats_notified_together_go_out_together_and_a_busy_one_does_not_hold_them(
    storage: PostgresStorage, bus: NatsBus, pg_database: str
) -> None:
    """Four chats queued at once are published by the group worker; one of them is busy
    (another publisher holds its lock): the other three are stored and deleted meanwhile,
    and the busy one goes out, in order, once the lock is released."""
    prefix, stream = _names_pair()
    with trio.fail_after(CEILING):
        _, (alice, *_), first = await make_group(storage, 2)
        chats = [first.id]
        for _ in range(3):
            chat = await storage.create_chat(
                first.workspace_id, first.type, None, None, alice.id, [alice.id]
            )
            chats.append(chat.id)
        for chat_id in chats:
            await _fill(storage, chat_id, alice, 3)
        busy = chats[1]
        with psycopg.connect(pg_database) as holder:
            holder.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (outbox.lock_key(busy),)
            )
            async with running(storage, bus, prefix, stream, workers=2) as publisher:
                for chat_id in chats:
                    assert publisher.notify(chat_id)
                await publisher.wait_for(lambda s: s.removed == 9 and s.busy >= 1)
                assert _outbox_count(pg_database) == 3  # the busy chat's rows wait
                holder.rollback()  # the other publisher is done
                await publisher.wait_for(lambda s: s.removed == 12)
                await publisher.wait_idle()
                got = {c: await stored(bus, stream, f"{prefix}.ev.chat.{c}") for c in chats}
                stats = publisher.statistics()
    assert all(_seqs(got[c]) == [1, 2, 3] for c in chats)
    assert (stats.stored, stats.duplicates) == (12, 0)
    assert _outbox_count(pg_database) == 0
