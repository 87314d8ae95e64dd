"""Who may see a chat, and what a valid send is — shared by the HTTP API and the WebSocket ops.

Both transports must answer the same request the same way, so the rules live here once.
"""

from __future__ import annotations

from fechatter.config import Settings
from fechatter.errors import Invalid, NotFound
from fechatter.models import ChatRecord, ChatType, NewMessage, Role
from fechatter.schemas import MessageIn
from fechatter.storage import Storage


async def visible_chat(
    storage: Storage, chat_id: int, user_id: int
) -> tuple[ChatRecord, Role | None]:
    """The chat and the caller's role in it; 404 unless the caller may see it.

    Members see their chats; any workspace member sees a PublicChannel.
    """
    chat = await storage.get_chat(chat_id)
    if chat is not None:
        role = await storage.chat_member_role(chat_id, user_id)
        if role is not None:
            return chat, role
        if chat.type is ChatType.PUBLIC_CHANNEL and (
            await storage.workspace_role(chat.workspace_id, user_id) is not None
        ):
            return chat, None
    raise NotFound("chat not found", code="chat_not_found")


def new_message(body: MessageIn, sender_id: int, settings: Settings) -> NewMessage:
    """Apply the content rules of SPEC §3 to a parsed send; 422 naming the field."""
    content = body.content  # trimmed by the schema
    if len(content) > settings.max_content_chars:
        raise Invalid.field("content", f"must be at most {settings.max_content_chars} characters")
    if not content and not body.files:
        raise Invalid.field("content", "must not be empty")
    if len(body.files) > settings.max_files:
        raise Invalid.field("files", f"at most {settings.max_files} files")
    return NewMessage(sender_id, content, tuple(body.files), body.reply_to, body.client_id)
