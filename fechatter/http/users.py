"""User status, profiles and per-chat mute routes (SPEC §7; docs/api.md "User status,
profiles and mute"): parse, call ``domain.status``, serialise."""

from __future__ import annotations

from quart import Blueprint, Quart, Response

from fechatter.domain.status import UserStatuses
from fechatter.http.apidoc import ChatOut, ChosenStatusOut, ProfileOut, doc
from fechatter.http.common import Context, current_user_id, json_response, read_json
from fechatter.schemas import MuteIn, StatusIn


def register(app: Quart, ctx: Context, statuses: UserStatuses) -> None:
    """Add ``PUT /api/users/me/status``, ``GET /api/users/:id`` and
    ``PUT /api/chats/:id/notifications`` to ``app``."""
    bp = Blueprint("users", __name__)

    @bp.put("/api/users/me/status")
    @doc(
        "users",
        "Choose away/busy (or null: automatic presence)",
        body=StatusIn,
        ok={200: ChosenStatusOut},
    )
    async def set_status() -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(StatusIn)
        body.check()
        chosen = await statuses.set_status(user_id, body.status, body.text or None, body.expires_in)
        return json_response(chosen)

    @bp.get("/api/users/<id:user_id>")
    @doc(
        "users",
        "A user sharing a workspace with the caller, with presence",
        ok={200: ProfileOut},
        errors=(404,),
    )
    async def get_user(user_id: int) -> Response:
        caller = await current_user_id(ctx)
        return json_response(await statuses.profile(caller, user_id))

    @bp.put("/api/chats/<id:chat_id>/notifications")
    @doc(
        "chats",
        "Mute or unmute a chat for the caller",
        body=MuteIn,
        ok={200: ChatOut},
        errors=(403, 404),
    )
    async def set_notifications(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await ctx.chats.visible(chat_id, user_id)  # 404 first, whatever the body
        body = await read_json(MuteIn)
        view = await statuses.set_muted(user_id, chat_id, body.muted)
        return json_response(view.to_json())

    app.register_blueprint(bp)
