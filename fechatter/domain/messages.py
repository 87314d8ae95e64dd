"""Messages: history pages, sends, edits, deletions, reactions, read markers, typing — for
every transport alike.

The HTTP routes and the WebSocket ops both call ``Messages.send``, so the content rules and
the per-user write rate apply once, in one place (``fechatter_messages_sent`` is read from
storage's count of committed messages, which every transport's sends pass through). The rate
limiter is THE per-user write limiter: sends, reactions (and edits, deletions) take from it. Writes
go through the chat's ChatActor, which answers outsiders itself (404, or 403 for a
PublicChannel).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fechatter.actors.commands import (
    DeleteMessage,
    EditMessage,
    MarkRead,
    React,
    SendMessage,
    SendResult,
    Typing,
)
from fechatter.actors.directory import ChatCaller
from fechatter.config import Settings
from fechatter.domain.chats import Chats
from fechatter.errors import Invalid, NotFound
from fechatter.models import Message, MessagePage, MessageWindow, NewMessage
from fechatter.ratelimit import RateLimiter
from fechatter.reaction_emoji import canonical_emoji
from fechatter.schemas import MessageEditIn, MessageIn
from fechatter.storage import Storage


def check_content(content: str, has_files: bool, settings: Settings) -> None:
    """The content rules of SPEC §3 for a send or an edit (``content`` already trimmed by the
    schema): at most ``max_content_chars`` characters, empty only beside files.
    Raises ``Invalid`` naming ``content``."""
    if len(content) > settings.max_content_chars:
        raise Invalid.field("content", f"must be at most {settings.max_content_chars} characters")
    if not content and not has_files:
        raise Invalid.field("content", "must not be empty")


def new_message(body: MessageIn, sender_id: int, settings: Settings) -> NewMessage:
    """Apply the content rules of SPEC §3 to a parsed send; ``Invalid`` naming the field."""
    content = body.content  # trimmed by the schema
    check_content(content, bool(body.files), settings)
    if len(body.files) > settings.max_files:
        raise Invalid.field("files", f"at most {settings.max_files} files")
    return NewMessage(
        sender_id,
        content,
        tuple(body.files),
        body.reply_to,
        body.client_id,
        thread_id=body.thread_id,
    )


class UploadCheck(Protocol):
    """Whether a sender may attach files (``fechatter.domain.files.Files``)."""

    async def check_message_files(self, user_id: int, urls: Sequence[str]) -> None:
        """``Invalid`` naming ``files`` unless each URL is an upload of ``user_id``'s."""


class Messages:
    """Message use cases over storage and the chat actors."""

    def __init__(
        self,
        storage: Storage,
        directory: ChatCaller,
        chats: Chats,
        settings: Settings,
        limiter: RateLimiter,
        *,
        uploads: UploadCheck | None = None,
    ) -> None:
        self._uploads = uploads  # None: files are checked for their shape only
        self._storage = storage
        self._directory = directory
        self._chats = chats
        self._settings = settings
        self._limiter = limiter

    async def page(
        self,
        user_id: int,
        chat_id: int,
        *,
        limit: int,
        before: int | None,
        after: int | None,
        thread_id: int | None = None,
        top_level: bool = False,
    ) -> MessagePage:
        """A page of history (see ``Storage.list_messages``) of a chat the caller may see.

        ``thread_id``: the replies of that thread, whose root must be a top-level message of
        this chat (a deleted root still has its thread), else ``Invalid`` naming
        ``thread_id``. ``NotFound`` (``chat_not_found``) for a chat the caller may not see.
        """
        await self._chats.visible(chat_id, user_id)
        if thread_id is not None and not await self._storage.is_thread_root(chat_id, thread_id):
            raise Invalid.field("thread_id", "must be a top-level message of this chat")
        return await self._storage.list_messages(
            chat_id,
            limit=limit,
            before=before,
            after=after,
            thread_id=thread_id,
            top_level=top_level,
        )

    async def around(
        self, user_id: int, chat_id: int, message_id: int, *, limit: int
    ) -> MessageWindow:
        """The page of ``limit`` messages centred on ``message_id`` (``Storage.messages_around``).
        ``NotFound``: ``chat_not_found`` (the caller may not see the chat), then
        ``message_not_found`` (not a message of this chat)."""
        await self._chats.visible(chat_id, user_id)
        return await self._storage.messages_around(chat_id, message_id, limit=limit)

    async def get(self, user_id: int, chat_id: int, message_id: int) -> Message:
        """One message of a chat the caller may see, tombstones included, with its reactions.
        ``NotFound``: ``chat_not_found``, then ``message_not_found``."""
        await self._chats.visible(chat_id, user_id)
        message = await self._storage.get_message(message_id)
        if message is None or message.chat_id != chat_id:
            raise NotFound("message not found", code="message_not_found")
        return message

    async def edit(
        self, user_id: int, chat_id: int, message_id: int, body: MessageEditIn
    ) -> Message:
        """Replace the content of the caller's own message; the message with ``edited_at`` set.

        Raises ``Invalid`` (the send's content rules; an edit has no files, so it must not be
        empty), ``RateLimited`` (the per-user write rate, after validation), and what the
        chat's actor answers: the outsider's 404/403, ``NotFound`` (``message_not_found``:
        absent, of another chat, or deleted), ``Forbidden`` (``not_message_sender``).
        """
        check_content(body.content, False, self._settings)
        self._limiter.acquire(user_id)
        return await self._directory.call(chat_id, EditMessage(user_id, message_id, body.content))

    async def delete(self, user_id: int, chat_id: int, message_id: int) -> None:
        """Make a message a tombstone: its sender, or the chat's owner or an admin.

        Raises ``RateLimited`` (the per-user write rate) and what the chat's actor answers:
        the outsider's 404/403, ``NotFound`` (``message_not_found``: absent, of another chat,
        or already deleted), ``Forbidden`` (``forbidden``).
        """
        self._limiter.acquire(user_id)
        await self._directory.call(chat_id, DeleteMessage(user_id, message_id))

    async def send(self, user_id: int, chat_id: int, body: MessageIn) -> SendResult:
        """Persist a message; ``created`` is False for a ``client_id`` retry (no new event).

        Raises ``Invalid`` (content rules; ``files`` not the sender's uploads),
        ``RateLimited`` (the per-user write rate; a request refused by validation uses no
        token), and whatever the chat's actor answers.
        """
        new = new_message(body, user_id, self._settings)
        self._limiter.acquire(user_id)
        if self._uploads is not None and new.files:
            # After the token: the check claims the uploads (a write), so the write rate
            # bounds it; a send it refuses gets its token back.
            try:
                await self._uploads.check_message_files(user_id, new.files)
            except Exception:
                self._limiter.refund(user_id)
                raise
        return await self._directory.call(chat_id, SendMessage(new))

    async def react(self, user_id: int, chat_id: int, message_id: int, emoji: str) -> None:
        """Add the caller's reaction ``emoji`` (a decoded path segment) to a message;
        idempotent (a repeat emits no event).

        Raises ``Invalid`` (field ``emoji``: not one emoji or ``:shortcode:``, or code
        ``too_many_reactions``), ``RateLimited`` (the per-user write rate shared with sends;
        a refused name uses no token), ``NotFound`` (``message_not_found``: absent, of another
        chat, a tombstone) and whatever the chat's actor answers outsiders.
        """
        stored = canonical_emoji(emoji)
        self._limiter.acquire(user_id)
        await self._directory.call(chat_id, React(user_id, message_id, stored, add=True))

    async def unreact(self, user_id: int, chat_id: int, message_id: int, emoji: str) -> None:
        """Remove the caller's own reaction ``emoji``; idempotent. Raises as ``react``
        (never ``too_many_reactions``)."""
        stored = canonical_emoji(emoji)
        self._limiter.acquire(user_id)
        await self._directory.call(chat_id, React(user_id, message_id, stored, add=False))

    async def mark_read(self, user_id: int, chat_id: int, message_id: int) -> None:
        """Move the caller's read marker forward."""
        await self._directory.call(chat_id, MarkRead(user_id, message_id))

    async def typing(self, user_id: int, chat_id: int) -> None:
        """Tell the other members the caller is typing."""
        await self._directory.call(chat_id, Typing(user_id))
