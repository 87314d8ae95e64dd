"""Message routes: parse, call ``domain.messages``, serialise (SPEC §3 "Messages", §6)."""

from __future__ import annotations

from quart import Blueprint, Quart, Response

from fechatter.errors import BadRequest, FieldError
from fechatter.http.apidoc import MessageOut, MessagesOut, MessagesQuery, doc
from fechatter.http.common import (
    Context,
    current_user_id,
    empty_response,
    json_response,
    query_bool,
    query_int,
    read_json,
)
from fechatter.schemas import MAX_ID, MessageEditIn, MessageIn, ReadIn


def _conflict(name: str, other: str) -> BadRequest:
    return BadRequest(
        f"use {other} or {name}, not both",
        code="invalid_query",
        errors=[FieldError(name, f"cannot be combined with {other}")],
    )


def register(app: Quart, ctx: Context) -> None:
    """Add the message routes to ``app``."""
    bp = Blueprint("messages", __name__)
    messages = ctx.messages

    @bp.get("/api/chats/<id:chat_id>/messages")
    @doc(
        "messages",
        "History: a page, a thread, or the window around a message",
        query=MessagesQuery,
        ok={200: MessagesOut},
        errors=(400, 403, 404, 422),
    )
    async def list_messages(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        limit = query_int("limit", low=1, high=200, default=50)
        before = query_int("before", low=1, high=MAX_ID)
        after = query_int("after", low=1, high=MAX_ID)
        thread_id = query_int("thread_id", low=1, high=MAX_ID)
        around = query_int("around", low=1, high=MAX_ID)
        top_level = query_bool("top_level")
        assert limit is not None
        if around is not None:
            # A jump to one message: a window of the whole history, nothing else to combine.
            for name, given in [
                ("before", before is not None),
                ("after", after is not None),
                ("thread_id", thread_id is not None),
                ("top_level", top_level),
            ]:
                if given:
                    raise _conflict(name, "around")
            window = await messages.around(user_id, chat_id, around, limit=limit)
            return json_response(
                {
                    "items": [m.to_json() for m in window.items],
                    "has_more_before": window.has_more_before,
                    "has_more_after": window.has_more_after,
                }
            )
        if before is not None and after is not None:
            raise _conflict("after", "before")
        if thread_id is not None and top_level:
            raise _conflict("top_level", "thread_id")  # replies are never top-level
        page = await messages.page(
            user_id,
            chat_id,
            limit=limit,
            before=before,
            after=after,
            thread_id=thread_id,
            top_level=top_level,
        )
        return json_response(
            {"items": [m.to_json() for m in page.items], "has_more": page.has_more}
        )

    @bp.get("/api/chats/<id:chat_id>/messages/<id:message_id>")
    @doc("messages", "One message (tombstones included)", ok={200: MessageOut}, errors=(403, 404))
    async def get_message(chat_id: int, message_id: int) -> Response:
        user_id = await current_user_id(ctx)
        message = await messages.get(user_id, chat_id, message_id)
        return json_response(message.to_json())

    @bp.patch("/api/chats/<id:chat_id>/messages/<id:message_id>")
    @doc(
        "messages",
        "Edit a message (its sender)",
        body=MessageEditIn,
        ok={200: MessageOut},
        errors=(403, 404, 429),
    )
    async def edit_message(chat_id: int, message_id: int) -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(MessageEditIn)
        message = await messages.edit(user_id, chat_id, message_id, body)
        return json_response(message.to_json())

    @bp.delete("/api/chats/<id:chat_id>/messages/<id:message_id>")
    @doc("messages", "Delete a message (a tombstone stays)", ok={204: None}, errors=(403, 404, 429))
    async def delete_message(chat_id: int, message_id: int) -> Response:
        await messages.delete(await current_user_id(ctx), chat_id, message_id)
        return empty_response()

    @bp.post("/api/chats/<id:chat_id>/messages")
    @doc(
        "messages",
        "Send a message (a retried client_id: 200, the original)",
        body=MessageIn,
        ok={200: MessageOut, 201: MessageOut},
        errors=(403, 404, 429),
    )
    async def send_message(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        # No visibility query here: the ChatActor answers outsiders with the same 404/403.
        body = await read_json(MessageIn)
        result = await messages.send(user_id, chat_id, body)
        return json_response(result.message.to_json(), 201 if result.created else 200)

    @bp.post("/api/chats/<id:chat_id>/read")
    @doc(
        "messages",
        "Move the caller's read marker forward",
        body=ReadIn,
        ok={204: None},
        errors=(403, 404),
    )
    async def mark_read(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(ReadIn)
        await messages.mark_read(user_id, chat_id, body.message_id)
        return empty_response()

    @bp.post("/api/chats/<id:chat_id>/typing")
    @doc(
        "messages",
        "Tell the other members the caller is typing",
        ok={204: None},
        errors=(403, 404, 429),
    )
    async def typing(chat_id: int) -> Response:
        await messages.typing(await current_user_id(ctx), chat_id)
        return empty_response()

    app.register_blueprint(bp)
