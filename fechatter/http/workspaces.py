"""Workspaces and their members. Non-members get 404 for a workspace: they may not know it."""

from __future__ import annotations

import contextlib

from quart import Blueprint, Quart, Response, request

from fechatter.actors.commands import DeleteChat, RemoveMember
from fechatter.errors import BadRequest, Conflict, FieldError, Forbidden, Invalid, NotFound
from fechatter.http.common import (
    Context,
    current_user_id,
    empty_response,
    json_response,
    read_json,
)
from fechatter.models import ChatType, Role
from fechatter.schemas import WorkspaceIn, WorkspaceMemberIn, WorkspacePatch


async def workspace_role(ctx: Context, workspace_id: int, user_id: int) -> Role:
    """The caller's role in the workspace; 404 if not a member (or no such workspace)."""
    role = await ctx.storage.workspace_role(workspace_id, user_id)
    if role is None:
        raise NotFound("workspace not found", code="workspace_not_found")
    return role


def register(app: Quart, ctx: Context) -> None:
    """Add the workspace routes to ``app``."""
    bp = Blueprint("workspaces", __name__)

    @bp.get("/api/workspaces")
    async def list_workspaces() -> Response:
        user_id = await current_user_id(ctx)
        return json_response([w.to_json() for w in await ctx.storage.list_workspaces(user_id)])

    @bp.post("/api/workspaces")
    async def create_workspace() -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(WorkspaceIn)
        ws = await ctx.storage.create_workspace(body.name, body.description, user_id)
        return json_response(ws.to_json(), 201)

    @bp.get("/api/workspaces/<id:workspace_id>")
    async def get_workspace(workspace_id: int) -> Response:
        await workspace_role(ctx, workspace_id, await current_user_id(ctx))
        ws = await ctx.storage.get_workspace(workspace_id)
        if ws is None:
            raise NotFound("workspace not found", code="workspace_not_found")
        return json_response(ws.to_json())

    @bp.put("/api/workspaces/<id:workspace_id>")
    async def update_workspace(workspace_id: int) -> Response:
        role = await workspace_role(ctx, workspace_id, await current_user_id(ctx))
        body = await read_json(WorkspacePatch)
        if not role.manages:
            raise Forbidden(
                "only the owner or an admin may change the workspace", code="not_workspace_admin"
            )
        ws = await ctx.storage.update_workspace(
            workspace_id, name=body.name, description=body.description
        )
        return json_response(ws.to_json())

    @bp.delete("/api/workspaces/<id:workspace_id>")
    async def delete_workspace(workspace_id: int) -> Response:
        user_id = await current_user_id(ctx)
        role = await workspace_role(ctx, workspace_id, user_id)
        if role is not Role.OWNER:
            raise Forbidden("only the owner may delete the workspace", code="not_workspace_owner")
        chat_ids = await ctx.storage.delete_workspace(workspace_id)
        directory = ctx.system.directory
        for chat_id in chat_ids:
            # Running actors hold the members in memory: tell them the chat is gone.
            if directory.is_running(chat_id):
                await directory.call(chat_id, DeleteChat(by=user_id, already_deleted=True))
        return empty_response()

    @bp.get("/api/workspaces/<id:workspace_id>/members")
    async def list_members(workspace_id: int) -> Response:
        await workspace_role(ctx, workspace_id, await current_user_id(ctx))
        members = await ctx.storage.list_workspace_members(workspace_id)
        return json_response([m.to_json() for m in members])

    @bp.post("/api/workspaces/<id:workspace_id>/members")
    async def add_member(workspace_id: int) -> Response:
        role = await workspace_role(ctx, workspace_id, await current_user_id(ctx))
        body = await read_json(WorkspaceMemberIn)
        if not role.manages:
            raise Forbidden(
                "only the owner or an admin may add members", code="not_workspace_admin"
            )
        user = await ctx.storage.get_user_by_email(body.email)
        if user is None:
            raise Invalid.field("email", "no user has this email")
        member = await ctx.storage.add_workspace_member(workspace_id, user.id, body.role)
        return json_response(member.to_json(), 201)

    @bp.delete("/api/workspaces/<id:workspace_id>/members/<id:user_id>")
    async def remove_member(workspace_id: int, user_id: int) -> Response:
        caller = await current_user_id(ctx)
        role = await workspace_role(ctx, workspace_id, caller)
        if caller != user_id and not role.manages:
            raise Forbidden(
                "only the owner or an admin may remove members", code="not_workspace_admin"
            )
        target = await ctx.storage.workspace_role(workspace_id, user_id)
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
        for chat_id in await ctx.storage.list_user_chat_ids(user_id, workspace_id):
            # NotFound: the chat went away meanwhile, or the user had already left it.
            with contextlib.suppress(NotFound):
                await ctx.system.directory.call(
                    chat_id, RemoveMember(by=caller, user_id=user_id, force=True)
                )
        await ctx.storage.remove_workspace_member(workspace_id, user_id)
        return empty_response()

    @bp.get("/api/workspaces/<id:workspace_id>/chats")
    async def public_channels(workspace_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await workspace_role(ctx, workspace_id, user_id)
        kind = request.args.get("type", ChatType.PUBLIC_CHANNEL.value)
        if kind != ChatType.PUBLIC_CHANNEL.value:
            raise BadRequest(
                "type must be PublicChannel",
                code="invalid_query",
                errors=[FieldError("type", "must be PublicChannel")],
            )
        chats = await ctx.storage.list_public_channels(workspace_id, user_id)
        return json_response([c.to_json() for c in chats])

    app.register_blueprint(bp)
