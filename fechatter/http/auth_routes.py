"""Sign-up, sign-in, token refresh (rotation with reuse detection), logout, the caller's profile."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Quart, Response

from fechatter.auth import hash_refresh_token
from fechatter.errors import Invalid, Unauthorized
from fechatter.http.common import (
    Context,
    current_claims,
    current_user_id,
    empty_response,
    json_response,
    read_json,
)
from fechatter.http.schemas import LogoutIn, RefreshIn, SigninIn, SignupIn, UserPatch
from fechatter.models import User, utc_now

BAD_CREDENTIALS = "email or password is incorrect"


def register(app: Quart, ctx: Context) -> None:
    """Add the auth and user routes to ``app``."""
    bp = Blueprint("auth_routes", __name__)

    async def issue(user: User) -> dict[str, Any]:
        """A new session (refresh-token family) and its first token pair."""
        family_id = ctx.auth.new_family_id()
        refresh, refresh_hash = ctx.auth.new_refresh_token()
        await ctx.storage.add_refresh_token(
            user.id, refresh_hash, family_id, ctx.auth.refresh_expiry()
        )
        state = await ctx.guard.load(user.id)
        return token_pair(user, refresh, family_id, state.version)

    def token_pair(user: User, refresh: str, family_id: str, version: int) -> dict[str, Any]:
        token = ctx.auth.issue_access_token(user.id, security_version=version, session_id=family_id)
        return {
            "token": token,
            "refresh_token": refresh,
            "expires_in": ctx.auth.access_ttl,
            "user": user.to_json(),
        }

    @bp.post("/api/auth/signup")
    async def signup() -> Response:
        body = await read_json(SignupIn)
        password_hash = await ctx.auth.hash_password(body.password)
        user, _ = await ctx.storage.create_user(
            body.fullname, body.email, password_hash, body.workspace
        )
        return json_response(await issue(user), 201)

    @bp.post("/api/auth/signin")
    async def signin() -> Response:
        body = await read_json(SigninIn)
        creds = await ctx.storage.get_credentials(body.email_key)
        ok = await ctx.auth.verify_password(creds.password_hash if creds else None, body.password)
        if not ok or creds is None:
            raise Unauthorized(BAD_CREDENTIALS, code="invalid_credentials")
        if creds.user.status.value != "Active":
            raise Unauthorized(BAD_CREDENTIALS, code="invalid_credentials")
        return json_response(await issue(creds.user))

    @bp.post("/api/auth/refresh")
    async def refresh() -> Response:
        body = await read_json(RefreshIn)
        new_token, new_hash = ctx.auth.new_refresh_token()
        grant = await ctx.storage.rotate_refresh_token(
            hash_refresh_token(body.refresh_token), new_hash, ctx.auth.refresh_expiry(), utc_now()
        )
        if grant is None:
            raise Unauthorized("refresh token is invalid or expired", code="invalid_refresh_token")
        user = await ctx.storage.get_user(grant.user_id)
        if user is None:  # pragma: no cover - users are never deleted
            raise Unauthorized("refresh token is invalid", code="invalid_refresh_token")
        state = await ctx.guard.load(user.id)
        if not state.active:
            # Same answer as any dead refresh token: a suspended user gets no new tokens.
            raise Unauthorized("refresh token is invalid or expired", code="invalid_refresh_token")
        return json_response(token_pair(user, new_token, grant.family_id, state.version))

    @bp.post("/api/auth/logout")
    async def logout() -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(LogoutIn)
        await ctx.storage.revoke_refresh_token(hash_refresh_token(body.refresh_token), user_id)
        if body.everywhere:
            await ctx.guard.revoke_all(user_id)
        return empty_response()

    @bp.get("/api/users/me")
    async def me() -> Response:
        user = await _caller(ctx)
        return json_response(user.to_json())

    @bp.patch("/api/users/me")
    async def update_me() -> Response:
        claims = await current_claims(ctx)
        user_id = claims.user_id
        body = await read_json(UserPatch)
        password_hash = None
        if body.password is not None:
            creds = await ctx.storage.get_credentials((await _caller(ctx)).email)
            assert body.current_password is not None  # the schema guarantees it
            if creds is None or not await ctx.auth.verify_password(
                creds.password_hash, body.current_password
            ):
                raise Invalid.field("current_password", "is incorrect")
            password_hash = await ctx.auth.hash_password(body.password)
        fields = body.model_fields_set
        user = await ctx.storage.update_user(
            user_id,
            fullname=body.fullname,
            avatar=body.avatar,
            clear_avatar="avatar" in fields and body.avatar is None,
            password_hash=password_hash,
        )
        if password_hash is not None:
            # A changed password signs every other session out: their refresh tokens are
            # revoked and every access token (the caller's too) voided; the caller's own
            # refresh token keeps working, so this session continues after one refresh.
            await ctx.guard.revoke_all(user_id, keep_session=claims.session_id)
        return json_response(user.to_json())

    app.register_blueprint(bp)


async def _caller(ctx: Context) -> User:
    user = await ctx.storage.get_user(await current_user_id(ctx))
    if user is None:  # a validly signed token for a user this database does not have
        raise Unauthorized("invalid token", code="invalid_token")
    return user
