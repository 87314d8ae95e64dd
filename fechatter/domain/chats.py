"""Chats of the four kinds and their members (SPEC §3 "Chats and members").

Reads go straight to storage; every write goes through the chat's ChatActor (the one writer
of a chat), except creation: the chat does not exist until storage has it. A chat the caller
may not see is a 404: members see their chats, any workspace member sees a PublicChannel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fechatter import events
from fechatter.actors.commands import (
    AddMembers,
    DeleteChat,
    Join,
    RemoveMember,
    ReopenSingle,
    SetMemberRole,
    UpdateChat,
)
from fechatter.actors.directory import ChatCaller
from fechatter.errors import Conflict, FieldError, Invalid, NotFound
from fechatter.events import EventSink
from fechatter.models import Chat, ChatRecord, ChatType, Member, Role
from fechatter.storage import Storage

# Cluster mode's creation: (workspace, kind, name, description, owner, member ids) → the
# owner's view, with chat.created in the outbox in the same transaction (ClusterEvents).
CreateChat = Callable[[int, ChatType, str | None, str | None, int, Sequence[int]], Awaitable[Chat]]


class Chats:
    """Chat use cases over storage, the chat actors and the event sink."""

    def __init__(
        self,
        storage: Storage,
        directory: ChatCaller,
        sink: EventSink,
        *,
        max_members: int,
        create_chat: CreateChat | None = None,
    ) -> None:
        """``create_chat`` (cluster mode): creates a chat with its ``chat.created`` in the
        outbox, so the event reaches its members on every node (instead of ``sink``, this
        node's hub)."""
        self._storage = storage
        self._directory = directory
        self._sink = sink
        self._max_members = max_members  # ids per request
        self._create_chat = create_chat

    async def visible(self, chat_id: int, user_id: int) -> tuple[ChatRecord, Role | None]:
        """The chat and the caller's role in it (None: a non-member of a PublicChannel);
        ``NotFound`` unless the caller may see it."""
        chat = await self._storage.get_chat(chat_id)
        if chat is not None:
            role = await self._storage.chat_member_role(chat_id, user_id)
            if role is not None:
                return chat, role
            if chat.type is ChatType.PUBLIC_CHANNEL and (
                await self._storage.workspace_role(chat.workspace_id, user_id) is not None
            ):
                return chat, None
        raise NotFound("chat not found", code="chat_not_found")

    async def view(self, chat_id: int, user_id: int) -> Chat:
        """The chat as ``user_id`` sees it (unread count, last message); no access check."""
        view = await self._storage.get_chat_view(chat_id, user_id)
        if view is None:
            raise NotFound("chat not found", code="chat_not_found")
        return view

    async def of_user(self, user_id: int, workspace_id: int | None) -> list[Chat]:
        """The user's chats, most recently active first (the caller checked the workspace)."""
        return await self._storage.list_chats(user_id, workspace_id)

    async def create(
        self,
        user_id: int,
        workspace_id: int,
        kind: ChatType,
        name: str | None,
        description: str | None,
        members: list[int],
    ) -> tuple[Chat, bool]:
        """A new chat with the caller as owner, or — for a Single chat of a pair that has one
        — that chat, reopened; the bool says whether it was created. The caller checked the
        workspace membership. Raises ``Invalid`` (shape, members outside the workspace) and
        ``Conflict`` (channel name taken)."""
        member_ids = list(dict.fromkeys([user_id, *members]))
        if len(member_ids) > self._max_members:
            raise Invalid.field("members", "too many members in one request")
        check_shape(kind, name, member_ids)
        await self.require_workspace_members(workspace_id, member_ids, "members")
        if kind is ChatType.SINGLE:
            existing = await self._storage.find_single_chat(workspace_id, *member_ids)
            if existing is not None:
                return await self._reopen_single(existing, member_ids), False
        try:
            if self._create_chat is not None:
                return await self._create_chat(
                    workspace_id, kind, name, description, user_id, member_ids
                ), True
            record = await self._storage.create_chat(
                workspace_id, kind, name, description, user_id, member_ids
            )
        except Conflict as exc:
            # Two people opened the same direct chat at once: the other request won.
            if exc.code != "single_exists":
                raise
            existing = await self._storage.find_single_chat(workspace_id, *member_ids)
            if existing is None:  # pragma: no cover - the conflict says it exists
                raise
            return await self._reopen_single(existing, member_ids), False
        view = await self.view(record.id, user_id)
        self._sink.publish(
            member_ids, events.Event(events.CHAT_CREATED, view.to_event_json(), chat_id=record.id)
        )
        return view, True

    async def _reopen_single(self, chat_id: int, pair: list[int]) -> Chat:
        """The pair's existing Single chat, with whoever of them had left it back in: one
        direct chat per pair for good, its history kept (docs/api.md)."""
        caller, other = pair
        await self._directory.call(chat_id, ReopenSingle(caller, (caller, other)))
        return await self.view(chat_id, caller)

    async def update(
        self, user_id: int, chat_id: int, name: str | None, description: str | None
    ) -> Chat:
        """Owner/admin renames or describes (the caller checked visibility)."""
        return await self._directory.call(chat_id, UpdateChat(user_id, name, description))

    async def delete(self, user_id: int, chat_id: int) -> None:
        """The owner deletes the chat."""
        await self.visible(chat_id, user_id)
        await self._directory.call(chat_id, DeleteChat(user_id))

    async def members(self, user_id: int, chat_id: int) -> list[Member]:
        await self.visible(chat_id, user_id)
        return await self._storage.list_chat_members(chat_id)

    async def add_members(
        self, user_id: int, chat: ChatRecord, user_ids: list[int]
    ) -> tuple[Member, ...]:
        """Add workspace members (the caller checked visibility); only the newly added."""
        ids = list(dict.fromkeys(user_ids))
        if len(ids) > self._max_members:
            raise Invalid.field("user_ids", "too many members in one request")
        await self.require_workspace_members(chat.workspace_id, ids, "user_ids")
        return await self._directory.call(chat.id, AddMembers(user_id, tuple(ids)))

    async def remove_member(self, user_id: int, chat_id: int, member_id: int) -> None:
        """Owner/admin removes a member, or a member leaves."""
        await self.visible(chat_id, user_id)
        await self._directory.call(chat_id, RemoveMember(user_id, member_id))

    async def set_role(self, user_id: int, chat_id: int, member_id: int, role: Role) -> Member:
        """The owner makes ``member_id`` an admin or a plain member; the member as it is now
        (the same role again: no change, no event); the caller checked visibility. Raises
        ``Forbidden`` (not the owner), ``Invalid`` (``role``; ``user_id``: the owner),
        ``NotFound`` (``member_not_found``)."""
        return await self._directory.call(chat_id, SetMemberRole(user_id, member_id, role))

    async def join(self, user_id: int, chat_id: int) -> Member:
        """A workspace member joins a PublicChannel (twice: the same membership)."""
        await self.visible(chat_id, user_id)
        return await self._directory.call(chat_id, Join(user_id))

    async def require_workspace_members(
        self, workspace_id: int, user_ids: list[int], field: str
    ) -> None:
        """``Invalid`` (``not_workspace_members``) naming the ids outside the workspace."""
        present = await self._storage.workspace_member_ids(workspace_id, user_ids)
        missing = [uid for uid in user_ids if uid not in present]
        if missing:
            ids = ", ".join(str(uid) for uid in missing)
            raise Invalid(
                f"users {ids} are not members of workspace {workspace_id}",
                code="not_workspace_members",
                errors=[FieldError(field, f"not members of the workspace: {ids}")],
            )


def check_shape(kind: ChatType, name: str | None, member_ids: list[int]) -> None:
    """The per-kind rules of SPEC §3 that need no storage; raises ``Invalid``."""
    if kind is ChatType.SINGLE:
        if name is not None:
            raise Invalid.field("name", "must not be set: a Single chat has no name")
        if len(member_ids) != 2:
            raise Invalid.field("members", "must be exactly two distinct users for a Single chat")
    elif kind is ChatType.GROUP:
        if len(member_ids) < 3:
            raise Invalid.field("members", "must be at least 3 users for a Group, creator included")
    elif name is None:
        raise Invalid.field("name", "is required for a channel")
