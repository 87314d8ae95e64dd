"""Request bodies, validated at the edge (SPEC §3 and §5 limits), for every transport.

Transport-neutral: the HTTP routes and the WebSocket ops validate with the same models and the
same ``validate`` (pydantic errors → a 422 naming each field), so both answer alike.

Types are strict (an id must be a JSON integer, a name a JSON string) so nothing is coerced by
surprise; unknown fields are ignored for forward compatibility. Every string is well-formed
Unicode without NUL (``fechatter.text``); names and message content are stored trimmed of white
space and invisible characters (so invisible-only text is empty), names in NFC and without
control characters, emails in their NFKC case-folded identity form.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from fechatter.errors import FieldError, Invalid
from fechatter.models import ChatType, Role
from fechatter.text import (
    check_well_formed,
    has_bidi_controls,
    has_control_characters,
    is_reserved_email,
    normalize_email,
    normalize_name,
    trim,
)

MAX_ID = 2**63 - 1
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
FILE_URL_RE = re.compile(r"^/files/[A-Za-z0-9._\-/]{1,200}$")


def _well_formed(value: str) -> str:
    return check_well_formed(value)  # TextError is a ValueError: pydantic reports the field


def _name(low: int, high: int) -> AfterValidator:
    """A name: trimmed, NFC, no control characters, ``low``..``high`` characters."""

    def check(value: str) -> str:
        value = normalize_name(trim(check_well_formed(value)))
        if has_control_characters(value) or has_bidi_controls(value):
            raise ValueError("must not contain control or bidirectional formatting characters")
        if not low <= len(value) <= high:
            raise ValueError(f"must be {low} to {high} characters")
        return value

    return AfterValidator(check)


def _email(value: str) -> str:
    value = normalize_email(check_well_formed(value))
    if len(value) > 254 or not EMAIL_RE.match(value):
        raise ValueError("must be an email address")
    return value


def _new_email(value: str) -> str:
    value = _email(value)
    if is_reserved_email(value):
        raise ValueError("must not be under the reserved .invalid domain (RFC 2606)")
    return value


def _content(value: str) -> str:
    value = trim(check_well_formed(value))
    if has_control_characters(value, allow="\t\n\r"):
        raise ValueError("must not contain control characters other than tab and new line")
    return value


def _description(value: str) -> str:
    value = _content(value)
    if len(value) > 1024:
        raise ValueError("must be 0 to 1024 characters")
    return value


def _password(value: str) -> str:
    check_well_formed(value)
    if not 8 <= len(value) <= 128:
        raise ValueError("must be 8 to 128 characters")
    return value


def _file_url(value: str) -> str:
    if not FILE_URL_RE.match(value) or any(
        part in ("", ".", "..") for part in value[len("/files/") :].split("/")
    ):
        raise ValueError("must be a URL returned by the file upload route")
    return value


M = TypeVar("M", bound=BaseModel)


class FieldValueError(ValueError):
    """Raised by a model validator (a rule across fields) to name the field the 422 is
    about: ``validate`` reports it under ``field``, not under ``body``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def validate(model: type[M], data: Any) -> M:
    """Validate already-decoded data, turning pydantic errors into a 422 with field errors."""
    if not isinstance(data, dict):
        raise Invalid(
            "request body must be a JSON object",
            code="validation_error",
            errors=[FieldError("body", "must be an object")],
        )
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = [
            FieldError(".".join(str(p) for p in err["loc"]) or _field_of(err), _message(err))
            for err in exc.errors(include_url=False, include_input=False)
        ]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise Invalid(detail, errors=errors) from None


def _field_of(err: Any) -> str:
    """The field a model-level error names (``FieldValueError``), else ``body``."""
    cause = err.get("ctx", {}).get("error")
    return cause.field if isinstance(cause, FieldValueError) else "body"


def _message(err: Any) -> str:
    msg = str(err.get("msg", "is invalid"))
    # pydantic prefixes custom errors with "Value error, "; clients want the message only.
    return msg.removeprefix("Value error, ")


Id = Annotated[int, Field(strict=True, gt=0, le=MAX_ID)]
Name = Annotated[str, Field(strict=True), _name(1, 128)]
FullName = Annotated[str, Field(strict=True), _name(1, 64)]
Description = Annotated[str, Field(strict=True), AfterValidator(_description)]
Email = Annotated[str, Field(strict=True), AfterValidator(_email)]
# An email an account is given (or an invite bound to): also not under ``.invalid``.
NewEmail = Annotated[str, Field(strict=True), AfterValidator(_new_email)]
Password = Annotated[str, Field(strict=True), AfterValidator(_password)]
FileUrl = Annotated[str, Field(strict=True), AfterValidator(_file_url)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# An invite token as it appears in links (``secrets.token_urlsafe``); only its shape is checked.
InviteToken = Annotated[
    str, Field(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
]


class SignupIn(Body):
    fullname: FullName
    email: NewEmail
    password: Password
    workspace: Name | None = None
    invite_token: InviteToken | None = None  # join that workspace (SPEC §7)

    @model_validator(mode="after")
    def _one_workspace(self) -> SignupIn:
        if self.workspace is not None and self.invite_token is not None:
            raise FieldValueError("invite_token", "cannot be combined with workspace")
        return self


class SigninIn(Body):
    email: Annotated[str, Field(strict=True, max_length=254), AfterValidator(_well_formed)]
    password: Annotated[str, Field(strict=True, max_length=128), AfterValidator(_well_formed)]

    @property
    def email_key(self) -> str:
        """The email in the form accounts are stored under."""
        return normalize_email(self.email)


class RefreshIn(Body):
    refresh_token: Annotated[
        str, Field(strict=True, min_length=1, max_length=256), AfterValidator(_well_formed)
    ]


class LogoutIn(RefreshIn):
    everywhere: Annotated[bool, Field(strict=True)] = False


class UserPatch(Body):
    fullname: FullName | None = None
    avatar: (
        Annotated[str, Field(strict=True, max_length=2048), AfterValidator(_well_formed)] | None
    ) = None
    password: Password | None = None
    current_password: (
        Annotated[str, Field(strict=True, max_length=128), AfterValidator(_well_formed)] | None
    ) = None

    @model_validator(mode="after")
    def _password_needs_current(self) -> UserPatch:
        if self.password is not None and self.current_password is None:
            raise FieldValueError("current_password", "is required to change the password")
        return self


class WorkspaceIn(Body):
    name: Name
    description: Description | None = None


class WorkspacePatch(Body):
    name: Name | None = None
    description: Description | None = None


class WorkspaceMemberIn(Body):
    """``POST /api/workspaces/:id/members``: adds a member as admin or member; "owner" is
    refused like any other word (one owner, set at creation), naming ``role``."""

    email: Email
    role: Literal["admin", "member"] = "member"


class ChatIn(Body):
    workspace_id: Id
    type: ChatType
    name: Name | None = None
    description: Description | None = None
    members: Annotated[list[Id], Field(max_length=1000)] = Field(default_factory=list)


class ChatPatch(Body):
    name: Name | None = None
    description: Description | None = None


class ChatMembersIn(Body):
    user_ids: Annotated[list[Id], Field(min_length=1, max_length=1000)]


class ChatRoleIn(Body):
    """``PUT /api/chats/:id/members/:user_id``: the owner sets a member's role (SPEC §6)."""

    # Ownership is not transferred by this route: "owner" is refused like any other word.
    role: Literal["admin", "member"]

    @property
    def chat_role(self) -> Role:
        """The role as the enum the domain takes."""
        return Role(self.role)


class MessageIn(Body):
    content: Annotated[str, Field(strict=True), AfterValidator(_content)] = ""
    files: Annotated[list[FileUrl], Field(max_length=10)] = Field(default_factory=list)
    reply_to: Id | None = None
    thread_id: Id | None = None  # reply in the thread of this root message (SPEC §6)
    client_id: (
        Annotated[
            str, Field(strict=True, min_length=1, max_length=64), AfterValidator(_well_formed)
        ]
        | None
    ) = None


class MessageEditIn(Body):
    """``PATCH …/messages/:mid``: the new content (the send rules; an edit has no files, so
    it must not be empty — checked by ``domain.messages``)."""

    content: Annotated[str, Field(strict=True), AfterValidator(_content)]


class ReadIn(Body):
    message_id: Id


MAX_INVITE_USES = 1000
MAX_INVITE_SECONDS = 30 * 24 * 3600  # 30 days
DEFAULT_INVITE_SECONDS = 7 * 24 * 3600


class InviteIn(Body):
    """``POST /api/workspaces/:id/invites`` (SPEC §7)."""

    email: NewEmail | None = None
    role: Literal["admin", "member"] = "member"
    max_uses: Annotated[int, Field(strict=True, ge=1, le=MAX_INVITE_USES)] = 1
    expires_in: Annotated[int, Field(strict=True, ge=1, le=MAX_INVITE_SECONDS)] = (
        DEFAULT_INVITE_SECONDS
    )


class MemberRoleIn(Body):
    """``PUT /api/workspaces/:id/members/:user_id`` (SPEC §7)."""

    role: Literal["admin", "member"]


def _status_text(value: str) -> str:
    value = normalize_name(trim(check_well_formed(value)))
    if has_control_characters(value) or has_bidi_controls(value):
        raise ValueError("must not contain control or bidirectional formatting characters")
    if len(value) > 100:
        raise ValueError("must be at most 100 characters")
    return value


class StatusIn(Body):
    """``PUT /api/users/me/status`` (SPEC §7): a chosen status, or null for automatic
    presence; ``text`` ≤ 100 characters (trimmed; empty → none); ``expires_in`` seconds,
    1 to 30 days (absent or null: until cleared)."""

    status: Literal["away", "busy"] | None
    text: Annotated[str, Field(strict=True), AfterValidator(_status_text)] | None = None
    expires_in: Annotated[int, Field(strict=True, ge=1, le=30 * 24 * 3600)] | None = None

    def check(self) -> None:
        """``Invalid`` naming ``status`` when text or an expiry comes without one."""
        if self.status is None and (self.text or self.expires_in is not None):
            raise Invalid.field("status", "must be away or busy when text or expires_in is set")


class MuteIn(Body):
    """``PUT /api/chats/:id/notifications`` (SPEC §7)."""

    muted: Annotated[bool, Field(strict=True)]
