"""ChatActor role rules for chat admins (no HTTP route creates admins yet, so storage does)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
import trio

from fechatter.actors.commands import AddMembers, RemoveMember, UpdateChat
from fechatter.actors.directory import Directory
from fechatter.errors import Forbidden
from fechatter.events import Event
from fechatter.models import ChatType, Role
from fechatter.storage.sqlite import SqliteStorage, open_sqlite_storage


class Recorder:
    """An EventSink that remembers what was published to whom."""

    def __init__(self) -> None:
        self.events: list[tuple[tuple[int, ...], Event]] = []

    def publish(self, user_ids: Iterable[int], event: Event) -> None:
        self.events.append((tuple(user_ids), event))


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    async with open_sqlite_storage(str(tmp_path / "rules.db")) as s:
        yield s


async def test_admin_rules_and_owner_handover(
    storage: SqliteStorage, nursery: trio.Nursery
) -> None:
    ids = []
    for i in range(5):
        user, _ = await storage.create_user(f"u{i}", f"u{i}@example.com", "h", None)
        ids.append(user.id)
    owner, admin, member, newcomer, later_admin = ids
    ws = await storage.create_workspace("ws", None, owner)
    for uid in ids[1:]:
        await storage.add_workspace_member(ws.id, uid, Role.MEMBER)
    chat = await storage.create_chat(
        ws.id, ChatType.PRIVATE_CHANNEL, "ops", None, owner, [owner, member]
    )
    await storage.add_chat_members(chat.id, [admin], Role.ADMIN)
    await storage.add_chat_members(chat.id, [later_admin], Role.ADMIN)
    sink = Recorder()
    directory = Directory(storage, sink, nursery)

    with pytest.raises(Forbidden):
        await directory.call(chat.id, AddMembers(member, (newcomer,)))
    added = await directory.call(chat.id, AddMembers(admin, (newcomer,)))
    assert [m.user_id for m in added] == [newcomer]
    await directory.call(chat.id, UpdateChat(admin, "ops-2", None))
    with pytest.raises(Forbidden):
        await directory.call(chat.id, RemoveMember(admin, owner))
    await directory.call(chat.id, RemoveMember(admin, member))

    # The owner leaves: the OLDEST admin takes over, not the newer one.
    await directory.call(chat.id, RemoveMember(owner, owner))
    record = await storage.get_chat(chat.id)
    assert record is not None
    assert record.owner_id == admin
    roles = {m.user_id: m.role for m in await storage.list_chat_members(chat.id)}
    assert roles[admin] is Role.OWNER
    assert owner not in roles
    removed = [e for _, e in sink.events if e.name == "chat.member_removed"]
    assert [(e.data["user_id"], e.data["by"]) for e in removed] == [(member, admin), (owner, owner)]
    assert roles[later_admin] is Role.ADMIN
