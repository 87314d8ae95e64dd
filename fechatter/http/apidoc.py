"""What the OpenAPI description says about each route: response and query-string models and
the ``doc`` decorator the route modules put on their handlers (docs/api.md "OpenAPI").

Documentation only. Nothing here parses or validates a request: bodies still go through
``common.read_json`` (the hardened JSON edge, ``fechatter.wire``), query parameters through
``common.query_int`` and friends. The models below mirror the ``to_json`` shapes of
``fechatter.models`` and the domain records field for field (``tests/test_openapi.py`` holds
them to the live server's answers through schemathesis); they allow extra properties, so a
field added to an answer is a documentation gap, not a broken client. This module must never
be imported by a lower layer, and must never change what a route does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, RootModel
from quart_schema import document_querystring, document_request, document_response

from fechatter.schemas import MAX_ID

F = TypeVar("F", bound=Callable[..., Any])

# Attributes our OpenAPI provider (``http/openapi.py``) reads beside quart-schema's own.
DOC_ATTRIBUTE = "_fechatter_doc"

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Time = Annotated[str, Field(description="RFC 3339 UTC with a Z", examples=["2026-01-31T12:00:00Z"])]
RoleName = Literal["owner", "admin", "member"]
ChatTypeName = Literal["Single", "Group", "PrivateChannel", "PublicChannel"]


class Out(BaseModel):
    """Base of the response models (serialisation shape only; extra fields allowed)."""

    model_config = ConfigDict(extra="allow")


# --- Errors -------------------------------------------------------------------------------


class FieldErrorOut(Out):
    field: str
    message: str


class Problem(Out):
    """An RFC 9457 problem document (``application/problem+json``); ``code`` is stable."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None
    errors: list[FieldErrorOut] | None = None


# --- Resources ----------------------------------------------------------------------------


class UserOut(Out):
    """A user (SPEC §2)."""

    id: int
    fullname: str
    email: str
    avatar: str | None
    status: Literal["Active", "Suspended", "Pending"]
    created_at: Time


class SessionOut(Out):
    """A signed-in session: an access token (``expires_in`` seconds) and a refresh token."""

    token: str
    refresh_token: str
    expires_in: int
    user: UserOut


class WorkspaceOut(Out):
    """A workspace (SPEC §2)."""

    id: int
    name: str
    description: str | None
    owner_id: int
    created_at: Time
    updated_at: Time


class WorkspaceMemberOut(Out):
    """A member of a workspace."""

    user: UserOut
    role: RoleName
    joined_at: Time


class ReactionOut(Out):
    emoji: str
    count: int
    user_ids: list[int]


class MessageOut(Out):
    """A message (SPEC §2, §6); a deleted one is a tombstone with ``deleted: true``."""

    id: int
    chat_id: int
    seq: int
    sender_id: int
    content: str
    files: list[str]
    reply_to: int | None
    client_id: str | None
    created_at: Time
    edited_at: Time | None
    deleted: bool
    thread_id: int | None
    reply_count: int
    last_reply_at: Time | None
    reactions: list[ReactionOut]
    mentions: list[int]
    mentions_channel: bool


class ChatOut(Out):
    """A chat as the caller sees it (SPEC §2, §6, §7)."""

    id: int
    workspace_id: int
    name: str | None
    type: ChatTypeName
    description: str | None
    owner_id: int
    members_count: int
    last_message: MessageOut | None
    unread_count: int
    mention_count: int
    muted: bool
    created_at: Time
    updated_at: Time


class MemberOut(Out):
    """A member of a chat."""

    user_id: int
    chat_id: int
    role: RoleName
    joined_at: Time
    fullname: str


class MessagePageOut(Out):
    """A page of history (``before``/``after``/newest)."""

    items: list[MessageOut]
    has_more: bool


class MessageWindowOut(Out):
    """The page centred on ``around``, oldest first."""

    items: list[MessageOut]
    has_more_before: bool
    has_more_after: bool


class MessagesOut(RootModel[MessagePageOut | MessageWindowOut]):
    """A page of history, or (with ``around``) the window around a message."""


class InviteCreatedOut(Out):
    """A new invitation: its token is shown this once."""

    id: int
    token: str
    url: str
    expires_at: Time


class InviteOut(Out):
    """An invitation as listed (never its token)."""

    id: int
    email: str | None
    role: RoleName
    uses: int
    max_uses: int
    expires_at: Time
    created_by: int


class _WorkspaceRef(Out):
    id: int
    name: str


class _Inviter(Out):
    fullname: str


class InvitePreviewOut(Out):
    """What an invitation link shows before sign-in."""

    workspace: _WorkspaceRef
    inviter: _Inviter
    expires_at: Time


class InviteAcceptedOut(Out):
    """The workspace joined and the role held in it."""

    workspace: WorkspaceOut
    role: RoleName


class ChosenStatusOut(Out):
    """The caller's chosen status as stored (all null: automatic presence)."""

    status: Literal["away", "busy"] | None
    text: str | None
    expires_at: Time | None


class PresenceOut(Out):
    status: Literal["online", "offline", "away", "busy"]
    text: str | None
    expires_at: Time | None


class ProfileOut(UserOut):
    """A user plus their presence as others see it."""

    presence: PresenceOut


class OnlineUsersOut(Out):
    """Members with a live stream; ``statuses`` (absent when empty) for those showing
    away/busy."""

    user_ids: list[int]
    statuses: dict[str, PresenceOut] | None = None


class RealtimeHealthOut(Out):
    """Realtime counters of this node."""

    status: Literal["healthy"]
    service: str
    transport: list[str]
    connected_users: int
    connections: int
    active_chats: int
    slow_consumers: int
    node_id: str
    nodes: list[str]


class StatusOut(Out):
    """A liveness or readiness answer."""

    status: str


class ClientConfigOut(Out):
    """Where the browser client finds the realtime listener."""

    realtime_url: str
    realtime_ws_url: str


class SearchHitOut(Out):
    message: MessageOut
    chat_id: int
    highlights: list[Annotated[list[int], Field(min_length=2, max_length=2)]]


class SearchPageOut(Out):
    """Search hits, newest first unless ``sort=relevance``; ``next_cursor`` null at the end."""

    items: list[SearchHitOut]
    next_cursor: str | None


class SignedUrlsOut(Out):
    """``{url: signed_url}`` for each URL asked for."""

    urls: dict[str, str]


class FileOut(Out):
    """An uploaded file (``width``/``height``/``thumbnail_url`` null unless an image)."""

    url: str
    name: str
    size: int
    content_type: str
    width: int | None
    height: int | None
    thumbnail_url: str | None


# --- Query strings (all optional unless said; see ``common.query_int``) --------------------


class ChatsQuery(BaseModel):
    workspace_id: Id | None = None


class PublicChannelsQuery(BaseModel):
    type: Literal["PublicChannel"] | None = None


class MessagesQuery(BaseModel):
    limit: Annotated[int, Field(ge=1, le=200)] | None = None
    before: Id | None = Field(None, description="the page just older than this message id")
    after: Id | None = Field(None, description="the page just newer than this message id")
    thread_id: Id | None = Field(None, description="the replies of this thread root")
    around: Id | None = Field(None, description="the page centred on this message id")
    top_level: bool | None = Field(None, description="history without thread replies")


class OnlineUsersQuery(BaseModel):
    chat_id: Id | None = Field(None, description="exactly one of chat_id and workspace_id")
    workspace_id: Id | None = None


class SearchQueryString(BaseModel):
    q: str = Field(min_length=1, max_length=256, description='words ANDed; "quoted phrases"')
    workspace_id: Id | None = None
    chat_id: Id | None = None
    from_: Id | None = Field(None, alias="from", description="sender's user id")
    before: Time | None = None
    after: Time | None = None
    limit: Annotated[int, Field(ge=1, le=100)] | None = None
    cursor: str | None = Field(None, description="a next_cursor of the same search")
    sort: Literal["newest", "relevance"] | None = None


# --- The decorator ------------------------------------------------------------------------

# Statuses every authenticated route may answer (a bad token; storage unavailable).
AUTH_ERRORS = (401, 503)
# Statuses every route that reads a JSON body may answer (SPEC §1).
BODY_ERRORS = (400, 413, 422)


def doc(
    tag: str,
    summary: str,
    *,
    ok: dict[int, Any],
    errors: Iterable[int] = (),
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    auth: bool = True,
) -> Callable[[F], F]:
    """Document a route handler without changing it.

    ``ok`` maps each success status to its response model (``None``: no body, as for 204;
    a string: a text body of that media type);
    ``errors`` lists the problem statuses the route answers besides the defaults (401/503 when
    ``auth``, 400/413/422 when it reads ``body``); ``query`` is a model of its query string.
    Returns the handler itself, with attributes for ``http/openapi.py`` to read.
    """

    def decorate(func: F) -> F:
        if body is not None:
            func = document_request(body)(func)
        if query is not None:
            func = document_querystring(query)(func)
        for status, model in ok.items():
            if model is not None and not isinstance(model, str):
                func = document_response(model, status)(func)
        statuses = set(errors)
        if auth:
            statuses.update(AUTH_ERRORS)
        if body is not None:
            statuses.update(BODY_ERRORS)
        setattr(
            func,
            DOC_ATTRIBUTE,
            {
                "tag": tag,
                "summary": summary,
                "auth": auth,
                "empty": sorted(s for s, m in ok.items() if m is None),
                "text": {s: m for s, m in ok.items() if isinstance(m, str)},
                "errors": sorted(statuses),
            },
        )
        return func

    return decorate
