"""The storage contract for reactions and chat roles (SPEC §6), on every backend.

Reactions are read back through ``get_message`` (the contract: one message with its
reactions), which every read of messages shares with history pages.
"""

from __future__ import annotations

import pytest

from fechatter.errors import Invalid, NotFound
from fechatter.models import REACTION_USER_IDS, Reaction, Role
from fechatter.storage import Storage
from fechatter.storage.core import SqlStorage
from fechatter.storage.reactions import load_reactions
from fechatter.storage.sql import Op, Row

from .factories import make_group, make_user, send


async def reactions_of(storage: Storage, message_id: int) -> tuple[Reaction, ...]:
    message = await storage.get_message(message_id)
    assert message is not None
    return message.reactions


async def test_add_and_remove_are_idempotent(storage: Storage) -> None:
    _, (owner, bob, _cat), chat = await make_group(storage)
    (m,) = await send(storage, chat.id, owner, "hello")
    assert await storage.add_reaction(chat.id, m.id, bob.id, "👍", 50) is True
    assert await storage.add_reaction(chat.id, m.id, bob.id, "👍", 50) is False
    assert await reactions_of(storage, m.id) == (Reaction("👍", 1, (bob.id,)),)
    assert await storage.remove_reaction(chat.id, m.id, bob.id, "👍") is True
    assert await storage.remove_reaction(chat.id, m.id, bob.id, "👍") is False
    assert await storage.remove_reaction(chat.id, m.id, owner.id, "🎉") is False
    assert await reactions_of(storage, m.id) == ()


async def test_remove_takes_only_the_callers_reaction(storage: Storage) -> None:
    _, (owner, bob, cat), chat = await make_group(storage)
    (m,) = await send(storage, chat.id, owner, "hello")
    await storage.add_reaction(chat.id, m.id, bob.id, "👍", 50)
    await storage.add_reaction(chat.id, m.id, cat.id, "👍", 50)
    assert await storage.remove_reaction(chat.id, m.id, bob.id, "👍") is True
    assert await reactions_of(storage, m.id) == (Reaction("👍", 1, (cat.id,)),)


async def test_a_message_of_another_chat_or_none_is_not_found(storage: Storage) -> None:
    _, (owner, bob, _cat), chat = await make_group(storage)
    other = await storage.create_chat(
        chat.workspace_id, chat.type, None, None, owner.id, [owner.id, bob.id, _cat.id]
    )
    (theirs,) = await send(storage, other.id, owner, "elsewhere")
    for message_id in (theirs.id, 999_999):
        with pytest.raises(NotFound) as caught:
            await storage.add_reaction(chat.id, message_id, bob.id, "👍", 50)
        assert caught.value.code == "message_not_found"
        with pytest.raises(NotFound) as caught:
            await storage.remove_reaction(chat.id, message_id, bob.id, "👍")
        assert caught.value.code == "message_not_found"
    assert await reactions_of(storage, theirs.id) == ()


async def test_distinct_emoji_are_limited_per_message(storage: Storage) -> None:
    _, (owner, bob, cat), chat = await make_group(storage)
    first, second = await send(storage, chat.id, owner, "one", "two")
    for emoji in ("😀", "😁", "😂"):
        assert await storage.add_reaction(chat.id, first.id, bob.id, emoji, 3) is True
    with pytest.raises(Invalid) as caught:
        await storage.add_reaction(chat.id, first.id, cat.id, "🤣", 3)
    assert caught.value.code == "too_many_reactions"
    assert [e.field for e in caught.value.errors] == ["emoji"]
    # An emoji already on the message is not a new one: anyone may still add it.
    assert await storage.add_reaction(chat.id, first.id, cat.id, "😀", 3) is True
    # The limit is per message.
    assert await storage.add_reaction(chat.id, second.id, cat.id, "🤣", 3) is True
    # An emoji gone from the message frees its place.
    await storage.remove_reaction(chat.id, first.id, bob.id, "😂")
    assert await storage.add_reaction(chat.id, first.id, cat.id, "🤣", 3) is True
    assert [r.emoji for r in await reactions_of(storage, first.id)] == ["😀", "😁", "🤣"]


def _rows_of_first_statement(op: Op[object]) -> Op[list[Row]]:
    """Run only the first statement of ``op``; its rows (what crossed from the database)."""
    result = yield next(op)
    op.close()
    return result.rows


async def test_reactions_are_counted_by_the_database(storage: Storage) -> None:
    """Reading reactions transfers at most ``REACTION_USER_IDS`` rows per (message, emoji),
    however many reacted: the count is computed by the database."""
    assert isinstance(storage, SqlStorage)
    _, (owner, bob, _cat), chat = await make_group(storage)
    a, b = await send(storage, chat.id, owner, "popular", "quiet")
    voters = [await make_user(storage, f"voter{i}") for i in range(REACTION_USER_IDS + 3)]
    for user in voters:
        await storage.add_reaction(chat.id, a.id, user.id, "👍", 50)
    await storage.add_reaction(chat.id, a.id, bob.id, "🎉", 50)
    await storage.add_reaction(chat.id, b.id, bob.id, "👍", 50)
    rows = await storage._read_op(_rows_of_first_statement(load_reactions([a.id, b.id])))
    assert len(rows) == REACTION_USER_IDS + 1 + 1
    assert await reactions_of(storage, a.id) == (
        Reaction("👍", len(voters), tuple(u.id for u in voters[:REACTION_USER_IDS])),
        Reaction("🎉", 1, (bob.id,)),
    )
    assert await reactions_of(storage, b.id) == (Reaction("👍", 1, (bob.id,)),)


async def test_order_counts_and_the_first_user_ids(storage: Storage) -> None:
    _, (owner, bob, cat), chat = await make_group(storage)
    (m,) = await send(storage, chat.id, owner, "vote")
    extra = [await make_user(storage, f"voter{i}") for i in range(REACTION_USER_IDS + 2)]
    await storage.add_reaction(chat.id, m.id, cat.id, "🎉", 50)
    await storage.add_reaction(chat.id, m.id, bob.id, "👍", 50)
    await storage.add_reaction(chat.id, m.id, owner.id, "🎉", 50)
    for user in extra:
        await storage.add_reaction(chat.id, m.id, user.id, "👍", 50)
    # Emoji in order of first appearance; each emoji's users in the order they reacted.
    party, thumbs = await reactions_of(storage, m.id)
    assert party == Reaction("🎉", 2, (cat.id, owner.id))
    assert thumbs.emoji == "👍"
    assert thumbs.count == 1 + len(extra)
    assert thumbs.user_ids == (bob.id, *(u.id for u in extra))[:REACTION_USER_IDS]
    # The first emoji gone entirely and back: it is now the newest.
    await storage.remove_reaction(chat.id, m.id, cat.id, "🎉")
    await storage.remove_reaction(chat.id, m.id, owner.id, "🎉")
    await storage.add_reaction(chat.id, m.id, owner.id, "🎉", 50)
    assert [r.emoji for r in await reactions_of(storage, m.id)] == ["👍", "🎉"]


async def test_reactions_stay_on_their_message(storage: Storage) -> None:
    _, (owner, bob, _cat), chat = await make_group(storage)
    first, second = await send(storage, chat.id, owner, "one", "two")
    await storage.add_reaction(chat.id, second.id, bob.id, ":partyparrot:", 50)
    assert await reactions_of(storage, first.id) == ()
    assert await reactions_of(storage, second.id) == (Reaction(":partyparrot:", 1, (bob.id,)),)


async def test_set_chat_member_role(storage: Storage) -> None:
    _, (owner, bob, _cat), chat = await make_group(storage)
    member = await storage.set_chat_member_role(chat.id, bob.id, Role.ADMIN)
    assert (member.user_id, member.chat_id, member.role, member.fullname) == (
        bob.id,
        chat.id,
        Role.ADMIN,
        "User1",
    )
    state = await storage.load_chat_state(chat.id)
    assert state is not None
    assert state.members[bob.id] is Role.ADMIN
    assert await storage.chat_member_role(chat.id, bob.id) is Role.ADMIN
    # The same role again is no error; back to member.
    assert (await storage.set_chat_member_role(chat.id, bob.id, Role.ADMIN)).role is Role.ADMIN
    assert (await storage.set_chat_member_role(chat.id, bob.id, Role.MEMBER)).role is Role.MEMBER
    outsider = await make_user(storage, "outsider")
    with pytest.raises(NotFound) as caught:
        await storage.set_chat_member_role(chat.id, outsider.id, Role.ADMIN)
    assert caught.value.code == "member_not_found"
    with pytest.raises(NotFound):
        await storage.set_chat_member_role(999_999, bob.id, Role.ADMIN)
    assert owner.id in state.members
