"""Workspace routes: parse, call ``domain.workspaces``, serialise (SPEC §3 "Workspaces")."""

from __future__ import annotations

from quart import Blueprint, Quart, Response, request

from fechatter.errors import BadRequest, FieldError
from fechatter.http.common import (
    Context,
    current_user_id,
    empty_response,
    json_response,
    read_json,
)
from fechatter.models import ChatType, Role
from fechatter.schemas import MemberRoleIn, WorkspaceIn, WorkspaceMemberIn, WorkspacePatch


def register(app: Quart, ctx: Context) -> None:
    """Add the workspace routes to ``app``."""
    bp = Blueprint("workspaces", __name__)
    workspaces = ctx.workspaces

    @bp.get("/api/workspaces")
    async def list_workspaces() -> Response:
        found = await workspaces.of_user(await current_user_id(ctx))
        return json_response([w.to_json() for w in found])

    @bp.post("/api/workspaces")
    async def create_workspace() -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(WorkspaceIn)
        ws = await workspaces.create(user_id, body.name, body.description)
        return json_response(ws.to_json(), 201)

    @bp.get("/api/workspaces/<id:workspace_id>")
    async def get_workspace(workspace_id: int) -> Response:
        ws = await workspaces.get(await current_user_id(ctx), workspace_id)
        return json_response(ws.to_json())

    @bp.put("/api/workspaces/<id:workspace_id>")
    async def update_workspace(workspace_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await workspaces.role(workspace_id, user_id)  # a non-member learns nothing from a 422
        body = await read_json(WorkspacePatch)
        ws = await workspaces.update(user_id, workspace_id, body.name, body.description)
        return json_response(ws.to_json())

    @bp.delete("/api/workspaces/<id:workspace_id>")
    async def delete_workspace(workspace_id: int) -> Response:
        await workspaces.delete(await current_user_id(ctx), workspace_id)
        return empty_response()

    @bp.get("/api/workspaces/<id:workspace_id>/members")
    async def list_members(workspace_id: int) -> Response:
        members = await workspaces.members(await current_user_id(ctx), workspace_id)
        return json_response([m.to_json() for m in members])

    @bp.post("/api/workspaces/<id:workspace_id>/members")
    async def add_member(workspace_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await workspaces.role(workspace_id, user_id)  # a non-member learns nothing from a 422
        body = await read_json(WorkspaceMemberIn)
        member = await workspaces.add_member(user_id, workspace_id, body.email, body.role)
        return json_response(member.to_json(), 201)

    @bp.put("/api/workspaces/<id:workspace_id>/members/<id:user_id>")
    async def set_member_role(workspace_id: int, user_id: int) -> Response:
        caller = await current_user_id(ctx)
        await workspaces.role(workspace_id, caller)  # a non-member learns nothing from a 422
        body = await read_json(MemberRoleIn)
        member = await workspaces.set_member_role(caller, workspace_id, user_id, Role(body.role))
        return json_response(member.to_json())

    @bp.delete("/api/workspaces/<id:workspace_id>/members/<id:user_id>")
    async def remove_member(workspace_id: int, user_id: int) -> Response:
        await workspaces.remove_member(await current_user_id(ctx), workspace_id, user_id)
        return empty_response()

    @bp.get("/api/workspaces/<id:workspace_id>/chats")
    async def public_channels(workspace_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await workspaces.role(workspace_id, user_id)
        kind = request.args.get("type", ChatType.PUBLIC_CHANNEL.value)
        if kind != ChatType.PUBLIC_CHANNEL.value:
            raise BadRequest(
                "type must be PublicChannel",
                code="invalid_query",
                errors=[FieldError("type", "must be PublicChannel")],
            )
        chats = await workspaces.public_channels(user_id, workspace_id)
        return json_response([c.to_json() for c in chats])

    app.register_blueprint(bp)
