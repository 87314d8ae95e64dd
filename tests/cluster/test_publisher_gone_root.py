"""A thread root's ``$ref`` row whose root is gone before the ``OutboxPublisher`` reads it
(docs/api.md "Schemas", docs/cluster.md "Built: B2"): the root goes only with its chat, so the
row goes out as that chat's ``chat.deleted`` — schema-valid, under its own ``event_seq`` (no
gap), before the deletion's own row. Real PostgreSQL and NATS with JetStream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import trio

from fechatter import events
from fechatter.bus import open_nats_bus
from fechatter.bus.nats import NatsBus
from fechatter.storage import outbox
from fechatter.storage.cluster import ChatStore
from fechatter.storage.postgres import PostgresStorage, open_postgres_storage, run_op
from tests.cluster.test_publisher import _names_pair, _outbox_count, _seqs, running, stored
from tests.nats import NatsServer
from tests.realtime.schema_check import check_event
from tests.storage.factories import make_group, msg

CEILING = 20.0


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


async def test_a_thread_roots_update_after_its_chat_is_deleted_goes_out_as_chat_deleted(
    storage: PostgresStorage, bus: NatsBus, pg_database: str
) -> None:
    prefix, stream = _names_pair()
    with trio.fail_after(CEILING):
        _, (alice, bob, _), chat = await make_group(storage, 3)
        store: ChatStore = storage.chat_store(None, outbox=True)
        (root,) = await store.insert_messages(chat.id, [msg(alice, "root")])
        assert root.message is not None
        await store.insert_messages(
            chat.id, [replace(msg(bob, "in thread"), thread_id=root.message.id)]
        )
        # The chat (and the root with it) goes before anything is published.
        await store.delete_chat(chat.id, notify=(alice.id, bob.id))
        rows = await storage._call(lambda conn: run_op(conn, outbox.rows(chat.id)))
        assert [r.name for r in rows] == [
            events.MESSAGE_CREATED,
            events.MESSAGE_CREATED,
            events.MESSAGE_UPDATED,  # the root's $ref: its message no longer exists
            events.CHAT_DELETED,
        ]
        assert rows[2].data["$ref"] == "message"
        async with running(storage, bus, prefix, stream) as publisher:
            assert publisher.notify(chat.id)
            await publisher.wait_idle()
            got = await stored(bus, stream, f"{prefix}.ev.chat.{chat.id}")
    assert _seqs(got) == [1, 2, 3, 4]  # every event_seq went out: no gap
    names = [(m.headers or {})["Fx-Event"] for m in got]
    assert names == [
        events.MESSAGE_CREATED,
        events.MESSAGE_CREATED,
        events.CHAT_DELETED,
        events.CHAT_DELETED,
    ]
    for name, item in zip(names, got, strict=True):
        check_event(name, json.loads(item.payload))  # each as its schema says
    assert json.loads(got[2].payload) == {"id": chat.id}
    assert json.loads(got[3].payload) == {"id": chat.id}
    assert _outbox_count(pg_database) == 0
