"""The storage contract for chats, chat members and messages (see ``test_contract.py``)."""

from __future__ import annotations

import pytest
import trio

from fechatter.errors import Conflict, Invalid, NotFound
from fechatter.models import ChatType, Role
from fechatter.storage import Storage

from .factories import make_group, make_user, make_workspace, msg, send


# -- chats ---------------------------------------------------------------------------------
async def test_create_chat_roles_and_state(storage: Storage) -> None:
    owner, workspace = await make_workspace(storage)
    bob = await make_user(storage, "bob")
    cat = await make_user(storage, "cat")
    chat = await storage.create_chat(
        workspace.id,
        ChatType.GROUP,
        "trio",
        "about trio",
        owner.id,
        [bob.id, owner.id, cat.id, bob.id],
    )
    assert (chat.workspace_id, chat.type, chat.name, chat.owner_id) == (
        workspace.id,
        ChatType.GROUP,
        "trio",
        owner.id,
    )
    assert await storage.get_chat(chat.id) == chat
    assert await storage.get_chat(999_999) is None
    members = await storage.list_chat_members(chat.id)
    assert {(m.user_id, m.role, m.fullname) for m in members} == {
        (owner.id, Role.OWNER, "Owner"),
        (bob.id, Role.MEMBER, "Bob"),
        (cat.id, Role.MEMBER, "Cat"),
    }
    assert members[0].user_id == owner.id
    state = await storage.load_chat_state(chat.id)
    assert state is not None
    assert state.chat == chat
    assert state.members == {owner.id: Role.OWNER, bob.id: Role.MEMBER, cat.id: Role.MEMBER}
    assert set(state.joined) == set(state.members)
    assert await storage.load_chat_state(999_999) is None


async def test_channel_names_unique_per_workspace(storage: Storage) -> None:
    owner, workspace = await make_workspace(storage, "one")
    other_owner, other = await make_workspace(storage, "two")
    await storage.create_chat(
        workspace.id, ChatType.PUBLIC_CHANNEL, "General", None, owner.id, [owner.id]
    )
    with pytest.raises(Conflict) as caught:
        await storage.create_chat(
            workspace.id, ChatType.PRIVATE_CHANNEL, "general", None, owner.id, [owner.id]
        )
    assert caught.value.code == "chat_name_taken"
    # Another workspace may use it, and groups are not channels.
    await storage.create_chat(
        other.id, ChatType.PUBLIC_CHANNEL, "general", None, other_owner.id, [other_owner.id]
    )
    await storage.create_chat(workspace.id, ChatType.GROUP, "general", None, owner.id, [owner.id])
    await storage.create_chat(workspace.id, ChatType.GROUP, "general", None, owner.id, [owner.id])


async def test_find_single_chat(storage: Storage) -> None:
    owner, workspace = await make_workspace(storage)
    bob = await make_user(storage, "bob")
    cat = await make_user(storage, "cat")
    assert await storage.find_single_chat(workspace.id, owner.id, bob.id) is None
    single = await storage.create_chat(
        workspace.id, ChatType.SINGLE, None, None, owner.id, [owner.id, bob.id]
    )
    await storage.create_chat(
        workspace.id, ChatType.GROUP, None, None, owner.id, [owner.id, bob.id, cat.id]
    )
    assert await storage.find_single_chat(workspace.id, owner.id, bob.id) == single.id
    assert await storage.find_single_chat(workspace.id, bob.id, owner.id) == single.id
    assert await storage.find_single_chat(workspace.id, owner.id, cat.id) is None


async def test_update_and_delete_chat(storage: Storage) -> None:
    owner, workspace = await make_workspace(storage)
    general = await storage.create_chat(
        workspace.id, ChatType.PUBLIC_CHANNEL, "general", None, owner.id, [owner.id]
    )
    await storage.create_chat(
        workspace.id, ChatType.PUBLIC_CHANNEL, "random", None, owner.id, [owner.id]
    )
    updated = await storage.update_chat(general.id, name="news", description="read me")
    assert (updated.name, updated.description, updated.type) == ("news", "read me", general.type)
    assert await storage.get_chat(general.id) == updated
    with pytest.raises(Conflict) as caught:
        await storage.update_chat(general.id, name="RANDOM")
    assert caught.value.code == "chat_name_taken"
    # The old name is free again.
    await storage.create_chat(
        workspace.id, ChatType.PUBLIC_CHANNEL, "general", None, owner.id, [owner.id]
    )
    with pytest.raises(NotFound):
        await storage.update_chat(999_999, name="x")
    [message] = await send(storage, general.id, owner, "x")
    await storage.delete_chat(general.id)
    assert await storage.get_chat(general.id) is None
    assert await storage.get_message(message.id) is None
    assert await storage.list_chat_members(general.id) == []


async def test_add_chat_members_returns_only_new(storage: Storage) -> None:
    _workspace, users, chat = await make_group(storage)
    dan = await make_user(storage, "dan")
    eve = await make_user(storage, "eve")
    added = await storage.add_chat_members(
        chat.id, [users[1].id, dan.id, eve.id, dan.id], Role.ADMIN
    )
    assert [(m.user_id, m.chat_id, m.role, m.fullname) for m in added] == [
        (dan.id, chat.id, Role.ADMIN, "Dan"),
        (eve.id, chat.id, Role.ADMIN, "Eve"),
    ]
    assert await storage.add_chat_members(chat.id, [dan.id], Role.MEMBER) == []
    members = await storage.list_chat_members(chat.id)
    assert [m.user_id for m in members] == [u.id for u in users] + [dan.id, eve.id]
    with pytest.raises(NotFound):
        await storage.add_chat_members(999_999, [dan.id], Role.MEMBER)


async def test_remove_chat_member_with_new_owner(storage: Storage) -> None:
    _, users, chat = await make_group(storage)
    owner, bob, cat = users
    await storage.remove_chat_member(chat.id, owner.id, bob.id)
    state = await storage.load_chat_state(chat.id)
    assert state is not None
    assert state.members == {bob.id: Role.OWNER, cat.id: Role.MEMBER}
    assert state.chat.owner_id == bob.id
    await storage.remove_chat_member(chat.id, cat.id, None)
    assert [m.user_id for m in await storage.list_chat_members(chat.id)] == [bob.id]


async def test_remove_chat_member_is_atomic(storage: Storage) -> None:
    _, users, chat = await make_group(storage)
    owner, _bob, _ = users
    outsider = await make_user(storage, "outsider")
    with pytest.raises(Invalid):
        await storage.remove_chat_member(chat.id, owner.id, outsider.id)
    state = await storage.load_chat_state(chat.id)
    assert state is not None
    assert state.members[owner.id] is Role.OWNER
    assert state.chat.owner_id == owner.id


async def test_set_chat_owner(storage: Storage) -> None:
    _, users, chat = await make_group(storage)
    owner, bob, cat = users
    await storage.set_chat_owner(chat.id, cat.id)
    state = await storage.load_chat_state(chat.id)
    assert state is not None
    assert state.chat.owner_id == cat.id
    assert state.members == {owner.id: Role.ADMIN, bob.id: Role.MEMBER, cat.id: Role.OWNER}


async def test_chat_view_counts_and_unread(storage: Storage) -> None:
    _workspace, users, chat = await make_group(storage)
    owner, bob, cat = users
    view = await storage.get_chat_view(chat.id, bob.id)
    assert view is not None
    assert (view.members_count, view.last_message, view.unread_count) == (3, None, 0)
    sent = await send(storage, chat.id, owner, "one", "two", "three")
    await send(storage, chat.id, bob, "mine")
    view = await storage.get_chat_view(chat.id, bob.id)
    assert view is not None
    assert view.last_message is not None
    assert view.last_message.content == "mine"
    # Bob's own message moved his marker past everything before it.
    assert view.unread_count == 0
    view = await storage.get_chat_view(chat.id, cat.id)
    assert view is not None
    assert view.unread_count == 4
    assert await storage.mark_read(chat.id, cat.id, sent[1].id) is True
    view = await storage.get_chat_view(chat.id, cat.id)
    assert view is not None
    assert view.unread_count == 2
    # The owner never counts their own messages: only bob's one is unread.
    view = await storage.get_chat_view(chat.id, owner.id)
    assert view is not None
    assert view.unread_count == 1
    outsider = await make_user(storage, "outsider")
    view = await storage.get_chat_view(chat.id, outsider.id)
    assert view is not None
    assert (view.unread_count, view.members_count) == (0, 3)
    # Storage does not authorise: a message sent before joining is the joiner's own, and
    # their own messages never count as unread, even ahead of their read marker.
    await send(storage, chat.id, outsider, "before joining")
    await storage.add_chat_members(chat.id, [outsider.id], Role.MEMBER)
    view = await storage.get_chat_view(chat.id, outsider.id)
    assert view is not None
    assert (view.unread_count, view.members_count) == (4, 4)
    assert await storage.get_chat_view(999_999, owner.id) is None


async def test_list_chats_orders_by_activity(storage: Storage) -> None:
    owner, workspace = await make_workspace(storage)
    bob = await make_user(storage, "bob")
    first = await storage.create_chat(
        workspace.id, ChatType.SINGLE, None, None, owner.id, [owner.id, bob.id]
    )
    second = await storage.create_chat(
        workspace.id, ChatType.PUBLIC_CHANNEL, "general", None, owner.id, [owner.id]
    )
    third = await storage.create_chat(
        workspace.id, ChatType.PRIVATE_CHANNEL, "ops", None, owner.id, [owner.id, bob.id]
    )
    chats = await storage.list_chats(owner.id, workspace.id)
    assert [c.id for c in chats] == [third.id, second.id, first.id]
    await send(storage, first.id, bob, "ping", "pong")
    chats = await storage.list_chats(owner.id, None)
    assert [c.id for c in chats] == [first.id, third.id, second.id]
    top = chats[0]
    assert top.last_message is not None
    assert (top.last_message.content, top.unread_count, top.members_count) == ("pong", 2, 2)
    assert (chats[1].last_message, chats[1].unread_count) == (None, 0)
    assert [c.id for c in await storage.list_chats(bob.id, workspace.id)] == [first.id, third.id]
    _, elsewhere = await make_workspace(storage, "elsewhere")
    assert await storage.list_chats(owner.id, elsewhere.id) == []


async def test_list_public_channels(storage: Storage) -> None:
    owner, workspace = await make_workspace(storage)
    bob = await make_user(storage, "bob")
    beta = await storage.create_chat(
        workspace.id, ChatType.PUBLIC_CHANNEL, "beta", None, owner.id, [owner.id]
    )
    alpha = await storage.create_chat(
        workspace.id, ChatType.PUBLIC_CHANNEL, "Alpha", None, owner.id, [owner.id]
    )
    await storage.create_chat(
        workspace.id, ChatType.PRIVATE_CHANNEL, "secret", None, owner.id, [owner.id]
    )
    await send(storage, beta.id, owner, "news")
    channels = await storage.list_public_channels(workspace.id, bob.id)
    assert [c.id for c in channels] == [alpha.id, beta.id]
    assert [c.members_count for c in channels] == [1, 1]
    assert channels[1].last_message is not None
    assert channels[1].last_message.content == "news"
    assert channels[1].unread_count == 0


# -- messages ------------------------------------------------------------------------------
async def test_seq_is_gapless_across_batches(storage: Storage) -> None:
    _, users, chat = await make_group(storage)
    owner, bob, _ = users
    seqs: list[int] = []
    for size in (1, 4, 2, 7):
        batch = [msg(owner if i % 2 else bob, f"m{i}") for i in range(size)]
        inserted = await storage.insert_messages(chat.id, batch)
        assert all(i.created and i.error is None for i in inserted)
        seqs += [i.message.seq for i in inserted if i.message is not None]
    assert seqs == list(range(1, 15))
    # Another chat numbers its own messages from 1.
    other = await storage.create_chat(
        chat.workspace_id, ChatType.GROUP, None, None, owner.id, [owner.id]
    )
    assert [m.seq for m in await send(storage, other.id, owner, "a", "b")] == [1, 2]


async def test_inserted_message_fields(storage: Storage) -> None:
    _, users, chat = await make_group(storage)
    owner = users[0]
    [first] = await send(storage, chat.id, owner, "hello")
    [result] = await storage.insert_messages(
        chat.id,
        [msg(owner, "with files", client_id="c-1", reply_to=first.id, files=["/f/1", "/f/2"])],
    )
    message = result.message
    assert message is not None
    assert result.created is True
    assert result.error is None
    assert (message.chat_id, message.sender_id, message.content) == (
        chat.id,
        owner.id,
        "with files",
    )
    assert (message.files, message.reply_to, message.client_id) == (
        ("/f/1", "/f/2"),
        first.id,
        "c-1",
    )
    assert message.edited_at is None
    assert message.created_at.endswith("Z")
    assert await storage.get_message(message.id) == message
    assert await storage.get_message(999_999) is None


async def test_client_id_is_idempotent_across_batches(storage: Storage) -> None:
    _, users, chat = await make_group(storage)
    owner, bob, _ = users
    [first] = await storage.insert_messages(chat.id, [msg(owner, "once", client_id="c-1")])
    assert first.created is True
    again = await storage.insert_messages(
        chat.id, [msg(owner, "twice", client_id="c-1"), msg(bob, "bob's", client_id="c-1")]
    )
    assert again[0].created is False
    assert again[0].message == first.message
    # The same client_id from another sender is another message.
    assert again[1].created is True
    assert again[1].message is not None
    assert again[1].message.seq == 2
    page = await storage.list_messages(chat.id, limit=10, before=None, after=None)
    assert [m.content for m in page.items] == ["bob's", "once"]


async def test_client_id_is_idempotent_within_a_batch(storage: Storage) -> None:
    _, users, chat = await make_group(storage)
    owner = users[0]
    before = storage.statistics().messages_inserted
    results = await storage.insert_messages(
        chat.id,
        [
            msg(owner, "a", client_id="x"),
            msg(owner, "b", client_id="x"),
            msg(owner, "c"),
            msg(owner, "d"),
        ],
    )
    assert [r.created for r in results] == [True, False, True, True]
    assert results[1].message == results[0].message
    assert [r.message.seq for r in results if r.message is not None] == [1, 1, 2, 3]
    assert storage.statistics().messages_inserted == before + 3


async def test_bad_reply_to_rejects_only_that_item(storage: Storage) -> None:
    workspace, users, chat = await make_group(storage)
    owner = users[0]
    other = await storage.create_chat(workspace.id, ChatType.GROUP, None, None, owner.id, [])
    [foreign] = await send(storage, other.id, owner, "elsewhere")
    [first] = await send(storage, chat.id, owner, "first")
    results = await storage.insert_messages(
        chat.id,
        [
            msg(owner, "ok"),
            msg(owner, "bad", reply_to=foreign.id),
            msg(owner, "missing", reply_to=999_999),
            msg(owner, "reply", reply_to=first.id),
        ],
    )
    assert [r.error for r in results] == [
        None,
        "must be a message of this chat",
        "must be a message of this chat",
        None,
    ]
    assert [(r.message is None, r.created) for r in results] == [
        (False, True),
        (True, False),
        (True, False),
        (False, True),
    ]
    assert [r.message.seq for r in results if r.message is not None] == [2, 3]


async def test_insert_into_unknown_chat(storage: Storage) -> None:
    user = await make_user(storage, "nobody")
    with pytest.raises(NotFound):
        await storage.insert_messages(999_999, [msg(user)])
    assert await storage.insert_messages(999_999, []) == []


async def test_batch_is_one_transaction(storage: Storage) -> None:
    _, users, chat = await make_group(storage)
    before = storage.statistics()
    results = await storage.insert_messages(chat.id, [msg(users[i % 3], f"{i}") for i in range(10)])
    assert len(results) == 10
    after = storage.statistics()
    assert after.transactions == before.transactions + 1
    assert after.message_batches == before.message_batches + 1
    assert after.messages_inserted == before.messages_inserted + 10


async def test_statistics_count_failed_writes_not(storage: Storage) -> None:
    await make_user(storage, "once")
    assert storage.statistics().transactions == 1
    with pytest.raises(Conflict):
        await make_user(storage, "once")
    assert storage.statistics().transactions == 1


async def test_pagination(storage: Storage) -> None:
    _, users, chat = await make_group(storage)
    sent = await send(storage, chat.id, users[0], *[f"m{i}" for i in range(1, 8)])
    ids = [m.id for m in sent]

    newest = await storage.list_messages(chat.id, limit=3, before=None, after=None)
    assert [m.id for m in newest.items] == ids[:-4:-1]
    assert newest.has_more is True

    older = await storage.list_messages(chat.id, limit=3, before=newest.items[-1].id, after=None)
    assert [m.id for m in older.items] == [ids[3], ids[2], ids[1]]
    assert older.has_more is True
    oldest = await storage.list_messages(chat.id, limit=3, before=older.items[-1].id, after=None)
    assert [m.id for m in oldest.items] == [ids[0]]
    assert oldest.has_more is False

    forward = await storage.list_messages(chat.id, limit=4, before=None, after=ids[0])
    assert [m.id for m in forward.items] == ids[1:5]
    assert forward.has_more is True
    rest = await storage.list_messages(chat.id, limit=4, before=None, after=ids[4])
    assert [m.id for m in rest.items] == ids[5:]
    assert rest.has_more is False

    everything = await storage.list_messages(chat.id, limit=7, before=None, after=None)
    assert (len(everything.items), everything.has_more) == (7, False)
    empty = await storage.list_messages(999_999, limit=5, before=None, after=None)
    assert (empty.items, empty.has_more) == ([], False)


async def test_mark_read_only_moves_forward(storage: Storage) -> None:
    workspace, users, chat = await make_group(storage)
    owner, bob, _ = users
    sent = await send(storage, chat.id, owner, "a", "b", "c")
    assert await storage.mark_read(chat.id, bob.id, sent[1].id) is True
    assert await storage.mark_read(chat.id, bob.id, sent[0].id) is False
    assert await storage.mark_read(chat.id, bob.id, sent[1].id) is False
    view = await storage.get_chat_view(chat.id, bob.id)
    assert view is not None
    assert view.unread_count == 1
    assert await storage.mark_read(chat.id, bob.id, sent[2].id) is True
    other = await storage.create_chat(workspace.id, ChatType.GROUP, None, None, owner.id, [])
    [foreign] = await send(storage, other.id, owner, "x")
    with pytest.raises(Invalid) as caught:
        await storage.mark_read(chat.id, bob.id, foreign.id)
    assert [e.field for e in caught.value.errors] == ["message_id"]
    with pytest.raises(Invalid):
        await storage.mark_read(chat.id, bob.id, 999_999)


async def test_concurrent_reads_and_writes(storage: Storage) -> None:
    _, users, chat = await make_group(storage)
    results: list[int] = []

    async def writer(i: int) -> None:
        await send(storage, chat.id, users[i % 3], f"w{i}")

    async def reader() -> None:
        page = await storage.list_messages(chat.id, limit=200, before=None, after=None)
        results.append(len(page.items))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(writer, i)
                nursery.start_soon(reader)
    page = await storage.list_messages(chat.id, limit=200, before=None, after=None)
    assert sorted(m.seq for m in page.items) == list(range(1, 21))
    assert len(results) == 20
    assert all(0 <= n <= 20 for n in results)
