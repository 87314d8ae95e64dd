"""Workspaces and their members (SPEC §3 "Workspaces").

Non-members get 404 for a workspace: they may not know it exists. Removing a member removes
them from the workspace's chats first (through each chat's actor), so no chat is ever left
with a member outside its workspace.
"""

from __future__ import annotations

import contextlib

from fechatter.actors.commands import DeleteChat, RemoveMember
from fechatter.actors.directory import ChatCaller, Directory
from fechatter.domain.workspace_events import LocalWorkspaceEvents, WorkspaceEventSink
from fechatter.errors import Conflict, Forbidden, Invalid, NotFound
from fechatter.models import Chat, Role, UserStatus, Workspace, WorkspaceMember
from fechatter.storage import Storage
from fechatter.storage import workspace_writes as writes


class Workspaces:
    """Workspace use cases over storage and the chat actors."""

    def __init__(
        self,
        storage: Storage,
        directory: Directory,
        commands: ChatCaller | None = None,
        *,
        events: WorkspaceEventSink | None = None,
    ) -> None:
        """``directory``: this process's chat actors (told when their chat is deleted);
        ``commands``: where chat commands go (a cluster's ``ChatRouter``; default
        ``directory``); ``events``: commits workspace writes and delivers their events
        (SPEC §7; default: this process's hub, ``directory.sink``); a cluster's writes them
        to the outbox (a deletion also each chat's ``chat.deleted``), so members on other
        nodes are told."""
        self.events: WorkspaceEventSink = events or LocalWorkspaceEvents(storage, directory.sink)
        self._storage = storage
        self._directory = directory
        self._commands: ChatCaller = directory if commands is None else commands

    async def role(self, workspace_id: int, user_id: int) -> Role:
        """The user's role in the workspace; ``NotFound`` if not a member (or no workspace)."""
        role = await self._storage.workspace_role(workspace_id, user_id)
        if role is None:
            raise NotFound("workspace not found", code="workspace_not_found")
        return role

    async def of_user(self, user_id: int) -> list[Workspace]:
        """The workspaces the user belongs to."""
        return await self._storage.list_workspaces(user_id)

    async def create(self, user_id: int, name: str, description: str | None) -> Workspace:
        """A new workspace owned by the caller; ``Conflict`` if the name is taken."""
        return await self._storage.create_workspace(name, description, user_id)

    async def get(self, user_id: int, workspace_id: int) -> Workspace:
        await self.role(workspace_id, user_id)
        ws = await self._storage.get_workspace(workspace_id)
        if ws is None:
            raise NotFound("workspace not found", code="workspace_not_found")
        return ws

    async def update(
        self, user_id: int, workspace_id: int, name: str | None, description: str | None
    ) -> Workspace:
        """Owner or admin; ``Forbidden`` otherwise."""
        if not (await self.role(workspace_id, user_id)).manages:
            raise Forbidden(
                "only the owner or an admin may change the workspace", code="not_workspace_admin"
            )
        return await self.events.write(
            workspace_id,
            writes.update(workspace_id, name, description, outbox=self.events.outbox),
        )

    async def delete(self, user_id: int, workspace_id: int) -> None:
        """Owner only; its chats and messages go with it."""
        if await self.role(workspace_id, user_id) is not Role.OWNER:
            raise Forbidden("only the owner may delete the workspace", code="not_workspace_owner")
        for chat_id in await self.events.delete(workspace_id):
            # Running actors hold the members in memory: tell them the chat is gone.
            if self._directory.is_running(chat_id):
                await self._directory.call(chat_id, DeleteChat(by=user_id, already_deleted=True))

    async def members(self, user_id: int, workspace_id: int) -> list[WorkspaceMember]:
        await self.role(workspace_id, user_id)
        return await self._storage.list_workspace_members(workspace_id)

    async def add_member(
        self, user_id: int, workspace_id: int, email: str, role: Role
    ) -> WorkspaceMember:
        """Owner or admin adds an existing, ``Active`` user by email (``Invalid`` on
        ``email`` if none — the same answer for a ``Pending`` or ``Suspended`` user, so it
        tells no more than before: an imported user's memberships come only from the
        import, docs/api.md "Activating imported users")."""
        caller_role = await self.role(workspace_id, user_id)
        if not caller_role.manages:
            raise Forbidden(
                "only the owner or an admin may add members", code="not_workspace_admin"
            )
        user = await self._storage.get_user_by_email(email)
        if user is None or user.status is not UserStatus.ACTIVE:
            raise Invalid.field("email", "must be the email of an existing, active user")
        if role is Role.ADMIN and caller_role is not Role.OWNER:
            raise Forbidden("only the owner may add an admin", code="not_workspace_owner")
        return await self.events.write(
            workspace_id, writes.add_member(workspace_id, user.id, role, outbox=self.events.outbox)
        )

    async def set_member_role(
        self, caller: int, workspace_id: int, user_id: int, role: Role
    ) -> WorkspaceMember:
        """Owner only: make a member an admin or a member again (``workspace.member_updated``
        when it changes). ``NotFound`` for a non-member, ``Conflict(owner_role)`` for the
        owner's own role; returns the member as it is now."""
        if await self.role(workspace_id, caller) is not Role.OWNER:
            raise Forbidden("only the owner may change roles", code="not_workspace_owner")
        await self.events.write(
            workspace_id,
            writes.set_member_role(workspace_id, user_id, role, outbox=self.events.outbox),
        )
        for member in await self._storage.list_workspace_members(workspace_id):
            if member.user.id == user_id:
                return member
        raise NotFound("member not found", code="member_not_found")

    async def remove_member(self, caller: int, workspace_id: int, user_id: int) -> None:
        """Owner/admin removes a member, or a member leaves; the owner cannot leave
        (``Conflict``), only the owner removes an admin."""
        role = await self.role(workspace_id, caller)
        if caller != user_id and not role.manages:
            raise Forbidden(
                "only the owner or an admin may remove members", code="not_workspace_admin"
            )
        target = await self._storage.workspace_role(workspace_id, user_id)
        if target is None:
            raise NotFound("member not found", code="member_not_found")
        if target is Role.OWNER:
            raise Conflict(
                "the workspace owner cannot leave it; delete the workspace instead",
                code="owner_cannot_leave",
            )
        if target is Role.ADMIN and role is not Role.OWNER and caller != user_id:
            raise Forbidden("only the owner may remove an admin", code="not_workspace_owner")
        # Chats first, so no chat is left with a member outside its workspace.
        for chat_id in await self._storage.list_user_chat_ids(user_id, workspace_id):
            # NotFound: the chat went away meanwhile, or the user had already left it.
            with contextlib.suppress(NotFound):
                await self._commands.call(
                    chat_id, RemoveMember(by=caller, user_id=user_id, force=True)
                )
        await self.events.write(
            workspace_id, writes.remove_member(workspace_id, user_id, outbox=self.events.outbox)
        )

    async def public_channels(self, user_id: int, workspace_id: int) -> list[Chat]:
        await self.role(workspace_id, user_id)
        return await self._storage.list_public_channels(workspace_id, user_id)
