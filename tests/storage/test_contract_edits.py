"""The storage contract for edits, tombstones, threads pages and ``around`` (SPEC §6).

Run once per backend (see ``conftest.py``). Thread replies are written with
``insert_messages`` (``NewMessage.thread_id``), as the ChatActor writes them.
"""

from __future__ import annotations

import pytest

from fechatter.errors import NotFound
from fechatter.models import ChatRecord, ChatType, Message, NewMessage, User
from fechatter.storage import Storage

from .factories import make_group, msg, send


async def _reply(storage: Storage, chat: ChatRecord, sender: User, root: int, text: str) -> Message:
    new = NewMessage(sender.id, text, (), None, None, thread_id=root)
    (inserted,) = await storage.insert_messages(chat.id, [new])
    assert inserted.message is not None, inserted.error
    return inserted.message


async def _other_chat(storage: Storage, chat: ChatRecord, owner: User) -> ChatRecord:
    return await storage.create_chat(
        chat.workspace_id, ChatType.GROUP, None, None, owner.id, [owner.id]
    )


async def test_edit_replaces_content_and_mentions(storage: Storage) -> None:
    _, (owner, bob, _cat), chat = await make_group(storage)
    (m,) = await send(storage, chat.id, owner, "frist")
    await storage.add_reaction(chat.id, m.id, bob.id, "👍", 50)
    edited = await storage.edit_message(chat.id, m.id, f"first <@{bob.id}>", [bob.id], True)
    assert (edited.id, edited.seq, edited.sender_id, edited.created_at) == (
        m.id,
        m.seq,
        owner.id,
        m.created_at,
    )
    assert (edited.content, edited.mentions, edited.mentions_channel) == (
        f"first <@{bob.id}>",
        (bob.id,),
        True,
    )
    assert edited.edited_at is not None
    assert edited.edited_at >= m.created_at
    assert [r.emoji for r in edited.reactions] == ["👍"]  # edits keep reactions
    assert await storage.get_message(m.id) == edited
    again = await storage.edit_message(chat.id, m.id, "plain", [], False)
    assert (again.mentions, again.mentions_channel) == ((), False)
    assert again.edited_at is not None
    assert again.edited_at >= edited.edited_at


async def test_edit_refuses_absent_foreign_and_deleted_messages(storage: Storage) -> None:
    _, (owner, *_), chat = await make_group(storage)
    other = await _other_chat(storage, chat, owner)
    (m,) = await send(storage, chat.id, owner, "x")
    for chat_id, message_id in [(other.id, m.id), (chat.id, 999_999)]:
        with pytest.raises(NotFound) as caught:
            await storage.edit_message(chat_id, message_id, "y", [], False)
        assert caught.value.code == "message_not_found"
    await storage.delete_message(chat.id, m.id)
    with pytest.raises(NotFound):
        await storage.edit_message(chat.id, m.id, "y", [], False)


async def test_delete_makes_a_tombstone(storage: Storage) -> None:
    _, (owner, bob, _), chat = await make_group(storage)
    (inserted,) = await storage.insert_messages(
        chat.id, [msg(owner, "secret", client_id="c1", files=["/files/1/a.png"])]
    )
    m = inserted.message
    assert m is not None
    (after,) = await send(storage, chat.id, bob, "after")
    await storage.edit_message(chat.id, m.id, f"secret <@{bob.id}>", [bob.id], True)
    await storage.add_reaction(chat.id, m.id, bob.id, "🎉", 50)
    edited_at = (await storage.get_message(m.id) or m).edited_at
    outcome = await storage.delete_message(chat.id, m.id)
    t = outcome.tombstone
    assert outcome.root is None
    assert (t.id, t.chat_id, t.seq, t.sender_id, t.created_at, t.client_id) == (
        m.id,
        chat.id,
        m.seq,
        owner.id,
        m.created_at,
        "c1",
    )
    assert (t.deleted, t.content, t.files, t.reactions, t.mentions, t.mentions_channel) == (
        True,
        "",
        (),
        (),
        (),
        False,
    )
    assert t.edited_at == edited_at  # a deletion is not an edit
    assert await storage.get_message(m.id) == t
    page = await storage.list_messages(chat.id, limit=10, before=None, after=None)
    assert [(x.seq, x.deleted) for x in page.items] == [(after.seq, False), (m.seq, True)]
    assert await storage.message_sender(chat.id, m.id) is None
    assert await storage.message_sender(chat.id, after.id) == bob.id
    # Its reactions are gone from storage, not only hidden: removing one finds no message.
    with pytest.raises(NotFound):
        await storage.remove_reaction(chat.id, m.id, bob.id, "🎉")
    with pytest.raises(NotFound) as caught:
        await storage.delete_message(chat.id, m.id)
    assert caught.value.code == "message_not_found"
    # The next message still takes the next seq: tombstones keep theirs.
    (nxt,) = await send(storage, chat.id, owner, "next")
    assert nxt.seq == after.seq + 1


async def test_delete_refuses_absent_and_foreign_messages(storage: Storage) -> None:
    _, (owner, *_), chat = await make_group(storage)
    other = await _other_chat(storage, chat, owner)
    (m,) = await send(storage, chat.id, owner, "x")
    for chat_id, message_id in [(other.id, m.id), (chat.id, 999_999)]:
        with pytest.raises(NotFound) as caught:
            await storage.delete_message(chat_id, message_id)
        assert caught.value.code == "message_not_found"
    assert await storage.message_sender(other.id, m.id) is None
    assert await storage.get_message(m.id) == m


async def test_client_id_retry_returns_the_message_as_it_is_now(storage: Storage) -> None:
    _, (owner, bob, _), chat = await make_group(storage)
    (first,) = await storage.insert_messages(chat.id, [msg(owner, "old", client_id="k")])
    assert first.message is not None
    await storage.edit_message(chat.id, first.message.id, "new", [], False)
    await storage.add_reaction(chat.id, first.message.id, bob.id, "👍", 50)
    (retry,) = await storage.insert_messages(chat.id, [msg(owner, "old", client_id="k")])
    assert retry.created is False
    assert retry.message is not None
    assert (retry.message.content, retry.message.edited_at is not None) == ("new", True)
    assert [r.emoji for r in retry.message.reactions] == ["👍"]
    await storage.delete_message(chat.id, first.message.id)
    (retry,) = await storage.insert_messages(chat.id, [msg(owner, "old", client_id="k")])
    assert retry.created is False
    assert retry.message is not None
    assert (retry.message.deleted, retry.message.content) == (True, "")


async def test_reads_carry_reactions(storage: Storage) -> None:
    _, (owner, bob, cat), chat = await make_group(storage)
    a, b = await send(storage, chat.id, owner, "a", "b")
    await storage.add_reaction(chat.id, a.id, bob.id, "👍", 50)
    await storage.add_reaction(chat.id, a.id, cat.id, "👍", 50)
    await storage.add_reaction(chat.id, b.id, cat.id, ":party:", 50)
    page = await storage.list_messages(chat.id, limit=10, before=None, after=None)
    got = {m.id: [(r.emoji, r.count, r.user_ids) for r in m.reactions] for m in page.items}
    assert got == {a.id: [("👍", 2, (bob.id, cat.id))], b.id: [(":party:", 1, (cat.id,))]}
    window = await storage.messages_around(chat.id, b.id, limit=2)
    assert [m.reactions for m in window.items] == [m.reactions for m in reversed(page.items)]
    one = await storage.get_message(b.id)
    assert one is not None
    assert one.reactions == page.items[0].reactions


async def test_messages_around(storage: Storage) -> None:
    _, (owner, *_), chat = await make_group(storage)
    ms = await send(storage, chat.id, owner, *[str(i) for i in range(1, 11)])
    other = await _other_chat(storage, chat, owner)

    async def around(index: int, limit: int) -> tuple[list[str], bool, bool]:
        w = await storage.messages_around(chat.id, ms[index].id, limit=limit)
        return [m.content for m in w.items], w.has_more_before, w.has_more_after

    assert await around(4, 4) == (["3", "4", "5", "6"], True, True)
    assert await around(4, 5) == (["3", "4", "5", "6", "7"], True, True)
    assert await around(2, 4) == (["1", "2", "3", "4"], False, True)
    assert await around(0, 4) == (["1", "2"], False, True)
    assert await around(9, 4) == (["8", "9", "10"], True, False)
    assert await around(8, 4) == (["7", "8", "9", "10"], True, False)
    assert await around(4, 1) == (["5"], True, True)
    assert await around(4, 50) == ([str(i) for i in range(1, 11)], False, False)
    for chat_id, message_id in [(other.id, ms[0].id), (chat.id, 999_999)]:
        with pytest.raises(NotFound) as caught:
            await storage.messages_around(chat_id, message_id, limit=4)
        assert caught.value.code == "message_not_found"
    # A tombstone is a place in history: one can jump to it.
    await storage.delete_message(chat.id, ms[4].id)
    w = await storage.messages_around(chat.id, ms[4].id, limit=3)
    assert [(m.seq, m.deleted) for m in w.items] == [(4, False), (5, True), (6, False)]


async def test_thread_pages_and_top_level(storage: Storage) -> None:
    _, (owner, bob, _), chat = await make_group(storage)
    root, other_root = await send(storage, chat.id, owner, "root", "other root")
    r1 = await _reply(storage, chat, bob, root.id, "r1")
    await send(storage, chat.id, owner, "top")
    r2 = await _reply(storage, chat, owner, root.id, "r2")
    o1 = await _reply(storage, chat, bob, other_root.id, "o1")
    r3 = await _reply(storage, chat, bob, root.id, "r3")
    assert (r1.thread_id, r3.thread_id, o1.thread_id) == (root.id, root.id, other_root.id)

    async def texts(**kw: object) -> tuple[list[str], bool]:
        page = await storage.list_messages(chat.id, **kw)  # type: ignore[arg-type]
        return [m.content for m in page.items], page.has_more

    assert await texts(limit=10, before=None, after=None, thread_id=root.id) == (
        ["r3", "r2", "r1"],
        False,
    )
    assert await texts(limit=2, before=None, after=None, thread_id=root.id) == (["r3", "r2"], True)
    assert await texts(limit=2, before=r2.id, after=None, thread_id=root.id) == (["r1"], False)
    assert await texts(limit=1, before=None, after=r1.id, thread_id=root.id) == (["r2"], True)
    assert await texts(limit=10, before=None, after=None, top_level=True) == (
        ["top", "other root", "root"],
        False,
    )
    assert await texts(limit=1, before=None, after=root.id, top_level=True) == (
        ["other root"],
        True,
    )
    # Replies are part of the chat's history and its seq.
    page = await storage.list_messages(chat.id, limit=10, before=None, after=None)
    assert [m.seq for m in page.items] == list(range(7, 0, -1))


async def test_is_thread_root(storage: Storage) -> None:
    _, (owner, bob, _), chat = await make_group(storage)
    other = await _other_chat(storage, chat, owner)
    root, gone = await send(storage, chat.id, owner, "root", "gone")
    reply = await _reply(storage, chat, bob, root.id, "reply")
    await storage.delete_message(chat.id, gone.id)
    assert await storage.is_thread_root(chat.id, root.id)
    assert await storage.is_thread_root(chat.id, gone.id)  # a deleted root keeps its thread
    for chat_id, message_id in [
        (chat.id, reply.id),  # a reply is not a root
        (other.id, root.id),
        (chat.id, 999_999),
    ]:
        assert not await storage.is_thread_root(chat_id, message_id)


async def test_deleting_replies_recounts_the_root(storage: Storage) -> None:
    _, (owner, bob, _), chat = await make_group(storage)
    (root,) = await send(storage, chat.id, owner, "root")
    r1 = await _reply(storage, chat, bob, root.id, "r1")
    r2 = await _reply(storage, chat, bob, root.id, "r2")
    before = await storage.get_message(root.id)
    assert before is not None
    assert (before.reply_count, before.last_reply_at) == (2, r2.created_at)

    outcome = await storage.delete_message(chat.id, r2.id)
    assert outcome.tombstone.thread_id == root.id
    assert outcome.root is not None
    assert (outcome.root.id, outcome.root.reply_count, outcome.root.last_reply_at) == (
        root.id,
        1,
        r1.created_at,
    )
    assert await storage.get_message(root.id) == outcome.root
    # A thread page still lists the tombstone in its place.
    page = await storage.list_messages(
        chat.id, limit=10, before=None, after=None, thread_id=root.id
    )
    assert [(m.id, m.deleted) for m in page.items] == [(r2.id, True), (r1.id, False)]

    # Deleting the root leaves its thread: the replies and the counters stay.
    deleted_root = (await storage.delete_message(chat.id, root.id)).tombstone
    assert (deleted_root.deleted, deleted_root.reply_count) == (True, 1)
    assert deleted_root.last_reply_at == r1.created_at
    last = await storage.delete_message(chat.id, r1.id)
    assert last.root is not None
    assert (last.root.deleted, last.root.reply_count, last.root.last_reply_at) == (True, 0, None)
