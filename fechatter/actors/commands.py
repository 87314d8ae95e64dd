"""The commands a ChatActor takes, each generic in its reply: ``Command[R]``.

``Directory.call(chat_id, command: Command[R]) -> R`` is typed end to end: a caller gets the
reply type its command names, with no ``Any`` and no re-annotation. Commands and replies are
frozen dataclasses of plain data (ids, strings, other frozen records), and the errors a call
raises are ``FechatterError``s, so a future cluster can forward a command to the node that owns
the chat and carry the reply or error back. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from fechatter.models import Chat, Member, Message, NewMessage, Role

R = TypeVar("R", covariant=True)


class Command(Generic[R]):
    """Base of every chat command; ``R`` is the type of its reply."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SendResult:
    """The stored message, and whether this call created it (False: a ``client_id`` retry)."""

    message: Message
    created: bool


@dataclass(frozen=True, slots=True)
class SendMessage(Command[SendResult]):
    """Persist a message (group-committed with the sends queued beside it)."""

    message: NewMessage


@dataclass(frozen=True, slots=True)
class AddMembers(Command[tuple[Member, ...]]):
    """Add users (workspace members: the caller checks); the reply holds only the newly added."""

    by: int
    user_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReopenSingle(Command[None]):
    """Re-admit whichever of a Single chat's pair is no longer a member (they left the
    workspace and came back). ``user_ids`` is the pair (the caller found the chat by it)."""

    by: int
    user_ids: tuple[int, int]


@dataclass(frozen=True, slots=True)
class RemoveMember(Command[None]):
    """Remove a member (or leave, when ``by == user_id``); ``force`` skips the role check
    (workspace-level removal)."""

    by: int
    user_id: int
    force: bool = False


@dataclass(frozen=True, slots=True)
class Join(Command[Member]):
    """Join a PublicChannel (the caller is a workspace member: the caller checks)."""

    user_id: int


@dataclass(frozen=True, slots=True)
class MarkRead(Command[None]):
    """Move the user's read marker forward to ``message_id``."""

    user_id: int
    message_id: int


@dataclass(frozen=True, slots=True)
class Typing(Command[None]):
    """Tell the other members the user is typing."""

    user_id: int


@dataclass(frozen=True, slots=True)
class UpdateChat(Command[Chat]):
    """Rename / describe the chat; the reply is the chat as ``by`` sees it after the change."""

    by: int
    name: str | None
    description: str | None


@dataclass(frozen=True, slots=True)
class DeleteChat(Command[None]):
    """Delete the chat; ``already_deleted``: storage removed it (workspace deletion), retire."""

    by: int
    already_deleted: bool = False


@dataclass(frozen=True, slots=True)
class EditMessage(Command[Message]):
    """Replace the content of ``by``'s own message (content rules checked by the caller;
    mentions recomputed by the actor); the reply is the message with ``edited_at`` set."""

    by: int
    message_id: int
    content: str


@dataclass(frozen=True, slots=True)
class DeleteMessage(Command[None]):
    """Make a message a tombstone: its sender, or a chat owner/admin, may."""

    by: int
    message_id: int


@dataclass(frozen=True, slots=True)
class React(Command[None]):
    """Add (``add``) or remove ``user_id``'s reaction ``emoji`` (already canonical, see
    ``fechatter.reaction_emoji``); idempotent, an event only when something changed."""

    user_id: int
    message_id: int
    emoji: str
    add: bool


@dataclass(frozen=True, slots=True)
class SetMemberRole(Command[Member]):
    """The chat owner makes a member an admin or a plain member."""

    by: int
    user_id: int
    role: Role
