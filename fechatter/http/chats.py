"""Chats of the four kinds, their members, join and leave (SPEC §3 "Chats and members").

Reads go straight to storage; every write goes through the chat's ChatActor, except creation
(the chat does not exist until storage has it). A chat the caller may not see is a 404.
"""

from __future__ import annotations

from quart import Blueprint, Quart, Response

from fechatter import access, events
from fechatter.actors.commands import (
    AddMembers,
    DeleteChat,
    Join,
    RemoveMember,
    ReopenSingle,
    UpdateChat,
)
from fechatter.errors import Conflict, FieldError, Invalid, NotFound
from fechatter.http.common import (
    Context,
    current_user_id,
    empty_response,
    json_response,
    query_int,
    read_json,
)
from fechatter.models import Chat, ChatRecord, ChatType, Role
from fechatter.schemas import MAX_ID, ChatIn, ChatMembersIn, ChatPatch


async def visible_chat(ctx: Context, chat_id: int, user_id: int) -> tuple[ChatRecord, Role | None]:
    """The chat and the caller's role in it; 404 unless the caller may see it."""
    return await access.visible_chat(ctx.storage, chat_id, user_id)


async def chat_view(ctx: Context, chat_id: int, user_id: int) -> Chat:
    view = await ctx.storage.get_chat_view(chat_id, user_id)
    if view is None:
        raise NotFound("chat not found", code="chat_not_found")
    return view


async def require_workspace_members(
    ctx: Context, workspace_id: int, user_ids: list[int], field: str
) -> None:
    """422 naming the ids that are not members of the workspace."""
    present = await ctx.storage.workspace_member_ids(workspace_id, user_ids)
    missing = [uid for uid in user_ids if uid not in present]
    if missing:
        ids = ", ".join(str(uid) for uid in missing)
        raise Invalid(
            f"users {ids} are not members of workspace {workspace_id}",
            code="not_workspace_members",
            errors=[FieldError(field, f"not members of the workspace: {ids}")],
        )


def register(app: Quart, ctx: Context) -> None:
    """Add the chat and chat-member routes to ``app``."""
    bp = Blueprint("chats", __name__)
    directory = ctx.system.directory

    @bp.get("/api/chats")
    async def list_chats() -> Response:
        user_id = await current_user_id(ctx)
        workspace_id = query_int("workspace_id", low=1, high=MAX_ID)
        if workspace_id is not None:
            await ctx.workspaces.role(workspace_id, user_id)
        chats = await ctx.storage.list_chats(user_id, workspace_id)
        return json_response([c.to_json() for c in chats])

    @bp.post("/api/chats")
    async def create_chat() -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(ChatIn)
        await ctx.workspaces.role(body.workspace_id, user_id)
        member_ids = list(dict.fromkeys([user_id, *body.members]))
        if len(member_ids) > ctx.settings.max_members_per_request:
            raise Invalid.field("members", "too many members in one request")
        _check_chat_shape(body.type, body.name, member_ids)
        await require_workspace_members(ctx, body.workspace_id, member_ids, "members")
        if body.type is ChatType.SINGLE:
            existing = await ctx.storage.find_single_chat(
                body.workspace_id, member_ids[0], member_ids[1]
            )
            if existing is not None:
                return await reopen_single(existing, member_ids)
        try:
            record = await ctx.storage.create_chat(
                body.workspace_id, body.type, body.name, body.description, user_id, member_ids
            )
        except Conflict as exc:
            # Two people opened the same direct chat at once: the other request won.
            if exc.code != "single_exists":
                raise
            existing = await ctx.storage.find_single_chat(
                body.workspace_id, member_ids[0], member_ids[1]
            )
            if existing is None:  # pragma: no cover - the conflict says it exists
                raise
            return await reopen_single(existing, member_ids)
        view = await chat_view(ctx, record.id, user_id)
        ctx.system.users.publish(
            member_ids, events.Event(events.CHAT_CREATED, view.to_json(), chat_id=record.id)
        )
        return json_response(view.to_json(), 201)

    async def reopen_single(chat_id: int, pair: list[int]) -> Response:
        """The pair's existing Single chat (200), with whoever of them had left it back in:
        one direct chat per pair for good, its history kept (docs/api.md)."""
        caller, other = pair
        await directory.call(chat_id, ReopenSingle(caller, (caller, other)))
        return json_response((await chat_view(ctx, chat_id, caller)).to_json(), 200)

    @bp.get("/api/chats/<id:chat_id>")
    async def get_chat(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await visible_chat(ctx, chat_id, user_id)
        return json_response((await chat_view(ctx, chat_id, user_id)).to_json())

    @bp.put("/api/chats/<id:chat_id>")
    async def update_chat(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await visible_chat(ctx, chat_id, user_id)
        body = await read_json(ChatPatch)
        view = await directory.call(chat_id, UpdateChat(user_id, body.name, body.description))
        return json_response(view.to_json())

    @bp.delete("/api/chats/<id:chat_id>")
    async def delete_chat(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await visible_chat(ctx, chat_id, user_id)
        await directory.call(chat_id, DeleteChat(user_id))
        return empty_response()

    @bp.get("/api/chats/<id:chat_id>/members")
    async def list_members(chat_id: int) -> Response:
        await visible_chat(ctx, chat_id, await current_user_id(ctx))
        members = await ctx.storage.list_chat_members(chat_id)
        return json_response([m.to_json() for m in members])

    @bp.post("/api/chats/<id:chat_id>/members")
    async def add_members(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        chat, _ = await visible_chat(ctx, chat_id, user_id)
        body = await read_json(ChatMembersIn)
        ids = list(dict.fromkeys(body.user_ids))
        if len(ids) > ctx.settings.max_members_per_request:
            raise Invalid.field("user_ids", "too many members in one request")
        await require_workspace_members(ctx, chat.workspace_id, ids, "user_ids")
        added = await directory.call(chat_id, AddMembers(user_id, tuple(ids)))
        return json_response([m.to_json() for m in added], 201)

    @bp.delete("/api/chats/<id:chat_id>/members/<id:member_id>")
    async def remove_member(chat_id: int, member_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await visible_chat(ctx, chat_id, user_id)
        await directory.call(chat_id, RemoveMember(user_id, member_id))
        return empty_response()

    @bp.post("/api/chats/<id:chat_id>/join")
    async def join(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await visible_chat(ctx, chat_id, user_id)
        member = await directory.call(chat_id, Join(user_id))
        return json_response(member.to_json())

    app.register_blueprint(bp)


def _check_chat_shape(kind: ChatType, name: str | None, member_ids: list[int]) -> None:
    """The per-type rules of SPEC §3 that need no storage."""
    if kind is ChatType.SINGLE:
        if name is not None:
            raise Invalid.field("name", "a Single chat has no name")
        if len(member_ids) != 2:
            raise Invalid.field("members", "a Single chat has exactly two distinct users")
    elif kind is ChatType.GROUP:
        if len(member_ids) < 3:
            raise Invalid.field("members", "a Group needs at least 3 members, creator included")
    elif name is None:
        raise Invalid.field("name", "a channel needs a name")
