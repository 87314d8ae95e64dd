"""Messages: history pages, sends (through the ChatActor), read markers, typing."""

from __future__ import annotations

from quart import Blueprint, Quart, Response

from fechatter import access
from fechatter.actors.commands import MarkRead, SendMessage, Typing
from fechatter.errors import BadRequest, FieldError
from fechatter.http.chats import visible_chat
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
    directory = ctx.system.directory

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
        await visible_chat(ctx, chat_id, user_id)
        assert limit is not None
        page = await ctx.storage.list_messages(chat_id, limit=limit, before=before, after=after)
        return json_response(
            {"items": [m.to_json() for m in page.items], "has_more": page.has_more}
        )

    @bp.post("/api/chats/<id:chat_id>/messages")
    async def send_message(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        # No visibility query here: the ChatActor answers outsiders with the same 404/403.
        body = await read_json(MessageIn)
        new = access.new_message(body, user_id, ctx.settings)
        ctx.send_limiter.acquire(user_id)
        # fechatter_messages_sent is read from storage's commit count (http/ops.py), which
        # counts the sends of every transport in one place.
        result = await directory.call(chat_id, SendMessage(new))
        return json_response(result.message.to_json(), 201 if result.created else 200)

    @bp.post("/api/chats/<id:chat_id>/read")
    async def mark_read(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(ReadIn)
        await directory.call(chat_id, MarkRead(user_id, body.message_id))
        return empty_response()

    @bp.post("/api/chats/<id:chat_id>/typing")
    async def typing(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await directory.call(chat_id, Typing(user_id))
        return empty_response()

    app.register_blueprint(bp)
