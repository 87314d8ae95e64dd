"""The storage contract for thread replies, mentions and ``mention_count`` on insert (SPEC §6),
and what a ``client_id`` retry answers once the message changed (see ``test_contract.py``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
import trio

from fechatter.models import ChatType, Message, NewMessage, Role, User
from fechatter.storage import Storage
from fechatter.storage.core import SqlStorage
from fechatter.storage.messages import REPLY_TO_ERROR, THREAD_ERROR
from fechatter.storage.sql import Op, Sql, q

from .factories import make_group, make_user, send

# Direct writes for states that other operations of issue 11 (edit, delete) produce; this
# branch stores only sends. They set exactly the columns SPEC §6 says those operations set.
_EDIT = Sql("UPDATE messages SET content = ?, edited_at = ? WHERE id = ?")
_TOMBSTONE = Sql(
    "UPDATE messages SET deleted = ?, content = '', mentions = ?, mentions_channel = ? WHERE id = ?"
)
_FLAG_DELETED = Sql("UPDATE messages SET deleted = ? WHERE id = ?")
EDITED_AT = "2026-02-01T00:00:00.000000Z"


def _run(stmt: Sql, params: tuple[object, ...]) -> Op[None]:
    yield q(stmt, params)


async def edit_directly(storage: Storage, message_id: int, content: str) -> None:
    assert isinstance(storage, SqlStorage)
    await storage._write_op(_run(_EDIT, (content, EDITED_AT, message_id)))


async def tombstone_directly(storage: Storage, message_id: int) -> None:
    assert isinstance(storage, SqlStorage)
    await storage._write_op(_run(_TOMBSTONE, (True, [], False, message_id)))


async def flag_deleted(storage: Storage, message_id: int) -> None:
    """Only the ``deleted`` flag: the counts must skip tombstones by that flag alone."""
    assert isinstance(storage, SqlStorage)
    await storage._write_op(_run(_FLAG_DELETED, (True, message_id)))


def item(
    sender: User,
    content: str = "hi",
    *,
    thread_id: int | None = None,
    reply_to: int | None = None,
    client_id: str | None = None,
    mentions: Sequence[int] = (),
    channel: bool = False,
) -> NewMessage:
    return NewMessage(
        sender.id,
        content,
        (),
        reply_to,
        client_id,
        thread_id=thread_id,
        mentions=tuple(mentions),
        mentions_channel=channel,
    )


async def stored(storage: Storage, message_id: int) -> Message:
    found = await storage.get_message(message_id)
    assert found is not None
    return found


async def insert_ok(storage: Storage, chat_id: int, *items: NewMessage) -> list[Message]:
    results = await storage.insert_messages(chat_id, list(items))
    out = [r.message for r in results if r.message is not None and r.created]
    assert len(out) == len(items), [r.error for r in results]
    return out


# -- threads -------------------------------------------------------------------------------
async def test_thread_replies_count_on_their_root(storage: Storage) -> None:
    _workspace, users, chat = await make_group(storage)
    owner, bob, _cat = users
    [root, other] = await send(storage, chat.id, owner, "root", "another root")
    assert (root.thread_id, root.reply_count, root.last_reply_at) == (None, 0, None)
    one, two, plain = await insert_ok(
        storage,
        chat.id,
        item(bob, "one", thread_id=root.id),
        item(owner, "two", thread_id=root.id, reply_to=root.id),
        item(bob, "not in a thread"),
    )
    # Replies are messages of the chat's seq stream, with their thread_id.
    assert [(m.seq, m.thread_id) for m in (one, two, plain)] == [
        (3, root.id),
        (4, root.id),
        (5, None),
    ]
    assert (two.reply_to, one.reply_count, one.last_reply_at) == (root.id, 0, None)
    assert await stored(storage, one.id) == one
    now = await stored(storage, root.id)
    assert (now.reply_count, now.last_reply_at) == (2, two.created_at)
    assert (now.content, now.seq, now.edited_at) == ("root", root.seq, None)
    untouched = await stored(storage, other.id)
    assert (untouched.reply_count, untouched.last_reply_at) == (0, None)
    # A later batch adds to the count and moves last_reply_at.
    [three] = await insert_ok(storage, chat.id, item(owner, "three", thread_id=root.id))
    now = await stored(storage, root.id)
    assert (now.reply_count, now.last_reply_at) == (3, three.created_at)
    # The chat's last message is the newest reply; the sender's marker is on it.
    view = await storage.get_chat_view(chat.id, owner.id)
    assert view is not None
    assert view.last_message == three
    assert view.unread_count == 0


async def test_bad_thread_ids_reject_only_that_item(storage: Storage) -> None:
    workspace, users, chat = await make_group(storage)
    owner, bob, _cat = users
    other = await storage.create_chat(workspace.id, ChatType.GROUP, None, None, owner.id, [])
    [foreign] = await send(storage, other.id, owner, "elsewhere")
    [root, gone] = await send(storage, chat.id, owner, "root", "to be deleted")
    [reply] = await insert_ok(storage, chat.id, item(bob, "reply", thread_id=root.id))
    await tombstone_directly(storage, gone.id)
    results = await storage.insert_messages(
        chat.id,
        [
            item(bob, "another chat's root", thread_id=foreign.id),
            item(bob, "a reply is not a root", thread_id=reply.id),
            item(bob, "a tombstone is not a root", thread_id=gone.id),
            item(bob, "no such message", thread_id=999_999),
            item(bob, "both wrong", thread_id=999_999, reply_to=999_999),
            item(bob, "fine", thread_id=root.id),
        ],
    )
    assert [(r.error_field, r.error) for r in results[:5]] == [
        ("thread_id", THREAD_ERROR),
        ("thread_id", THREAD_ERROR),
        ("thread_id", THREAD_ERROR),
        ("thread_id", THREAD_ERROR),
        ("reply_to", REPLY_TO_ERROR),  # reply_to is checked first
    ]
    assert all(r.message is None and not r.created for r in results[:5])
    fine = results[5].message
    assert fine is not None
    assert results[5].created
    assert (fine.seq, fine.thread_id) == (4, root.id)  # no seq went to a rejected item
    assert (await stored(storage, root.id)).reply_count == 2
    for untouched in (foreign.id, reply.id, gone.id):
        assert (await stored(storage, untouched)).reply_count == 0


# -- retries answer with the message as it is now --------------------------------------------
async def test_client_id_retry_returns_the_message_as_stored_now(storage: Storage) -> None:
    _workspace, users, chat = await make_group(storage)
    owner, bob, _cat = users
    [first, doomed] = await insert_ok(
        storage,
        chat.id,
        item(owner, "first text", client_id="c-1"),
        item(owner, "doomed", client_id="c-2", mentions=[bob.id], channel=True),
    )
    await edit_directly(storage, first.id, "edited text")
    assert await storage.add_reaction(chat.id, first.id, bob.id, "👍", 50)
    assert await storage.add_reaction(chat.id, doomed.id, bob.id, "🎉", 50)
    await tombstone_directly(storage, doomed.id)
    await insert_ok(storage, chat.id, item(bob, "reply", thread_id=first.id))
    retried = await storage.insert_messages(
        chat.id,
        [
            item(owner, "first text", client_id="c-1"),
            item(owner, "doomed", client_id="c-2", mentions=[bob.id], channel=True),
        ],
    )
    assert [r.created for r in retried] == [False, False]
    again, tomb = (r.message for r in retried)
    assert again is not None
    assert tomb is not None
    # Never the old text: the edit, its reactions and the thread it has now.
    assert (again.id, again.content, again.edited_at) == (first.id, "edited text", EDITED_AT)
    assert [(r.emoji, r.count, r.user_ids) for r in again.reactions] == [("👍", 1, (bob.id,))]
    assert (again.reply_count, again.last_reply_at is not None) == (1, True)
    assert (tomb.id, tomb.seq, tomb.deleted, tomb.content) == (doomed.id, doomed.seq, True, "")
    assert (tomb.reactions, tomb.mentions_channel) == ((), False)
    # Nothing was inserted for the retries.
    view = await storage.get_chat_view(chat.id, owner.id)
    assert view is not None
    assert view.last_message is not None
    assert view.last_message.seq == 3


_HIDE_REACTIONS = Sql("ALTER TABLE message_reactions RENAME TO message_reactions_hidden")
_SHOW_REACTIONS = Sql("ALTER TABLE message_reactions_hidden RENAME TO message_reactions")


async def test_a_retry_whose_reactions_cannot_be_read_still_answers(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    """The reactions of a retried message are read after the batch committed: when that read
    fails, the batch is still answered (never an error for a committed batch), the retried
    message without its reactions, and a warning is logged."""
    assert isinstance(storage, SqlStorage)
    _workspace, (owner, bob, _cat), chat = await make_group(storage)
    [first] = await insert_ok(storage, chat.id, item(owner, "first", client_id="c-1"))
    assert await storage.add_reaction(chat.id, first.id, bob.id, "👍", 50)
    # A real failure of the read: the table it reads is gone for a moment.
    await storage._write_op(_run(_HIDE_REACTIONS, ()))
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="fechatter.storage.core"):
        retried, new = await storage.insert_messages(
            chat.id, [item(owner, "first", client_id="c-1"), item(bob, "new")]
        )
    assert "could not be read" in caplog.text
    assert (retried.created, new.created) == (False, True)
    assert retried.message is not None
    assert (retried.message.id, retried.message.reactions) == (first.id, ())
    await storage._write_op(_run(_SHOW_REACTIONS, ()))
    # Stored once; and with the table back, a retry answers with the reactions again.
    page = await storage.list_messages(chat.id, limit=10, before=None, after=0)
    assert [m.content for m in page.items] == ["first", "new"]
    [again] = await storage.insert_messages(chat.id, [item(owner, "first", client_id="c-1")])
    assert again.message is not None
    assert [(r.emoji, r.user_ids) for r in again.message.reactions] == [("👍", (bob.id,))]


# -- mentions ------------------------------------------------------------------------------
async def test_mentions_are_stored_as_given(storage: Storage) -> None:
    _workspace, users, chat = await make_group(storage)
    owner, bob, cat = users
    text = f"<@{bob.id}> <@{cat.id}> <!channel>"
    a, b, c = await insert_ok(
        storage,
        chat.id,
        item(owner, text, mentions=[bob.id, cat.id], channel=True),
        item(owner, "none"),
        item(bob, "just cat", mentions=[cat.id], client_id="k"),
    )
    assert (a.mentions, a.mentions_channel) == ((bob.id, cat.id), True)
    assert (b.mentions, b.mentions_channel) == ((), False)
    assert (c.mentions, c.mentions_channel) == ((cat.id,), False)
    for message in (a, b, c):
        assert await stored(storage, message.id) == message
    page = await storage.list_messages(chat.id, limit=10, before=None, after=None)
    assert [(m.mentions, m.mentions_channel) for m in page.items] == [
        ((cat.id,), False),
        ((), False),
        ((bob.id, cat.id), True),
    ]
    # A retry answers with the stored mentions, not the retried item's.
    [retry] = await storage.insert_messages(chat.id, [item(bob, "just cat", client_id="k")])
    assert retry.message is not None
    assert (retry.created, retry.message.mentions) == (False, (cat.id,))


async def test_mention_count_counts_unread_mentions_of_the_viewer(storage: Storage) -> None:
    _workspace, users, chat = await make_group(storage)
    owner, bob, cat = users

    async def counts(user: User) -> tuple[int, int]:
        view = await storage.get_chat_view(chat.id, user.id)
        assert view is not None
        listed = [c for c in await storage.list_chats(user.id, None) if c.id == chat.id]
        assert [(c.unread_count, c.mention_count) for c in listed] == [
            (view.unread_count, view.mention_count)
        ]
        return view.unread_count, view.mention_count

    assert await counts(bob) == (0, 0)
    to_bob, to_all, to_cat, _plain, deleted = await insert_ok(
        storage,
        chat.id,
        item(owner, "bob", mentions=[bob.id]),
        item(owner, "everyone", channel=True),
        item(owner, "cat", mentions=[cat.id]),
        item(owner, "nobody"),
        item(owner, "bob, deleted later", mentions=[bob.id]),
    )
    assert await counts(bob) == (5, 3)
    assert await counts(cat) == (5, 2)
    assert await counts(owner) == (0, 0)  # their own messages, read by sending them
    # Tombstones count neither as unread nor as mentions.
    await flag_deleted(storage, deleted.id)
    assert await counts(bob) == (4, 2)
    # Reading moves both counts: what is read is no longer counted.
    assert await storage.mark_read(chat.id, bob.id, to_bob.id)
    assert await counts(bob) == (3, 1)
    assert await storage.mark_read(chat.id, bob.id, to_all.id)
    assert await counts(bob) == (2, 0)
    assert await storage.mark_read(chat.id, cat.id, to_cat.id)
    assert await counts(cat) == (1, 0)
    # A viewer's own message never counts, even one ahead of their read marker (storage does
    # not authorise: sent before they joined) that mentions them.
    dan = await make_user(storage, "dan")
    await insert_ok(storage, chat.id, item(dan, "me and all", mentions=[dan.id], channel=True))
    await storage.add_chat_members(chat.id, [dan.id], Role.MEMBER)
    assert await counts(dan) == (4, 1)  # owner's <!channel> message only
    # Not a member: nothing is counted (nor revealed).
    outsider = await make_user(storage, "outsider")
    view = await storage.get_chat_view(chat.id, outsider.id)
    assert view is not None
    assert (view.unread_count, view.mention_count) == (0, 0)
