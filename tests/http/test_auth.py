"""Auth routes over real HTTP: signup, signin, refresh rotation, logout, profile."""

from __future__ import annotations

import time

import jwt
import pytest

from tests.conftest import TEST_SECRET, Api, access_token

# A 1x1 PNG: an avatar must be an uploaded image (SPEC §8).
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a3e6b1"
    "d40000000049454e44ae426082"
)


async def test_signup_returns_tokens_and_user(api: Api) -> None:
    r = await api.post(
        "/api/auth/signup",
        json={"fullname": " Ada ", "email": "Ada@Example.com", "password": "longenough"},
    )
    assert r.status_code == 201
    body = r.json()
    assert body["user"]["email"] == "ada@example.com"
    assert body["user"]["fullname"] == "Ada"
    assert body["user"]["status"] == "Active"
    assert body["expires_in"] == 3600
    claims = jwt.decode(body["token"], TEST_SECRET, algorithms=["HS256"], audience="fechatter")
    assert claims["sub"] == str(body["user"]["id"])
    assert claims["iss"] == "fechatter"
    assert claims["exp"] - claims["iat"] == 3600


async def test_signup_email_is_case_insensitively_unique(api: Api) -> None:
    body = {"fullname": "A", "email": "dup@example.com", "password": "longenough"}
    assert (await api.post("/api/auth/signup", json=body)).status_code == 201
    r = await api.post("/api/auth/signup", json={**body, "email": "DUP@example.com"})
    assert r.status_code == 409
    assert r.json()["code"] == "email_taken"
    assert r.headers["content-type"] == "application/problem+json"


async def test_signup_with_taken_workspace_writes_nothing(api: Api) -> None:
    await api.signup(workspace="Acme")
    body = {
        "fullname": "B",
        "email": "b@example.com",
        "password": "longenough",
        "workspace": "acme",
    }
    r = await api.post("/api/auth/signup", json=body)
    assert r.status_code == 409
    assert r.json()["code"] == "workspace_name_taken"
    # The user was not created: the same email can sign up now.
    r = await api.post("/api/auth/signup", json={**body, "workspace": "Other"})
    assert r.status_code == 201


async def test_signup_with_workspace_makes_owner(api: Api) -> None:
    user = await api.signup(workspace="Mine")
    r = await user.api.get("/api/workspaces")
    assert [(w["name"], w["owner_id"]) for w in r.json()] == [("Mine", user.id)]


async def test_signup_validation_names_fields(api: Api) -> None:
    r = await api.post(
        "/api/auth/signup", json={"fullname": "", "email": "nope", "password": "short"}
    )
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"fullname", "email", "password"}


async def test_signin_success_and_uniform_failure(api: Api) -> None:
    user = await api.signup()
    ok = await api.post(
        "/api/auth/signin", json={"email": user.email.upper(), "password": "correct horse"}
    )
    assert ok.status_code == 200
    assert ok.json()["user"]["id"] == user.id
    wrong_pw = await api.post(
        "/api/auth/signin", json={"email": user.email, "password": "wrong horse"}
    )
    no_user = await api.post(
        "/api/auth/signin", json={"email": "ghost@example.com", "password": "wrong horse"}
    )
    assert wrong_pw.status_code == no_user.status_code == 401
    assert wrong_pw.json()["detail"] == no_user.json()["detail"]
    assert wrong_pw.headers["www-authenticate"].startswith("Bearer")


async def test_refresh_rotates_and_reuse_revokes_family(api: Api) -> None:
    user = await api.signup()
    first = user.auth["refresh_token"]
    r = await api.post("/api/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 200
    second = r.json()["refresh_token"]
    assert second != first
    # Reusing the rotated token is theft: the family dies, including the new token.
    assert (await api.post("/api/auth/refresh", json={"refresh_token": first})).status_code == 401
    assert (await api.post("/api/auth/refresh", json={"refresh_token": second})).status_code == 401


async def test_refresh_unknown_token(api: Api) -> None:
    r = await api.post("/api/auth/refresh", json={"refresh_token": "nonsense"})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_refresh_token"


async def test_logout_revokes_refresh_token(api: Api) -> None:
    user = await api.signup()
    refresh = user.auth["refresh_token"]
    r = await user.api.post("/api/auth/logout", json={"refresh_token": refresh})
    assert r.status_code == 204
    assert (await api.post("/api/auth/refresh", json={"refresh_token": refresh})).status_code == 401


async def test_logout_needs_access_token(api: Api) -> None:
    user = await api.signup()
    r = await api.post("/api/auth/logout", json={"refresh_token": user.auth["refresh_token"]})
    assert r.status_code == 401


async def test_me_requires_valid_token(api: Api) -> None:
    assert (await api.get("/api/users/me")).status_code == 401
    r = await api.get("/api/users/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"
    forged = jwt.encode(
        {
            "sub": "1",
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
            "iss": "fechatter",
            "aud": "fechatter",
        },
        "another-secret" * 4,
        algorithm="HS256",
    )
    r = await api.get("/api/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


async def test_expired_token_is_rejected(api: Api) -> None:
    user = await api.signup()
    old = access_token(user.id, ttl=60, issued_at=time.time() - 3600)
    r = await api.get("/api/users/me", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 401
    assert r.json()["code"] == "token_expired"


@pytest.mark.one_api_node(
    reason=(
        "asserts the old access token is refused by the very next request; a password "
        "change takes effect at once on the node that made it and within "
        "security_poll_interval on the others (docs/cluster.md §6)"
    )
)
async def test_patch_me_profile_and_password(api: Api) -> None:
    user = await api.signup()
    other_session = await api.post(
        "/api/auth/signin", json={"email": user.email, "password": "correct horse"}
    )
    # An avatar is an image the caller uploaded (SPEC §8).
    r = await user.api.post("/api/files", files={"file": ("a.png", PNG_1PX, "image/png")})
    avatar = r.json()["url"]
    r = await user.api.patch("/api/users/me", json={"fullname": "New Name", "avatar": avatar})
    assert r.status_code == 200
    assert (r.json()["fullname"], r.json()["avatar"]) == ("New Name", avatar)
    r = await user.api.patch("/api/users/me", json={"avatar": None})
    assert r.json()["avatar"] is None
    assert r.json()["fullname"] == "New Name"

    r = await user.api.patch("/api/users/me", json={"password": "new password"})
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {"field": "current_password", "message": "is required to change the password"}
    ]
    r = await user.api.patch(
        "/api/users/me", json={"password": "new password", "current_password": "wrong one"}
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "current_password"
    r = await user.api.patch(
        "/api/users/me", json={"password": "new password", "current_password": "correct horse"}
    )
    assert r.status_code == 200
    old = await api.post(
        "/api/auth/signin", json={"email": user.email, "password": "correct horse"}
    )
    new = await api.post("/api/auth/signin", json={"email": user.email, "password": "new password"})
    assert (old.status_code, new.status_code) == (401, 200)
    # Changing the password signed the other sessions out (SPEC §3: every session but the
    # caller's) and voided every access token issued before it, the caller's too.
    r = await api.post(
        "/api/auth/refresh", json={"refresh_token": other_session.json()["refresh_token"]}
    )
    assert r.status_code == 401
    r = await user.api.get("/api/users/me")
    assert (r.status_code, r.json()["code"]) == (401, "token_revoked")
    # The caller's session goes on after one refresh.
    r = await api.post("/api/auth/refresh", json={"refresh_token": user.auth["refresh_token"]})
    assert r.status_code == 200
    fresh = r.json()["token"]
    r = await api.get("/api/users/me", headers={"Authorization": f"Bearer {fresh}"})
    assert r.status_code == 200
