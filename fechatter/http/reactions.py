"""Reaction routes (SPEC §6): parse the path, call ``domain.messages``, answer 204.

``{emoji}`` arrives percent-decoded by the server (``%F0%9F%91%8D`` is 👍, ``%3A%2B1%3A`` is
``:+1:``); ``fechatter.reaction_emoji`` decides what it names. Both routes are idempotent and
answer 204 whether or not anything changed.
"""

from __future__ import annotations

from quart import Blueprint, Quart, Response

from fechatter.http.apidoc import doc
from fechatter.http.common import Context, current_user_id, empty_response

REACTION_PATH = "/api/chats/<id:chat_id>/messages/<id:message_id>/reactions/<emoji>"


def register(app: Quart, ctx: Context) -> None:
    """Add the reaction routes to ``app``."""
    bp = Blueprint("reactions", __name__)
    messages = ctx.messages

    @bp.put(REACTION_PATH)
    @doc(
        "messages", "React with an emoji (idempotent)", ok={204: None}, errors=(403, 404, 422, 429)
    )
    async def add_reaction(chat_id: int, message_id: int, emoji: str) -> Response:
        await messages.react(await current_user_id(ctx), chat_id, message_id, emoji)
        return empty_response()

    @bp.delete(REACTION_PATH)
    @doc(
        "messages",
        "Remove the caller's reaction (idempotent)",
        ok={204: None},
        errors=(403, 404, 422, 429),
    )
    async def remove_reaction(chat_id: int, message_id: int, emoji: str) -> Response:
        await messages.unreact(await current_user_id(ctx), chat_id, message_id, emoji)
        return empty_response()

    app.register_blueprint(bp)
