"""Workspace routes: parse, call ``domain.workspaces``, serialise (SPEC §3 "Workspaces")."""

from __future__ import annotations

from quart import Blueprint, Quart, Response, request

from fechatter.errors import BadRequest, FieldError
from fechatter.http.apidoc import (
    ChatOut,
    PublicChannelsQuery,
    WorkspaceMemberOut,
    WorkspaceOut,
    doc,
)
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
    @doc("workspaces", "Workspaces the caller belongs to", ok={200: list[WorkspaceOut]})
    async def list_workspaces() -> Response:
        found = await workspaces.of_user(await current_user_id(ctx))
        return json_response([w.to_json() for w in found])

    @bp.post("/api/workspaces")
    @doc(
        "workspaces",
        "Create a workspace (the caller owns it)",
        body=WorkspaceIn,
        ok={201: WorkspaceOut},
        errors=(409,),
    )
    async def create_workspace() -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(WorkspaceIn)
        ws = await workspaces.create(user_id, body.name, body.description)
        return json_response(ws.to_json(), 201)

    @bp.get("/api/workspaces/<id:workspace_id>")
    @doc("workspaces", "A workspace", ok={200: WorkspaceOut}, errors=(404,))
    async def get_workspace(workspace_id: int) -> Response:
        ws = await workspaces.get(await current_user_id(ctx), workspace_id)
        return json_response(ws.to_json())

    @bp.put("/api/workspaces/<id:workspace_id>")
    @doc(
        "workspaces",
        "Rename or describe a workspace",
        body=WorkspacePatch,
        ok={200: WorkspaceOut},
        errors=(403, 404, 409),
    )
    async def update_workspace(workspace_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await workspaces.role(workspace_id, user_id)  # a non-member learns nothing from a 422
        body = await read_json(WorkspacePatch)
        ws = await workspaces.update(user_id, workspace_id, body.name, body.description)
        return json_response(ws.to_json())

    @bp.delete("/api/workspaces/<id:workspace_id>")
    @doc("workspaces", "Delete a workspace with its chats", ok={204: None}, errors=(403, 404))
    async def delete_workspace(workspace_id: int) -> Response:
        await workspaces.delete(await current_user_id(ctx), workspace_id)
        return empty_response()

    @bp.get("/api/workspaces/<id:workspace_id>/members")
    @doc("workspaces", "Members of a workspace", ok={200: list[WorkspaceMemberOut]}, errors=(404,))
    async def list_members(workspace_id: int) -> Response:
        members = await workspaces.members(await current_user_id(ctx), workspace_id)
        return json_response([m.to_json() for m in members])

    @bp.post("/api/workspaces/<id:workspace_id>/members")
    @doc(
        "workspaces",
        "Add an existing, active user by email",
        body=WorkspaceMemberIn,
        ok={201: WorkspaceMemberOut},
        errors=(403, 404, 409),
    )
    async def add_member(workspace_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await workspaces.role(workspace_id, user_id)  # a non-member learns nothing from a 422
        body = await read_json(WorkspaceMemberIn)
        member = await workspaces.add_member(user_id, workspace_id, body.email, Role(body.role))
        return json_response(member.to_json(), 201)

    @bp.put("/api/workspaces/<id:workspace_id>/members/<id:user_id>")
    @doc(
        "workspaces",
        "Set a member's role (owner only)",
        body=MemberRoleIn,
        ok={200: WorkspaceMemberOut},
        errors=(403, 404, 409),
    )
    async def set_member_role(workspace_id: int, user_id: int) -> Response:
        caller = await current_user_id(ctx)
        await workspaces.role(workspace_id, caller)  # a non-member learns nothing from a 422
        body = await read_json(MemberRoleIn)
        member = await workspaces.set_member_role(caller, workspace_id, user_id, Role(body.role))
        return json_response(member.to_json())

    @bp.delete("/api/workspaces/<id:workspace_id>/members/<id:user_id>")
    @doc("workspaces", "Remove a member, or leave", ok={204: None}, errors=(403, 404, 409))
    async def remove_member(workspace_id: int, user_id: int) -> Response:
        await workspaces.remove_member(await current_user_id(ctx), workspace_id, user_id)
        return empty_response()

    @bp.get("/api/workspaces/<id:workspace_id>/chats")
    @doc(
        "workspaces",
        "Public channels to discover and join",
        query=PublicChannelsQuery,
        ok={200: list[ChatOut]},
        errors=(400, 404),
    )
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
