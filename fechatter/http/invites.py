"""Invitation routes (SPEC §7): parse, call ``domain.invites``, serialise.

The token is part of two API paths and of the web landing page ``/invite/<token>``; the
error boundary logs the route rule (``/api/invites/<token>``), never the path, and the opt-in
access log (the only per-request line) redacts the token (``fechatter.access_log``), so no log line
records a token.
"""

from __future__ import annotations

import re

from quart import Blueprint, Quart, Response, request

from fechatter.domain.invites import Invites
from fechatter.errors import NotFound
from fechatter.http.apidoc import (
    InviteAcceptedOut,
    InviteCreatedOut,
    InviteOut,
    InvitePreviewOut,
    doc,
)
from fechatter.http.common import (
    Context,
    current_user_id,
    empty_response,
    json_response,
    read_json,
)
from fechatter.models import Role
from fechatter.schemas import InviteIn

# What ``secrets.token_urlsafe`` produces; anything else cannot be a token (404 at once).
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _token(token: str) -> str:
    if not TOKEN_RE.match(token):
        raise NotFound("invite not found, used up or expired", code="invite_not_found")
    return token


def register(app: Quart, ctx: Context) -> None:
    """Add the invitation routes to ``app``."""
    bp = Blueprint("invites", __name__)
    workspaces = ctx.workspaces
    invites = Invites(ctx.storage, workspaces, ctx.settings.public_url)

    @bp.post("/api/workspaces/<id:workspace_id>/invites")
    @doc(
        "invites",
        "Create an invitation link",
        body=InviteIn,
        ok={201: InviteCreatedOut},
        errors=(403, 404),
    )
    async def create_invite(workspace_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await workspaces.role(workspace_id, user_id)  # a non-member learns nothing from a 422
        body = await read_json(InviteIn)
        created = await invites.create(
            user_id,
            workspace_id,
            email=body.email,
            role=Role(body.role),
            max_uses=body.max_uses,
            expires_in=body.expires_in,
            origin=request.host_url,
        )
        return json_response(created.to_json(), 201)

    @bp.get("/api/workspaces/<id:workspace_id>/invites")
    @doc(
        "invites",
        "Invitations of a workspace (never their tokens)",
        ok={200: list[InviteOut]},
        errors=(403, 404),
    )
    async def list_invites(workspace_id: int) -> Response:
        found = await invites.list(await current_user_id(ctx), workspace_id)
        return json_response([i.to_json() for i in found])

    @bp.delete("/api/workspaces/<id:workspace_id>/invites/<id:invite_id>")
    @doc("invites", "Revoke an invitation", ok={204: None}, errors=(403, 404))
    async def revoke_invite(workspace_id: int, invite_id: int) -> Response:
        await invites.revoke(await current_user_id(ctx), workspace_id, invite_id)
        return empty_response()

    @bp.get("/api/invites/<token>")
    @doc(
        "invites",
        "What an invitation link shows",
        ok={200: InvitePreviewOut},
        errors=(404, 503),
        auth=False,
    )
    async def preview_invite(token: str) -> Response:
        view = await invites.preview(_token(token))
        return json_response(
            {
                "workspace": {"id": view.invite.workspace_id, "name": view.workspace_name},
                "inviter": {"fullname": view.inviter_name},
                "expires_at": view.invite.expires_at,
            }
        )

    @bp.post("/api/invites/<token>/accept")
    @doc("invites", "Accept an invitation", ok={200: InviteAcceptedOut}, errors=(404,))
    async def accept_invite(token: str) -> Response:
        user_id = await current_user_id(ctx)
        user = await ctx.storage.get_user(user_id)
        if user is None:
            raise NotFound("user not found", code="user_not_found")
        accepted = await invites.accept(_token(token), user)
        return json_response({"workspace": accepted.workspace.to_json(), "role": accepted.role})

    app.register_blueprint(bp)
