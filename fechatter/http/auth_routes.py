"""Sign-up, sign-in, token refresh (rotation with reuse detection), logout, the caller's profile.

Sign-in, sign-up, refresh and password changes pass the throttles of ``fechatter.throttle``
first (429 ``too_many_attempts``), then password hashing's bounded queue (503 ``auth_busy``).
"""

from __future__ import annotations

import trio
from quart import Blueprint, Quart, Response, request

from fechatter.client_address import client_address, parse_networks, throttle_key
from fechatter.domain.invites import Invites
from fechatter.errors import FechatterError, Invalid, Unauthorized, Unavailable
from fechatter.http.apidoc import SessionOut, UserOut, doc
from fechatter.http.common import (
    Context,
    current_claims,
    current_user_id,
    empty_response,
    json_response,
    read_json,
)
from fechatter.models import User
from fechatter.schemas import LogoutIn, RefreshIn, SigninIn, SignupIn, UserPatch
from fechatter.throttle import AuthThrottle, account_key


def register(app: Quart, ctx: Context) -> None:
    """Add the auth and user routes to ``app``."""
    bp = Blueprint("auth_routes", __name__)
    throttle = ctx.throttle or AuthThrottle.from_settings(ctx.settings, trio.current_time)
    invites = Invites(ctx.storage, ctx.workspaces, ctx.settings.public_url)
    trusted = parse_networks(ctx.settings.trusted_proxies)
    accounts = ctx.accounts

    def caller_address() -> str:
        # The ASGI scope's ``client`` is the TCP peer as hypercorn saw it (None on a Unix
        # socket); read it rather than quart's ``remote_addr``, which goes through headers.
        peer = request.scope.get("client")
        host = str(peer[0]) if peer else None
        forwarded = request.headers.getlist("X-Forwarded-For") if trusted else []
        return throttle_key(client_address(host, forwarded, trusted))

    @bp.post("/api/auth/signup")
    @doc(
        "auth",
        "Sign up (optionally creating a workspace or accepting an invite)",
        body=SignupIn,
        ok={201: SessionOut},
        errors=(404, 409, 429, 503),
        auth=False,
    )
    async def signup() -> Response:
        body = await read_json(SignupIn)
        address = caller_address()
        throttle.begin_signup(address)
        create = None
        if body.invite_token is not None:  # SPEC §7: the account joins that workspace
            token = body.invite_token
            await invites.preview(token)  # a bad link costs no hash (404)

            async def create(password_hash: str) -> tuple[User, int]:
                return await invites.create_user(body.fullname, body.email, password_hash, token)

        try:
            session = await accounts.sign_up(
                body.fullname, body.email, body.password, body.workspace, create=create
            )
        except Unavailable:  # the hash queue is full (or storage down): give the attempt back
            throttle.signup_not_hashed(address)
            raise
        return json_response(session.to_json(), 201)

    @bp.post("/api/auth/signin")
    @doc("auth", "Sign in", body=SigninIn, ok={200: SessionOut}, errors=(401, 429, 503), auth=False)
    async def signin() -> Response:
        body = await read_json(SigninIn)
        email = body.email_key
        address, account = caller_address(), account_key(email)
        # Counted by email whether or not it exists, before any lookup: the 429 reveals nothing.
        throttle.begin_signin(address, account)
        try:
            session = await accounts.sign_in(email, body.password)
        except Unauthorized:
            raise  # a failure: it stays counted
        except FechatterError:  # storage down or hash queue full: no password was checked
            throttle.signin_not_checked(address, account)
            raise
        throttle.signin_succeeded(address, account)
        return json_response(session.to_json())

    @bp.post("/api/auth/refresh")
    @doc(
        "auth",
        "Rotate a refresh token for a new session pair",
        body=RefreshIn,
        ok={200: SessionOut},
        errors=(401, 429, 503),
        auth=False,
    )
    async def refresh() -> Response:
        body = await read_json(RefreshIn)
        address = caller_address()
        # Failed refreshes share the address's failure allowance with failed sign-ins: each is
        # a write transaction, and a loop of bogus ones must not monopolise the writer.
        throttle.begin_refresh(address)
        try:
            session = await accounts.refresh(body.refresh_token)
        except Unauthorized:
            raise  # a failure: it stays counted
        except FechatterError:
            throttle.refresh_done(address)
            raise
        throttle.refresh_done(address)
        return json_response(session.to_json())

    @bp.post("/api/auth/logout")
    @doc("auth", "Sign out this session (or every session)", body=LogoutIn, ok={204: None})
    async def logout() -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(LogoutIn)
        await accounts.sign_out(user_id, body.refresh_token, everywhere=body.everywhere)
        return empty_response()

    @bp.get("/api/users/me")
    @doc("users", "The caller", ok={200: UserOut})
    async def me() -> Response:
        user = await accounts.get(await current_user_id(ctx))
        return json_response(user.to_json())

    @bp.patch("/api/users/me")
    @doc(
        "users",
        "Change the caller's name, avatar or password",
        body=UserPatch,
        ok={200: UserOut},
        errors=(429,),
    )
    async def update_me() -> Response:
        claims = await current_claims(ctx)
        user_id = claims.user_id
        body = await read_json(UserPatch)
        if body.password is not None:
            assert body.current_password is not None  # the schema guarantees it
            # A wrong current password is a guess at the account's password: it draws on the
            # same per-account allowance as sign-in (a stolen access token must not brute-force).
            user = await accounts.get(user_id)
            account = account_key(user.email)
            throttle.begin_password_check(account)
            try:
                ok = await accounts.check_password(user, body.current_password)
            except FechatterError:
                throttle.accounts.refund(account)
                raise
            if not ok:
                raise Invalid.field("current_password", "is incorrect")
            throttle.accounts.forget(account)
        if body.avatar is not None and ctx.files is not None:
            await ctx.files.check_avatar(user_id, body.avatar)  # an image the caller uploaded
        user = await accounts.update_profile(
            user_id,
            fullname=body.fullname,
            avatar=body.avatar,
            clear_avatar="avatar" in body.model_fields_set and body.avatar is None,
            new_password=body.password,
            keep_session=claims.session_id,
        )
        return json_response(user.to_json())

    app.register_blueprint(bp)
