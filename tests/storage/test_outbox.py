"""The transactional outbox at the storage layer (issue 12, docs/cluster.md §4, plan step
B1; PostgreSQL only): every ``ChatStore`` write with ``outbox`` on inserts exactly the events
the ``ChatActor`` publishes for it, in its own transaction, numbered gapless per chat."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from fechatter import events
from fechatter.errors import ChatMoved, NotFound
from fechatter.models import ChatRecord, Message, Role, User
from fechatter.storage import outbox
from fechatter.storage.cluster import ChatStore, ClusterStore, Fence
from fechatter.storage.outbox import OutboxEvent, rehydrate
from fechatter.storage.postgres import PostgresStorage, open_postgres_storage, run_op

from .factories import make_group, make_user, msg, send

FAST: dict[str, Any] = {
    "pool_size": 3,
    "acquire_timeout": 1.0,
    "connect_timeout": 2,
    "operation_timeout": 3.0,
}
A = "node-a.aaaaaa"


def _admin(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []


def _last_event_seq(url: str, chat_id: int) -> int | None:
    rows = _admin(url, "SELECT last_event_seq FROM chats WHERE id = %s", chat_id)
    return rows[0][0] if rows else None


async def _rows(storage: PostgresStorage, chat_id: int) -> list[OutboxEvent]:
    return await storage._call(lambda conn: run_op(conn, outbox.rows(chat_id)))


class Setup:
    """A group chat (alice owner, bob, carol), dave in the workspace only; a root message
    by alice with bob's 👍, and a reply to it by bob in its thread."""

    def __init__(
        self, chat: ChatRecord, users: list[User], dave: User, root: Message, reply: Message
    ) -> None:
        self.chat, self.users, self.dave, self.root, self.reply = chat, users, dave, root, reply


async def _setup(storage: PostgresStorage) -> Setup:
    workspace, users, chat = await make_group(storage, 3)
    dave = await make_user(storage, "dave")
    await storage.add_workspace_member(workspace.id, dave.id, Role.MEMBER)
    (root,) = await send(storage, chat.id, users[0], "hello")
    assert await storage.add_reaction(chat.id, root.id, users[1].id, "👍", 50)
    (r,) = await storage.insert_messages(
        chat.id, [replace(msg(users[1], "in thread"), thread_id=root.id)]
    )
    assert r.message is not None
    return Setup(chat, users, dave, root, r.message)


Expect = Callable[[PostgresStorage, object], Awaitable[list[tuple[str, dict[str, Any]]]]]
Call = Callable[[ChatStore, list[OutboxEvent]], Awaitable[object]]


def _cases(s: Setup) -> dict[str, tuple[Call, Expect]]:
    """Per write: the call, and the events the ChatActor publishes for it (built the way
    fechatter/actors/chat.py builds them, from reads after the commit)."""
    alice, bob, carol = s.users
    c, root, reply = s.chat.id, s.root, s.reply

    async def sent(st: PostgresStorage, result: object) -> list[tuple[str, dict[str, Any]]]:
        assert isinstance(result, list)
        message = result[0].message
        root_now = await st.get_message(root.id)
        assert root_now is not None
        state = replace(root_now, last_reply_at=message.created_at)  # one reply: pending 0
        return [
            (events.MESSAGE_CREATED, message.to_json()),
            (events.MESSAGE_UPDATED, state.to_json()),
        ]

    async def edited(st: PostgresStorage, result: object) -> list[tuple[str, dict[str, Any]]]:
        now = await st.get_message(root.id)
        assert now is not None
        assert now.content == "edited"
        return [(events.MESSAGE_UPDATED, now.to_json())]

    async def deleted(st: PostgresStorage, _: object) -> list[tuple[str, dict[str, Any]]]:
        root_now = await st.get_message(root.id)
        assert root_now is not None
        assert root_now.reply_count == 0
        return [
            (events.MESSAGE_DELETED, {"id": reply.id, "chat_id": c, "seq": reply.seq}),
            (events.MESSAGE_UPDATED, root_now.to_json()),
        ]

    def fixed(*evs: tuple[str, dict[str, Any]]) -> Expect:
        async def expect(st: PostgresStorage, _: object) -> list[tuple[str, dict[str, Any]]]:
            return list(evs)

        return expect

    async def updated(st: PostgresStorage, _: object) -> list[tuple[str, dict[str, Any]]]:
        view = await st.get_chat_view(c, alice.id)
        assert view is not None
        # As the actor publishes it: without the viewer's own ``muted``.
        return [(events.CHAT_UPDATED, view.to_event_json())]

    react = {"chat_id": c, "message_id": root.id, "user_id": carol.id, "emoji": "🎉"}
    unreact = {"chat_id": c, "message_id": root.id, "user_id": bob.id, "emoji": "👍"}
    return {
        "insert_messages": (
            lambda st, e: st.insert_messages(
                c, [replace(msg(carol, "another"), thread_id=root.id)], events=e
            ),
            sent,
        ),
        "edit_message": (
            lambda st, e: st.edit_message(c, root.id, "edited", (bob.id,), False, events=e),
            edited,
        ),
        "delete_message": (lambda st, e: st.delete_message(c, reply.id, events=e), deleted),
        "add_reaction": (
            lambda st, e: st.add_reaction(c, root.id, carol.id, "🎉", 50, events=e),
            fixed((events.REACTION_ADDED, react)),
        ),
        "remove_reaction": (
            lambda st, e: st.remove_reaction(c, root.id, bob.id, "👍", events=e),
            fixed((events.REACTION_REMOVED, unreact)),
        ),
        "add_chat_members": (
            lambda st, e: st.add_chat_members(c, [s.dave.id], Role.MEMBER, by=alice.id, events=e),
            fixed((events.MEMBER_ADDED, {"chat_id": c, "user_ids": [s.dave.id], "by": alice.id})),
        ),
        "remove_chat_member": (
            lambda st, e: st.remove_chat_member(c, carol.id, None, by=alice.id, events=e),
            fixed((events.MEMBER_REMOVED, {"chat_id": c, "user_id": carol.id, "by": alice.id})),
        ),
        "set_chat_member_role": (
            lambda st, e: st.set_chat_member_role(c, bob.id, Role.ADMIN, by=alice.id, events=e),
            fixed(
                (
                    events.MEMBER_UPDATED,
                    {"chat_id": c, "user_id": bob.id, "role": "admin", "by": alice.id},
                )
            ),
        ),
        "update_chat": (
            lambda st, e: st.update_chat(c, description="new", by=alice.id, events=e),
            updated,
        ),
        "mark_read": (
            lambda st, e: st.mark_read(c, carol.id, reply.id, events=e),
            fixed((events.READ, {"chat_id": c, "user_id": carol.id, "message_id": reply.id})),
        ),
        "delete_chat": (
            lambda st, e: st.delete_chat(c, events=e),
            fixed((events.CHAT_DELETED, {"id": c})),
        ),
    }


def _reported(row: OutboxEvent) -> OutboxEvent:
    if "$ref" not in row.data:
        return row
    return replace(row, data={k: v for k, v in row.data.items() if k != "reply_count"})


async def _resolved(st: PostgresStorage, row: OutboxEvent) -> dict[str, Any]:
    """A row's payload as the publisher would send it (a ``$ref`` rehydrated)."""
    if "$ref" not in row.data:
        return row.data
    message = await st.get_message(row.data["id"])
    assert message is not None
    return rehydrate(row.data, message)


@pytest.mark.parametrize("fenced", [False, True], ids=["unfenced", "fenced"])
@pytest.mark.parametrize("method", ChatStore.WRITES)
async def test_every_write_adds_exactly_its_events(
    pg_database: str, method: str, fenced: bool
) -> None:
    """Each write with the outbox on: exactly the actor's events appear, numbered right
    after the chat's earlier events (consecutive), with the payloads the actor publishes;
    the rows it reports are the rows stored. A stale fence writes no row."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(30):
            s = await _setup(storage)
            c = s.chat.id
            fence = None
            if fenced:
                await cluster.register_node(A, "api", 60)
                owner = await cluster.acquire_chat(c, A)
                assert owner is not None
                fence = Fence(c, A, owner.epoch)
                stale = cluster.chat_store(Fence(c, A, owner.epoch + 1), outbox=True)
            store = cluster.chat_store(fence, outbox=True)
            call, expect = _cases(s)[method]
            # Earlier events of the chat: the numbering continues after them.
            first: list[OutboxEvent] = []
            await store.mark_read(c, s.users[2].id, s.root.id, events=first)
            assert [e.event_seq for e in first] == [1]
            if fenced:
                with pytest.raises(ChatMoved):
                    await call(stale, [])
                assert await _rows(storage, c) == first
                assert _last_event_seq(pg_database, c) == 1
            written: list[OutboxEvent] = []
            result = await call(store, written)
            rows = await _rows(storage, c)
            # Reported as stored (a group commit's $ref also stores the root's counter).
            assert [_reported(r) for r in rows] == first + written
            assert [r.event_seq for r in rows] == list(range(1, len(rows) + 1))
            if method != "delete_chat":
                assert _last_event_seq(pg_database, c) == len(rows)
            else:
                assert _last_event_seq(pg_database, c) is None  # the row is gone, its events stay
            want = await expect(storage, result)
            got = [(r.name, await _resolved(storage, r)) for r in rows[1:]]
            assert got == want
            notify = [r.notify for r in rows[1:]]
            assert notify == ([(s.dave.id,)] if method == "add_chat_members" else [()] * len(want))


async def test_a_failing_write_rolls_its_events_back(pg_database: str) -> None:
    """A write that fails after its statements ran (a NotFound inside the op, a fence that
    fails) leaves no row and the counter where it was; a write that changes nothing (a
    repeated reaction, a marker that does not move) adds no event."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        with trio.fail_after(20):
            s = await _setup(storage)
            c, bob = s.chat.id, s.users[1]
            store = storage.chat_store(None, outbox=True)
            with pytest.raises(NotFound):
                await store.edit_message(c, 999_999, "x", (), False)
            with pytest.raises(NotFound):
                await store.set_chat_member_role(c, s.dave.id, Role.ADMIN, by=bob.id)
            assert not await store.add_reaction(c, s.root.id, bob.id, "👍", 50)
            assert not await store.mark_read(c, bob.id, s.root.id)  # bob's marker is past it
            assert await _rows(storage, c) == []
            assert _last_event_seq(pg_database, c) == 0
            with pytest.raises(ValueError, match="by"):
                await store.update_chat(c, name="x")


async def test_concurrent_writers_number_gaplessly(pg_database: str) -> None:
    """Two processes (two storages) write one chat at once — group-commit sends through one
    (also in cross-chat rounds, with another chat's sends), reactions through the other:
    event_seq is 1..N with no gap or duplicate, the counter is N, and a chat's
    ``message.created`` rows follow its message seq."""
    async with (
        open_postgres_storage(pg_database, **FAST) as one,
        open_postgres_storage(pg_database, **FAST) as two,
    ):
        with trio.fail_after(60):
            s = await _setup(one)
            c = s.chat.id
            other = await one.create_chat(
                s.chat.workspace_id, s.chat.type, "other", None, s.users[0].id, [s.users[1].id]
            )
            sends, reacts = one.chat_store(None, outbox=True), two.chat_store(None, outbox=True)
            reported: list[OutboxEvent] = []

            # One sender per chat per storage, as one actor per chat sends (a storage's
            # round takes one batch per chat).
            async def sender(store: ChatStore, chat_id: int, user: User, n: int) -> None:
                for i in range(n):
                    await store.insert_messages(
                        chat_id, [msg(user, f"m{i}"), msg(user, f"n{i}")], events=reported
                    )

            async def reactor() -> None:
                for _i in range(15):
                    await reacts.add_reaction(
                        c, s.root.id, s.users[2].id, "🎉", 50, events=reported
                    )
                    await reacts.remove_reaction(c, s.root.id, s.users[2].id, "🎉", events=reported)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender, sends, c, s.users[0], 10)
                nursery.start_soon(sender, reacts, c, s.users[1], 5)
                nursery.start_soon(sender, sends, other.id, s.users[1], 5)
                nursery.start_soon(reactor)
            rows = await _rows(one, c)
            assert len(rows) == 15 * 2 + 30
            assert [r.event_seq for r in rows] == list(range(1, len(rows) + 1))
            assert _last_event_seq(pg_database, c) == len(rows)
            created = [r.data["seq"] for r in rows if r.name == events.MESSAGE_CREATED]
            assert created == sorted(created)
            stored = [_reported(r) for r in rows + await _rows(one, other.id)]
            assert sorted(reported, key=lambda e: (e.chat_id, e.event_seq)) == sorted(
                stored, key=lambda e: (e.chat_id, e.event_seq)
            )
            others = await _rows(one, other.id)
            assert [r.event_seq for r in others] == list(range(1, 11))


async def test_outbox_off_writes_no_rows(pg_database: str) -> None:
    """The default store (single process) writes no event row and moves no counter, fenced
    or not: today's SQL."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        with trio.fail_after(20):
            s = await _setup(storage)
            c = s.chat.id
            await cluster.register_node(A, "api", 60)
            owner = await cluster.acquire_chat(c, A)
            assert owner is not None
            for store in (storage.chat_store(None), cluster.chat_store(Fence(c, A, owner.epoch))):
                assert not store.outbox
                await store.insert_messages(c, [msg(s.users[0], "x")])
                await store.update_chat(c, description="d")
                await store.add_chat_members(c, [s.dave.id], Role.MEMBER)
                await store.remove_chat_member(c, s.dave.id, None)
            assert storage.chat_store(None).plain
            assert await _rows(storage, c) == []
            assert _last_event_seq(pg_database, c) == 0


async def test_sqlite_refuses_the_outbox(tmp_path: Path) -> None:
    from fechatter.storage import open_storage

    async with open_storage(f"sqlite:///{tmp_path / 'o.db'}") as storage:
        with pytest.raises(ValueError, match="outbox needs PostgreSQL"):
            storage.chat_store(None, outbox=True)  # type: ignore[attr-defined]
