"""Password-reset link routes (issue 17): check a link, set a password through it.

``fechatter admin reset-password EMAIL`` prints ``<public_url>/reset-password/<token>`` (the
web client's form, ``web/reset.js``), which calls these. The token is in the path, so, as for
invites, the error boundary logs the route rule and the opt-in access log (the only per-request
line) shows ``/api/password-resets/[redacted]`` (``fechatter.access_log``). No bearer token:
the link is the credential.
"""

from __future__ import annotations

import re

from quart import Blueprint, Quart, Response

from fechatter.domain.password_resets import PasswordResets
from fechatter.errors import NotFound
from fechatter.http.apidoc import doc
from fechatter.http.common import Context, empty_response, read_json
from fechatter.schemas import Body, Password

# What ``secrets.token_urlsafe`` produces; anything else cannot be a token (404 at once).
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class PasswordResetIn(Body):
    password: Password


def _token(token: str) -> str:
    if not TOKEN_RE.match(token):
        raise NotFound("reset link not found, used or expired", code="reset_link_not_found")
    return token


def register(app: Quart, ctx: Context) -> None:
    """Add ``GET`` / ``POST /api/password-resets/<token>`` to ``app``."""
    bp = Blueprint("password_resets", __name__)
    resets = PasswordResets(ctx.storage, ctx.auth, ctx.guard)

    @bp.get("/api/password-resets/<token>")
    @doc(
        "auth",
        "Whether a password-reset link is still usable",
        ok={204: None},
        errors=(404, 503),
        auth=False,
    )
    async def check_reset(token: str) -> Response:
        await resets.check(_token(token))
        return empty_response()

    @bp.post("/api/password-resets/<token>")
    @doc(
        "auth",
        "Set a new password through a reset link (ends every session of the user)",
        body=PasswordResetIn,
        ok={204: None},
        errors=(404, 503),
        auth=False,
    )
    async def use_reset(token: str) -> Response:
        token = _token(token)
        body = await read_json(PasswordResetIn)
        await resets.use(token, body.password)
        return empty_response()

    app.register_blueprint(bp)
