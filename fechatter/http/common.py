"""What every route module shares: the request context, JSON in/out, auth, id parsing.

Input is parsed and validated here, at the edge, into pydantic models; anything a client can
send that is wrong becomes a ``FechatterError`` (and so a problem document), never a 500.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
from quart import Response, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from fechatter import access_log, logs, wire
from fechatter.actors.system import ActorSystem
from fechatter.auth import AccessClaims, Authenticator, bearer_token
from fechatter.cluster.node import ClusterNode
from fechatter.config import Settings
from fechatter.domain.accounts import Accounts
from fechatter.domain.chats import Chats
from fechatter.domain.files import Files
from fechatter.domain.messages import Messages
from fechatter.domain.status import UserStatuses
from fechatter.domain.workspaces import Workspaces
from fechatter.errors import BadRequest, FieldError, PayloadTooLarge, Unauthorized
from fechatter.metrics import Metrics, RealtimeStats
from fechatter.schemas import validate
from fechatter.security import TokenGuard
from fechatter.storage import Storage
from fechatter.throttle import AuthThrottle

M = TypeVar("M", bound=pydantic.BaseModel)

# Ids are positive 63-bit integers; anything else in a path is simply not a route (404).
MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a route needs, passed down from ``create_app`` (no globals)."""

    settings: Settings
    storage: Storage
    system: ActorSystem
    auth: Authenticator
    metrics: Metrics
    realtime: RealtimeStats
    realtime_port: int
    guard: TokenGuard
    workspaces: Workspaces
    accounts: Accounts
    chats: Chats
    messages: Messages
    node_id: str  # this process among the nodes (config.Settings.node_id / default_node_id)
    cluster: ClusterNode | None = None  # cluster mode (nats_url): membership, live nodes
    throttle: AuthThrottle | None = None  # the credential routes' (built there when None)
    files: Files | None = None  # uploads, downloads, avatars (SPEC §8); None: no file routes
    statuses: UserStatuses | None = None  # user status, profiles, mute (issue 14 part B)


def decimal_at_most(limit: int) -> str:
    """A regular expression matching exactly the decimals 1..``limit`` without leading zeros.

    Shorter numbers, then for each digit of ``limit`` the numbers that share its prefix and are
    smaller at that digit, then ``limit`` itself. Used so a route converter never has to refuse
    a value after its pattern matched (werkzeug then answers 405 for a path other methods match).
    """
    digits = str(limit)
    n = len(digits)
    parts = [f"[1-9][0-9]{{0,{n - 2}}}"] if n > 1 else []
    for i, d in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(d) > low:
            parts.append(f"{digits[:i]}[{low}-{int(d) - 1}][0-9]{{{n - i - 1}}}")
    parts.append(digits)
    return "(?:" + "|".join(parts) + ")"


class IdConverter(BaseConverter):
    """``<id:name>``: a positive integer that fits in a signed 64-bit column (1..2^63-1); any
    other path segment matches no route, so it is a 404 whatever the method."""

    regex = decimal_at_most(MAX_ID)

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: Any) -> str:
        return str(value)


def json_response(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return Response(body, status=status, content_type="application/json")


def empty_response() -> Response:
    """204 No Content with neither Content-Type (there is no content to type) nor
    Content-Length (RFC 9110 §8.6: not sent with a 204); Quart adds both by default."""
    response = Response("", status=204)
    response.headers.pop("Content-Type", None)
    response.headers.pop("Content-Length", None)
    return response


async def read_json(model: type[M]) -> M:
    """Parse the request body as JSON into ``model``; 400 / 413 / 422 on bad input."""
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise BadRequest("Content-Type must be application/json", code="unsupported_content_type")
    try:
        raw = await request.get_data(as_text=False)
    except RequestEntityTooLarge:
        raise PayloadTooLarge("request body is too large", code="body_too_large") from None
    return validate(model, wire.loads(raw))


async def current_claims(ctx: Context) -> AccessClaims:
    """The caller's verified access token, still standing for an active user, else 401
    (``missing_token``, ``invalid_token``, ``token_expired``, ``token_revoked``,
    ``account_suspended``)."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise Unauthorized("missing bearer token", code="missing_token")
    claims = ctx.auth.verify_access_token(token)
    await ctx.guard.check(claims)
    logs.bind(user_id=claims.user_id)  # the request's task only: every later line names them
    access_log.note_user(claims.user_id)  # the access line too (when it is on)
    return claims


async def current_user_id(ctx: Context) -> int:
    """The caller's user id (see ``current_claims``)."""
    return (await current_claims(ctx)).user_id


def query_int(name: str, *, low: int, high: int, default: int | None = None) -> int | None:
    """An integer query parameter within [low, high]; 400 naming it otherwise."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not low <= int(raw) <= high:
        raise BadRequest(
            f"{name} must be an integer from {low} to {high}",
            code="invalid_query",
            errors=[FieldError(name, f"must be an integer from {low} to {high}")],
        )
    return int(raw)


def query_bool(name: str) -> bool:
    """A boolean query parameter: exactly ``true`` or ``false`` (case-sensitive); absent or
    empty is ``false``. Anything else (``1``, ``yes``, ``True``) raises ``BadRequest``, a 400
    ``invalid_query`` problem whose ``errors`` name the parameter."""
    raw = request.args.get(name)
    if raw is None or raw == "" or raw == "false":
        return False
    if raw == "true":
        return True
    raise BadRequest(
        f"{name} must be true or false",
        code="invalid_query",
        errors=[FieldError(name, "must be true or false")],
    )
