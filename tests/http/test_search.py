"""``GET /api/search/messages`` (SPEC §9): every rule, over real HTTP and a real database.

Words ANDed, quoted phrases, CJK words inside sentences (and the one-character fallback),
only the caller's chats now, never tombstones, edits by their current text, the filters,
both orders and their cursors, highlights as code-point offsets, and each bad parameter as a
400 problem naming it. A message is searched right after its send is acknowledged (no wait
anywhere here: the index is written in the send's transaction).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from tests.conftest import Api, User, make_chat, make_workspace

CEILING = 20  # seconds for one test's requests
SEARCH = "/api/search/messages"


async def _send(user: User, chat: int, content: str, **extra: Any) -> dict[str, Any]:
    r = await user.api.post(f"/api/chats/{chat}/messages", json={"content": content, **extra})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def _search(user: User, q: str, **params: Any) -> dict[str, Any]:
    r = await user.api.get(SEARCH, params={"q": q, **params})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def _ids(user: User, q: str, **params: Any) -> list[int]:
    return [hit["message"]["id"] for hit in (await _search(user, q, **params))["items"]]


async def _group(api: Api) -> tuple[User, User, User, int, int]:
    """Owner ``a`` and members ``b``, ``c`` of a Group; (a, b, c, workspace, chat)."""
    a, b, c = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(a, b, c)
    return a, b, c, ws, await make_chat(a, ws, "Group", b, c)


def _problem(r: httpx.Response) -> tuple[int, str, str | None]:
    doc = r.json()
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return r.status_code, doc["code"], (doc.get("errors") or [{}])[0].get("field")


async def test_words_are_anded_newest_first_with_the_hit_shape(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await _group(api)
        m1 = await _send(a, chat, "deploy the server tonight")
        m2 = await _send(b, chat, "the server is down")
        m3 = await _send(a, chat, "Deploy done, SERVER up")
        await _send(a, chat, "nothing to see")
        assert await _ids(b, "server") == [m3["id"], m2["id"], m1["id"]]
        assert await _ids(b, "deploy server") == [m3["id"], m1["id"]]
        assert await _ids(b, "server missingword") == []
        body = await _search(b, "down")
        assert body["next_cursor"] is None
        [hit] = body["items"]
        assert hit["chat_id"] == chat
        assert hit["message"] == m2 | {"reactions": hit["message"]["reactions"]}
        assert hit["highlights"] == [[14, 18]]
        # Whole words only: "serve" is not a word of any message.
        assert await _ids(b, "serve") == []


async def test_quoted_phrases_keep_word_order(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await _group(api)
        m1 = await _send(a, chat, "the quick brown fox")
        m2 = await _send(a, chat, "brown and quick, the fox")
        assert await _ids(b, "quick brown") == [m2["id"], m1["id"]]
        assert await _ids(b, '"quick brown"') == [m1["id"]]
        assert await _ids(b, '"quick brown" fox') == [m1["id"]]
        assert await _ids(b, '"brown quick"') == []
        # An unclosed quote runs to the end; punctuation inside a phrase is a separator.
        assert await _ids(b, '"quick brown') == [m1["id"]]
        assert await _ids(b, '"quick-brown"') == [m1["id"]]
        hit = (await _search(b, '"quick brown"'))["items"][0]
        assert hit["highlights"] == [[4, 15]]


async def test_cjk_words_are_found_inside_sentences(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await _group(api)
        zh = await _send(a, chat, "这是一个实时聊天应用")
        mixed = await _send(a, chat, "我用Python写聊天机器人")
        ja = await _send(a, chat, "東京でリアルタイムチャットを作る")
        ko = await _send(a, chat, "실시간 채팅 애플리케이션")
        assert await _ids(b, "聊天") == [mixed["id"], zh["id"]]
        assert await _ids(b, "实时聊天") == [zh["id"]]
        assert await _ids(b, "聊天应用") == [zh["id"]]
        assert await _ids(b, "应用 实时") == [zh["id"]]
        assert await _ids(b, "天应") == [zh["id"]]  # any two adjacent characters
        assert await _ids(b, "聊天室") == []
        assert await _ids(b, "python 聊天") == [mixed["id"]]
        assert await _ids(b, "用Python") == [mixed["id"]]
        assert await _ids(b, '"Python写聊天"') == [mixed["id"]]
        assert await _ids(b, "チャット") == [ja["id"]]
        assert await _ids(b, "東京") == [ja["id"]]
        assert await _ids(b, "채팅") == [ko["id"]]
        assert await _ids(b, "시간") == [ko["id"]]
        # One CJK character: every message with it, wherever it is in a run.
        assert await _ids(b, "聊") == [mixed["id"], zh["id"]]
        assert await _ids(b, "用") == [mixed["id"], zh["id"]]  # last of a run, and alone
        assert await _ids(b, "京") == [ja["id"]]
        hit = (await _search(b, "聊天"))["items"][1]
        assert hit["highlights"] == [[6, 8]]
        hit = (await _search(b, "聊"))["items"][0]
        assert hit["highlights"] == [[9, 10]]


async def test_highlights_are_code_point_offsets_past_emoji(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await _group(api)
        content = "👍🏽 héllo 𠀀聊天 and HELLO again, hello!"
        m = await _send(a, chat, content)
        [hit] = (await _search(b, "hello 聊天"))["items"]
        assert hit["message"]["id"] == m["id"]
        spans = hit["highlights"]
        assert [content[s:e] for s, e in spans] == ["聊天", "HELLO", "hello"]
        assert spans[0] == [10, 12]  # code points: 👍🏽 is 2, not 4 UTF-16 units
        # "héllo" is another word: diacritics are kept on both backends.
        assert await _ids(b, "héllo") == [m["id"]]
        assert await _ids(b, "HÉLLO") == [m["id"]]
        assert (await _search(b, "héllo"))["items"][0]["highlights"] == [[3, 8]]


async def test_only_chats_the_caller_is_a_member_of_now(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, c, ws, group = await _group(api)
        single = await make_chat(a, ws, "Single", b)
        public = await make_chat(a, ws, "PublicChannel")
        in_group = await _send(a, group, "launch plan")
        in_single = await _send(a, single, "launch secret")
        await _send(a, public, "launch public")
        assert await _ids(b, "launch") == [in_single["id"], in_group["id"]]
        assert await _ids(c, "launch") == [in_group["id"]]  # not the Single, not the channel
        stranger = await api.signup()
        assert await _ids(stranger, "launch") == []
        assert await _ids(stranger, "launch", chat_id=group) == []
        r = await b.api.delete(f"/api/chats/{group}/members/{b.id}")
        assert r.status_code == 204, r.text
        assert await _ids(b, "launch") == [in_single["id"]]
        # Joining a public channel makes its history searchable.
        r = await c.api.post(f"/api/chats/{public}/join")
        assert r.status_code == 200, r.text
        assert len(await _ids(c, "launch")) == 2


async def test_tombstones_never_and_edits_by_current_text(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await _group(api)
        m1 = await _send(a, chat, "original wording here")
        m2 = await _send(a, chat, "soon deleted wording")
        r = await a.api.patch(f"/api/chats/{chat}/messages/{m1['id']}", json={"content": "new"})
        assert r.status_code == 200, r.text
        assert await _ids(b, "original") == []
        [hit] = (await _search(b, "new"))["items"]
        assert hit["message"]["content"] == "new"
        assert hit["message"]["edited_at"] is not None
        assert await _ids(b, "wording") == [m2["id"]]
        r = await a.api.delete(f"/api/chats/{chat}/messages/{m2['id']}")
        assert r.status_code == 204, r.text
        assert await _ids(b, "wording") == []
        assert await _ids(b, "deleted") == []


async def test_threads_and_retried_sends_are_indexed_once(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await _group(api)
        root = await _send(a, chat, "root topic")
        reply = await _send(b, chat, "reply about topic", thread_id=root["id"])
        first = await _send(a, chat, "idempotent topic", client_id="k1")
        r = await a.api.post(
            f"/api/chats/{chat}/messages", json={"content": "idempotent topic", "client_id": "k1"}
        )
        assert r.status_code == 200, r.text
        assert await _ids(b, "topic") == [first["id"], reply["id"], root["id"]]


async def test_filters_chat_workspace_sender_and_times(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, ws, group = await _group(api)
        single = await make_chat(a, ws, "Single", b)
        other_ws = await make_workspace(a, b)
        other = await make_chat(a, other_ws, "Single", b)
        g1 = await _send(a, group, "report one")
        g2 = await _send(b, group, "report two")
        s1 = await _send(a, single, "report three")
        o1 = await _send(b, other, "report four")
        assert await _ids(b, "report") == [o1["id"], s1["id"], g2["id"], g1["id"]]
        assert await _ids(b, "report", chat_id=group) == [g2["id"], g1["id"]]
        assert await _ids(b, "report", workspace_id=ws) == [s1["id"], g2["id"], g1["id"]]
        assert await _ids(b, "report", workspace_id=other_ws) == [o1["id"]]
        assert await _ids(b, "report", **{"from": a.id}) == [s1["id"], g1["id"]]
        assert await _ids(b, "report", **{"from": b.id, "chat_id": group}) == [g2["id"]]
        # before / after: exclusive bounds on created_at, any offset accepted.
        after = await _ids(b, "report", after=g2["created_at"])
        assert after == [o1["id"], s1["id"]]
        assert await _ids(b, "report", before=g2["created_at"]) == [g1["id"]]
        both = {"after": g1["created_at"], "before": s1["created_at"]}
        assert await _ids(b, "report", **both) == [g2["id"]]
        shifted = g2["created_at"].replace("Z", "+00:00")
        assert await _ids(b, "report", before=shifted) == [g1["id"]]


async def test_paging_newest_first_and_by_relevance(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b, _, _, chat = await _group(api)
        sent = [await _send(a, chat, f"item number {i} of the list") for i in range(5)]
        strong = await _send(a, chat, "item item item")
        newest = [strong["id"], *(m["id"] for m in reversed(sent))]
        seen: list[int] = []
        cursor = None
        for _ in range(4):
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            body = await _search(b, "item", **params)
            seen += [hit["message"]["id"] for hit in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == newest
        assert cursor is None
        # Relevance: the message that is all "item" first, every match once across pages.
        body = await _search(b, "item", sort="relevance", limit=4)
        ranked = [hit["message"]["id"] for hit in body["items"]]
        assert ranked[0] == strong["id"]
        rest = await _search(b, "item", sort="relevance", limit=4, cursor=body["next_cursor"])
        assert rest["next_cursor"] is None
        ranked += [hit["message"]["id"] for hit in rest["items"]]
        assert sorted(ranked) == sorted(newest)
        r = await b.api.get(SEARCH, params={"q": "item", "cursor": body["next_cursor"]})
        assert _problem(r) == (400, "invalid_query", "cursor")  # a relevance cursor


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": "  "}, "q"),
        ({"q": "x" * 257}, "q"),
        ({"q": "!!! 👍"}, "q"),
        ({"q": "a", "limit": "0"}, "limit"),
        ({"q": "a", "limit": "101"}, "limit"),
        ({"q": "a", "sort": "oldest"}, "sort"),
        ({"q": "a", "cursor": "abc"}, "cursor"),
        ({"q": "a", "cursor": "r5"}, "cursor"),
        ({"q": "a", "cursor": "n0"}, "cursor"),
        ({"q": "a", "sort": "relevance", "cursor": "r10001"}, "cursor"),
        ({"q": "a", "before": "yesterday"}, "before"),
        ({"q": "a", "after": "2026-01-31T12:00:00"}, "after"),  # no offset
        ({"q": "a", "after": "2026-01-31"}, "after"),
        ({"q": "a", "before": "0001-01-01T00:00:00+01:00"}, "before"),
        ({"q": "a", "chat_id": "abc"}, "chat_id"),
        ({"q": "a", "workspace_id": "-1"}, "workspace_id"),
        ({"q": "a", "from": "0"}, "from"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    api: Api, params: dict[str, str], field: str
) -> None:
    with trio.fail_after(CEILING):
        user = await api.signup()
        r = await user.api.get(SEARCH, params=params)
        assert _problem(r) == (400, "invalid_query", field)


async def test_search_needs_a_token(api: Api) -> None:
    with trio.fail_after(CEILING):
        r = await api.get(SEARCH, params={"q": "x"})
        assert r.status_code == 401
        user = await api.signup()
        body = await _search(user, "x" * 256)
        assert body == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("raw", ["a%00b", "%00", "a%ED%A0%80b", "%FF%FE", "a%0Ab%09c"])
async def test_control_bytes_and_bad_utf8_in_q_are_never_a_500(api: Api, raw: str) -> None:
    """Query strings bypass the JSON edge: NUL (PostgreSQL text cannot hold it), a UTF-8
    encoded surrogate and invalid UTF-8 still get a 200 or a 400 naming ``q``."""
    with trio.fail_after(CEILING):
        user = await api.signup()
        r = await user.api.get(f"{SEARCH}?q={raw}")
        assert r.status_code in (200, 400), r.text
        if r.status_code == 400:
            assert _problem(r) == (400, "invalid_query", "q")
