"""The ChatActor's send path with threads and mentions, one group commit at a time, against a
real SQLite file: what each send is answered, and the events in the chat's order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
import trio

from fechatter.actors.chat import ChatActor
from fechatter.actors.commands import SendMessage, SendResult
from fechatter.actors.mailbox import Call
from fechatter.errors import Invalid
from fechatter.events import Event
from fechatter.models import ChatType, NewMessage, Role
from fechatter.storage.sqlite import SqliteStorage, open_sqlite_storage


class Recorder:
    """An ``EventSink`` that keeps what was published, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, user_ids: Iterable[int], event: Event) -> None:
        self.events.append(event)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    async with open_sqlite_storage(str(tmp_path / "threads.db")) as s:
        yield s


async def _actor(storage: SqliteStorage, sink: Recorder) -> tuple[ChatActor, list[int], int]:
    ids = []
    for i in range(4):
        user, _ = await storage.create_user(f"u{i}", f"u{i}@example.com", "hash", None)
        ids.append(user.id)
    ws = await storage.create_workspace("ws", None, ids[0])
    for uid in ids[1:]:
        await storage.add_workspace_member(ws.id, uid, Role.MEMBER)
    # The last user is in the workspace but not in the chat.
    chat = await storage.create_chat(ws.id, ChatType.GROUP, None, None, ids[0], ids[:3])
    state = await storage.load_chat_state(chat.id)
    assert state is not None
    actor = ChatActor(state, storage, sink, group_commit_max=64, typing_ttl=5.0)
    return actor, ids, chat.id


async def _commit(actor: ChatActor, *sends: NewMessage) -> list[SendResult | Invalid]:
    """One handle_batch of these sends (one group commit); each call's answer."""
    calls: list[Call[Any]] = [Call(SendMessage(m)) for m in sends]
    await actor.handle_batch(calls)
    answers: list[SendResult | Invalid] = []
    for call in calls:
        assert call.settled
        try:
            answers.append(await call.wait())
        except Invalid as exc:
            answers.append(exc)
    return answers


def _new(sender: int, content: str, thread_id: int | None = None) -> NewMessage:
    return NewMessage(sender, content, (), None, None, thread_id=thread_id)


async def test_each_reply_is_followed_by_its_roots_update(storage: SqliteStorage) -> None:
    sink = Recorder()
    actor, (a, b, _c, _out), _chat = await _actor(storage, sink)
    with trio.fail_after(10):
        [one, two] = await _commit(actor, _new(a, "root one"), _new(b, "root two"))
        assert isinstance(one, SendResult)
        assert isinstance(two, SendResult)
        sink.events.clear()
        answers = await _commit(
            actor,
            _new(b, "r1", one.message.id),
            _new(a, "r2", two.message.id),
            _new(b, "bad", 999_999),
            _new(a, "r3", one.message.id),
        )
    r1, r2, bad, r3 = answers
    assert isinstance(r1, SendResult)
    assert isinstance(r2, SendResult)
    assert isinstance(r3, SendResult)
    assert isinstance(bad, Invalid)
    assert [e.field for e in bad.errors] == ["thread_id"]
    # In the chat's order: each reply, then its root as it was right after that reply.
    got = [(e.name, e.data["id"], e.data["reply_count"]) for e in sink.events]
    assert got == [
        ("message.created", r1.message.id, 0),
        ("message.updated", one.message.id, 1),
        ("message.created", r2.message.id, 0),
        ("message.updated", two.message.id, 1),
        ("message.created", r3.message.id, 0),
        ("message.updated", one.message.id, 2),
    ]
    updates = [e.data for e in sink.events if e.name == "message.updated"]
    assert [u["last_reply_at"] for u in updates] == [
        r1.message.created_at,
        r2.message.created_at,
        r3.message.created_at,
    ]
    # The last update of each root is the root as stored.
    stored = await storage.get_message(one.message.id)
    assert stored is not None
    assert updates[2] == stored.to_json()


async def test_mentions_are_computed_from_the_members(storage: SqliteStorage) -> None:
    sink = Recorder()
    actor, (a, b, c, outsider), _chat = await _actor(storage, sink)
    text = f"<@{c}> <@{outsider}> <@{b}> <!channel>"
    with trio.fail_after(10):
        # What the edge hands over carries no mentions: the actor fills them in.
        [sent, plain] = await _commit(actor, _new(a, text), _new(b, f"<@{outsider}>"))
    assert isinstance(sent, SendResult)
    assert isinstance(plain, SendResult)
    assert (sent.message.mentions, sent.message.mentions_channel) == (tuple(sorted([b, c])), True)
    assert (plain.message.mentions, plain.message.mentions_channel) == ((), False)
    assert sink.events[0].data["mentions"] == sorted([b, c])
    stored = await storage.get_message(sent.message.id)
    assert stored == sent.message
