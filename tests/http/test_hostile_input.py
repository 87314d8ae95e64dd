"""Issue 9's input kinds, each fixed where the input enters (JSON edge, schemas, storage).

Kind 1: text that is not well-formed Unicode; kind 3: parsers without limits; kind 4:
identities that differ only in Unicode form; kind 9: file paths. Raw bodies are sent as
bytes, because a JSON encoder would refuse (or escape differently) what a hostile client sends.
"""

from __future__ import annotations

from typing import Any

import pytest

from fechatter.app import ServerInfo
from tests.conftest import Api, User, make_chat, make_pair, make_workspace, upload_file

JSON = {"Content-Type": "application/json"}


async def _raw(api: Api, method: str, url: str, body: bytes) -> Any:
    return await api.request(method, url, content=body, headers=JSON)


def _fields(r: Any) -> list[str]:
    return [e["field"] for e in r.json().get("errors", [])]


async def test_lone_surrogate_in_content_is_422_and_the_chat_keeps_working(
    api: Api, server: ServerInfo
) -> None:
    a, b, chat = await make_pair(api)
    url = f"/api/chats/{chat}/messages"
    for _ in range(10):  # more than the actor restart budget (5)
        r = await _raw(a.api, "POST", url, b'{"content": "half an emoji \\ud83d"}')
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "invalid_text"
        assert _fields(r) == ["content"]
    r = await b.api.post(url, json={"content": "still here"})
    assert r.status_code == 201, r.text
    assert server.system.directory.statistics().restarts == 0


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (
            "/api/auth/signup",
            b'{"fullname": "A\\udc00", "email": "a@example.com", "password": "correct horse"}',
            "fullname",
        ),
        ("/api/auth/signin", b'{"email": "a\\ud800@example.com", "password": "x"}', "email"),
        ("/api/auth/refresh", b'{"refresh_token": "\\udfff"}', "refresh_token"),
        ("/api/workspaces", b'{"name": "ok", "extra": {"deep": ["\\ud83d"]}}', "extra.deep.0"),
    ],
)
async def test_lone_surrogates_anywhere_name_the_field(
    api: Api, route: str, body: bytes, field: str
) -> None:
    user = await api.signup()
    r = await _raw(user.api, "POST", route, body)
    assert (r.status_code, r.json()["code"], _fields(r)) == (422, "invalid_text", [field])


async def test_deep_nesting_and_huge_numbers_are_400(api: Api) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    r = await _raw(api, "POST", "/api/auth/signin", deep)
    assert (r.status_code, r.json()["code"]) == (400, "json_too_deep")
    huge = b'{"email": "a@example.com", "password": ' + b"9" * 5000 + b"}"
    r = await _raw(api, "POST", "/api/auth/signin", huge)
    assert (r.status_code, r.json()["code"]) == (400, "number_out_of_range")
    # Past 64 bits an integer is no id: a 422 naming the field, not a 500 or a coercion.
    a, _, chat = await make_pair(api)
    body = b'{"message_id": 18446744073709551616}'
    r = await _raw(a.api, "POST", f"/api/chats/{chat}/read", body)
    assert (r.status_code, _fields(r)) == (422, ["message_id"])
    # The server still serves.
    assert (await api.get("/health")).status_code == 200


async def test_one_email_in_two_unicode_forms_is_one_account(api: Api) -> None:
    body = {"fullname": "José", "email": "jos\u00e9@example.com", "password": "correct horse"}
    r = await api.post("/api/auth/signup", json=body)
    assert r.status_code == 201, r.text
    for email in ("jose\u0301@example.com", "JOS\u00c9@EXAMPLE.COM", "\uff2aos\u00e9@example.com"):
        again = await api.post("/api/auth/signup", json={**body, "email": email})
        assert (again.status_code, again.json()["code"]) == (409, "email_taken"), email
        signin = await api.post(
            "/api/auth/signin", json={"email": email, "password": "correct horse"}
        )
        assert signin.status_code == 200, email
        assert signin.json()["user"]["id"] == r.json()["user"]["id"]


async def test_unique_names_compare_in_one_normal_form(api: Api) -> None:
    owner = await api.signup()
    r = await owner.api.post("/api/workspaces", json={"name": "Caf\u00e9 crew"})
    assert r.status_code == 201
    assert r.json()["name"] == "Caf\u00e9 crew"
    r = await owner.api.post("/api/workspaces", json={"name": "CAFE\u0301 CREW"})
    assert (r.status_code, r.json()["code"]) == (409, "workspace_name_taken")
    ws = await make_workspace(owner)
    await make_chat(owner, ws, "PublicChannel", name="Stra\u00dfe")
    r = await owner.api.post(
        "/api/chats", json={"workspace_id": ws, "type": "PublicChannel", "name": "STRASSE"}
    )
    assert (r.status_code, r.json()["code"]) == (409, "chat_name_taken")
    # Names are stored composed (NFC), whatever form the client sent.
    chat = await make_chat(owner, ws, "PublicChannel", name="Re\u0301sume\u0301")
    assert (await owner.api.get(f"/api/chats/{chat}")).json()["name"] == "R\u00e9sum\u00e9"


@pytest.mark.parametrize("blank", ["\u200b", "\u200b\u200d\ufeff", " \u2060 \u200c "])
async def test_invisible_only_text_is_empty(api: Api, blank: str) -> None:
    a, _, chat = await make_pair(api)
    r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": blank})
    assert (r.status_code, _fields(r)) == (422, ["content"])
    r = await a.api.patch("/api/users/me", json={"fullname": blank})
    assert (r.status_code, _fields(r)) == (422, ["fullname"])
    r = await a.api.post("/api/workspaces", json={"name": blank})
    assert (r.status_code, _fields(r)) == (422, ["name"])
    # Inside text, joiners stay: a family emoji is one grapheme of three people and two ZWJs.
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": family})
    assert (r.status_code, r.json()["content"]) == (201, family)


async def test_names_refuse_control_characters(api: Api) -> None:
    user: User = await api.signup()
    r = await user.api.patch("/api/users/me", json={"fullname": "Eve\x1b[31m"})
    assert (r.status_code, _fields(r)) == (422, ["fullname"])
    # A right-to-left override makes "\u202etxt.exe" read "exe.txt": not in a name.
    r = await user.api.post("/api/workspaces", json={"name": "\u202etxt.exe"})
    assert (r.status_code, _fields(r)) == (422, ["name"])


@pytest.mark.parametrize(
    "path",
    [
        "/files/../../../etc/passwd",
        "/files/a/../b",
        "/files/./x",
        "/files//x",
        "/files/x/",
    ],
)
async def test_file_urls_with_dot_segments_are_refused(api: Api, path: str) -> None:
    a, _, chat = await make_pair(api)
    r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "x", "files": [path]})
    assert (r.status_code, _fields(r)) == (422, ["files.0"])
    url = await upload_file(a)  # a message's files are the sender's uploads (SPEC §8)
    ok = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "x", "files": [url]})
    assert ok.status_code == 201


async def test_content_keeps_tabs_and_new_lines_but_no_other_controls(api: Api) -> None:
    a, _, chat = await make_pair(api)
    url = f"/api/chats/{chat}/messages"
    r = await a.api.post(url, json={"content": "line one\n\tline two"})
    assert (r.status_code, r.json()["content"]) == (201, "line one\n\tline two")
    for bad in ("ring \x07", "esc \x1b[2J", "c1 \x85x"):
        r = await a.api.post(url, json={"content": bad})
        assert (r.status_code, _fields(r)) == (422, ["content"]), repr(bad)


async def test_invisible_characters_inside_an_email_do_not_make_a_second_account(
    api: Api,
) -> None:
    body = {"fullname": "Jo", "email": "jose@example.com", "password": "correct horse"}
    assert (await api.post("/api/auth/signup", json=body)).status_code == 201
    twin = {**body, "email": "jo\u200bse@example.com"}
    r = await api.post("/api/auth/signup", json=twin)
    assert (r.status_code, r.json()["code"]) == (409, "email_taken")
