"""Sign-up, sign-in, token refresh (rotation with reuse detection), logout, the caller's profile.

Sign-in, sign-up, refresh and password changes pass the throttles of ``fechatter.throttle``
first (429 ``too_many_attempts``), then password hashing's bounded queue (503 ``auth_busy``).
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, Quart, Response, request

from fechatter.auth import hash_refresh_token
from fechatter.client_address import client_address, parse_networks, throttle_key
from fechatter.errors import FechatterError, Invalid, Unauthorized
from fechatter.http.common import (
    Context,
    current_claims,
    current_user_id,
    empty_response,
    json_response,
    read_json,
)
from fechatter.models import User, utc_now
from fechatter.schemas import LogoutIn, RefreshIn, SigninIn, SignupIn, UserPatch
from fechatter.throttle import AuthThrottle, account_key

BAD_CREDENTIALS = "email or password is incorrect"


def register(app: Quart, ctx: Context) -> None:
    """Add the auth and user routes to ``app``."""
    bp = Blueprint("auth_routes", __name__)
    throttle = AuthThrottle.from_settings(ctx.settings, trio.current_time)
    trusted = parse_networks(ctx.settings.trusted_proxies)

    def caller_address() -> str:
        # The ASGI scope's ``client`` is the TCP peer as hypercorn saw it (None on a Unix
        # socket); read it rather than quart's ``remote_addr``, which goes through headers.
        peer = request.scope.get("client")
        host = str(peer[0]) if peer else None
        forwarded = request.headers.getlist("X-Forwarded-For") if trusted else []
        return throttle_key(client_address(host, forwarded, trusted))

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
        address = caller_address()
        throttle.begin_signup(address)
        try:
            password_hash = await ctx.auth.hash_password(body.password)
        except FechatterError:  # the hash queue is full: no hash was spent
            throttle.signup_not_hashed(address)
            raise
        user, _ = await ctx.storage.create_user(
            body.fullname, body.email, password_hash, body.workspace
        )
        return json_response(await issue(user), 201)

    @bp.post("/api/auth/signin")
    async def signin() -> Response:
        body = await read_json(SigninIn)
        email = body.email_key
        address, account = caller_address(), account_key(email)
        # Counted by email whether or not it exists, before any lookup: the 429 reveals nothing.
        throttle.begin_signin(address, account)
        try:
            creds = await ctx.storage.get_credentials(email)
            ok = await ctx.auth.verify_password(
                creds.password_hash if creds else None, body.password
            )
        except FechatterError:  # storage down or hash queue full: no password was checked
            throttle.signin_not_checked(address, account)
            raise
        if not ok or creds is None or creds.user.status.value != "Active":
            # A suspended user's right password counts as a failure: it reads the same.
            raise Unauthorized(BAD_CREDENTIALS, code="invalid_credentials")
        throttle.signin_succeeded(address, account)
        return json_response(await issue(creds.user))

    @bp.post("/api/auth/refresh")
    async def refresh() -> Response:
        body = await read_json(RefreshIn)
        address = caller_address()
        # Failed refreshes share the address's failure allowance with failed sign-ins: each is
        # a write transaction, and a loop of bogus ones must not monopolise the writer.
        throttle.begin_refresh(address)
        new_token, new_hash = ctx.auth.new_refresh_token()
        try:
            grant = await ctx.storage.rotate_refresh_token(
                hash_refresh_token(body.refresh_token),
                new_hash,
                ctx.auth.refresh_expiry(),
                utc_now(),
            )
        except FechatterError:
            throttle.refresh_done(address)
            raise
        if grant is None:
            raise Unauthorized("refresh token is invalid or expired", code="invalid_refresh_token")
        throttle.refresh_done(address)
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
            email = (await _caller(ctx)).email
            creds = await ctx.storage.get_credentials(email)
            assert body.current_password is not None  # the schema guarantees it
            # A wrong current password is a guess at the account's password: it draws on the
            # same per-account allowance as sign-in (a stolen access token must not brute-force).
            account = account_key(email)
            throttle.begin_password_check(account)
            try:
                ok = creds is not None and await ctx.auth.verify_password(
                    creds.password_hash, body.current_password
                )
            except FechatterError:
                throttle.accounts.refund(account)
                raise
            if not ok:
                raise Invalid.field("current_password", "is incorrect")
            throttle.accounts.forget(account)
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
