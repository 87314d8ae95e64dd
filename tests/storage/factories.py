"""Builders shared by the storage contract tests."""

from __future__ import annotations

from collections.abc import Sequence

from fechatter.models import ChatRecord, ChatType, Message, NewMessage, Role, User, Workspace
from fechatter.storage import Storage

LATER = "2999-01-01T00:00:00.000000Z"
EARLIER = "2000-01-01T00:00:00.000000Z"
NOW = "2026-01-01T00:00:00.000000Z"


async def make_user(storage: Storage, name: str, workspace: str | None = None) -> User:
    user, _ = await storage.create_user(name.title(), f"{name}@example.com", "hash", workspace)
    return user


async def make_workspace(storage: Storage, name: str = "acme") -> tuple[User, Workspace]:
    owner, workspace = await storage.create_user("Owner", f"owner@{name}.io", "hash", name)
    assert workspace is not None
    return owner, workspace


async def make_group(
    storage: Storage, members: int = 3
) -> tuple[Workspace, list[User], ChatRecord]:
    owner, workspace = await make_workspace(storage)
    users = [owner]
    for i in range(1, members):
        user = await make_user(storage, f"user{i}")
        await storage.add_workspace_member(workspace.id, user.id, Role.MEMBER)
        users.append(user)
    chat = await storage.create_chat(
        workspace.id, ChatType.GROUP, None, None, owner.id, [u.id for u in users]
    )
    return workspace, users, chat


def msg(
    sender: User,
    content: str = "hi",
    *,
    client_id: str | None = None,
    reply_to: int | None = None,
    files: Sequence[str] = (),
) -> NewMessage:
    return NewMessage(sender.id, content, tuple(files), reply_to, client_id)


async def send(storage: Storage, chat_id: int, sender: User, *contents: str) -> list[Message]:
    inserted = await storage.insert_messages(chat_id, [msg(sender, c) for c in contents])
    out = [i.message for i in inserted]
    assert all(m is not None for m in out)
    return [m for m in out if m is not None]
