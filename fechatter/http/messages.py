"""Message routes: parse, call ``domain.messages``, serialise (SPEC §3 "Messages")."""

from __future__ import annotations

from quart import Blueprint, Quart, Response

from fechatter.errors import BadRequest, FieldError
from fechatter.http.common import (
    Context,
    current_user_id,
    empty_response,
    json_response,
    query_int,
    read_json,
)
from fechatter.schemas import MAX_ID, MessageIn, ReadIn


def register(app: Quart, ctx: Context) -> None:
    """Add the message routes to ``app``."""
    bp = Blueprint("messages", __name__)
    messages = ctx.messages

    @bp.get("/api/chats/<id:chat_id>/messages")
    async def list_messages(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        limit = query_int("limit", low=1, high=200, default=50)
        before = query_int("before", low=1, high=MAX_ID)
        after = query_int("after", low=1, high=MAX_ID)
        if before is not None and after is not None:
            raise BadRequest(
                "use before or after, not both",
                code="invalid_query",
                errors=[FieldError("after", "cannot be combined with before")],
            )
        assert limit is not None
        page = await messages.page(user_id, chat_id, limit=limit, before=before, after=after)
        return json_response(
            {"items": [m.to_json() for m in page.items], "has_more": page.has_more}
        )

    @bp.post("/api/chats/<id:chat_id>/messages")
    async def send_message(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        # No visibility query here: the ChatActor answers outsiders with the same 404/403.
        body = await read_json(MessageIn)
        result = await messages.send(user_id, chat_id, body)
        return json_response(result.message.to_json(), 201 if result.created else 200)

    @bp.post("/api/chats/<id:chat_id>/read")
    async def mark_read(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(ReadIn)
        await messages.mark_read(user_id, chat_id, body.message_id)
        return empty_response()

    @bp.post("/api/chats/<id:chat_id>/typing")
    async def typing(chat_id: int) -> Response:
        await messages.typing(await current_user_id(ctx), chat_id)
        return empty_response()

    app.register_blueprint(bp)
