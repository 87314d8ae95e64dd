"""Message routes: sends, gapless seq under concurrency, idempotency, pages, read, typing."""

from __future__ import annotations

import re

import pytest
import trio

from tests.conftest import (
    Api,
    ApiFactory,
    User,
    make_chat,
    make_pair,
    make_workspace,
    upload_file,
)


async def _storage_transactions(api: Api) -> int:
    text = (await api.get("/metrics")).text
    match = re.search(r"^fechatter_storage_transactions (\S+)$", text, re.MULTILINE)
    assert match is not None
    return int(float(match.group(1)))


async def test_send_and_read_back(api: Api) -> None:
    a, b, chat = await make_pair(api)
    r = await a.api.post(
        f"/api/chats/{chat}/messages", json={"content": "  hello  ", "client_id": "c-1"}
    )
    assert r.status_code == 201
    m = r.json()
    assert (m["chat_id"], m["seq"], m["sender_id"], m["content"], m["client_id"]) == (
        chat,
        1,
        a.id,
        "hello",
        "c-1",
    )
    assert m["created_at"].endswith("Z")
    assert (m["files"], m["reply_to"], m["edited_at"]) == ([], None, None)
    r = await b.api.get(f"/api/chats/{chat}/messages")
    assert r.json() == {"items": [m], "has_more": False}


async def test_content_validation(api: Api) -> None:
    a, _, chat = await make_pair(api)
    for body, field in [
        ({"content": "   "}, "content"),
        ({"content": "x" * 4001}, "content"),
        ({"content": 5}, "content"),
        ({"content": "x", "files": ["http://e"]}, "files.0"),
        ({"content": "x", "client_id": "c" * 65}, "client_id"),
        ({"content": "x", "reply_to": "1"}, "reply_to"),
        ({"content": "a\x00b"}, "content"),
    ]:
        r = await a.api.post(f"/api/chats/{chat}/messages", json=body)
        assert r.status_code == 422, body
        assert r.json()["errors"][0]["field"] == field, body
    r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "x" * 4000})
    assert r.status_code == 201
    url = await upload_file(a)  # a message's files are the sender's uploads (SPEC §8)
    r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "", "files": [url]})
    assert (r.status_code, r.json()["files"]) == (201, [url])
    assert (await a.api.get(f"/api/chats/{chat}/messages")).json()["items"][0]["seq"] == 2


async def test_reply_to_must_be_in_chat(api: Api) -> None:
    a, b, chat = await make_pair(api)
    ws = await make_workspace(a, b)
    other = await make_chat(a, ws, "PrivateChannel", b)
    foreign = (await a.api.post(f"/api/chats/{other}/messages", json={"content": "x"})).json()
    r = await a.api.post(
        f"/api/chats/{chat}/messages", json={"content": "re", "reply_to": foreign["id"]}
    )
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "reply_to")
    first = (await a.api.post(f"/api/chats/{chat}/messages", json={"content": "x"})).json()
    r = await b.api.post(
        f"/api/chats/{chat}/messages", json={"content": "re", "reply_to": first["id"]}
    )
    assert (r.status_code, r.json()["reply_to"], r.json()["seq"]) == (201, first["id"], 2)


async def test_client_id_retry_returns_original(api: Api) -> None:
    a, b, chat = await make_pair(api)
    body = {"content": "once", "client_id": "retry-1"}
    first = await a.api.post(f"/api/chats/{chat}/messages", json=body)
    again = await a.api.post(f"/api/chats/{chat}/messages", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    # Same client_id from another sender is a different message.
    other = await b.api.post(f"/api/chats/{chat}/messages", json=body)
    assert other.status_code == 201
    items = (await a.api.get(f"/api/chats/{chat}/messages")).json()["items"]
    assert len(items) == 2


async def test_concurrent_duplicate_client_ids_yield_one_message(api: Api) -> None:
    a, _, chat = await make_pair(api)
    statuses: list[int] = []

    async def send() -> None:
        r = await a.api.post(
            f"/api/chats/{chat}/messages", json={"content": "dup", "client_id": "same"}
        )
        statuses.append(r.status_code)

    async with trio.open_nursery() as n:
        for _ in range(10):
            n.start_soon(send)
    assert sorted(statuses) == [200] * 9 + [201]
    items = (await a.api.get(f"/api/chats/{chat}/messages")).json()["items"]
    assert [m["seq"] for m in items] == [1]


@pytest.mark.direct_listener(
    reason="counts group commits from /metrics, which the proxy hides (deploy/nginx.conf)"
)
async def test_fifty_concurrent_senders_gapless_and_group_committed(api: Api) -> None:
    owner = await api.signup()
    senders = [await api.signup() for _ in range(49)]
    ws = await make_workspace(owner, *senders)
    chat = await make_chat(owner, ws, "PublicChannel")
    for s in senders:
        assert (await s.api.post(f"/api/chats/{chat}/join")).status_code == 200
    before = await _storage_transactions(owner.api)
    sent: list[int] = []

    async def send(user: User, n: int) -> None:
        r = await user.api.post(f"/api/chats/{chat}/messages", json={"content": f"m{n}"})
        assert r.status_code == 201
        sent.append(r.json()["id"])

    async with trio.open_nursery() as n:
        for i, user in enumerate([owner, *senders]):
            n.start_soon(send, user, i)
    transactions = await _storage_transactions(owner.api) - before
    r = await owner.api.get(f"/api/chats/{chat}/messages?limit=200")
    items = r.json()["items"]
    assert sorted(m["id"] for m in items) == sorted(sent)
    assert sorted(m["seq"] for m in items) == list(range(1, 51))
    assert transactions < 50, f"{transactions} transactions for 50 messages"


async def test_pagination_before_after(api: Api) -> None:
    a, _, chat = await make_pair(api)
    ids = []
    for i in range(7):
        r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": str(i)})
        ids.append(r.json()["id"])
    page = (await a.api.get(f"/api/chats/{chat}/messages?limit=3")).json()
    assert [m["id"] for m in page["items"]] == ids[:-4:-1]
    assert page["has_more"]
    page = (await a.api.get(f"/api/chats/{chat}/messages?limit=3&before={ids[4]}")).json()
    assert [m["id"] for m in page["items"]] == [ids[3], ids[2], ids[1]]
    assert page["has_more"]
    page = (await a.api.get(f"/api/chats/{chat}/messages?limit=3&before={ids[1]}")).json()
    assert [m["id"] for m in page["items"]] == [ids[0]]
    assert not page["has_more"]
    page = (await a.api.get(f"/api/chats/{chat}/messages?limit=3&after={ids[2]}")).json()
    assert [m["id"] for m in page["items"]] == ids[3:6]
    assert page["has_more"]
    page = (await a.api.get(f"/api/chats/{chat}/messages?after={ids[5]}")).json()
    assert [m["id"] for m in page["items"]] == [ids[6]]
    assert not page["has_more"]
    for query in ("limit=0", "limit=201", "limit=abc", "before=-1", "before=1&after=2"):
        r = await a.api.get(f"/api/chats/{chat}/messages?{query}")
        assert r.status_code == 400, query
        assert r.json()["errors"], query


async def test_read_marker_only_moves_forward(api: Api) -> None:
    a, b, chat = await make_pair(api)
    ids = [
        (await a.api.post(f"/api/chats/{chat}/messages", json={"content": str(i)})).json()["id"]
        for i in range(3)
    ]
    assert (
        await b.api.post(f"/api/chats/{chat}/read", json={"message_id": ids[2]})
    ).status_code == 204
    assert (
        await b.api.post(f"/api/chats/{chat}/read", json={"message_id": ids[0]})
    ).status_code == 204
    view = (await b.api.get(f"/api/chats/{chat}")).json()
    assert view["unread_count"] == 0
    r = await b.api.post(f"/api/chats/{chat}/read", json={"message_id": 10**9})
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "message_id")


async def test_typing(api: Api) -> None:
    a, _, chat = await make_pair(api)
    assert (await a.api.post(f"/api/chats/{chat}/typing")).status_code == 204
    outsider = await api.signup()
    assert (await outsider.api.post(f"/api/chats/{chat}/typing")).status_code == 404


@pytest.mark.single_process(
    reason=(
        "exact counts of one process's write limit; in a cluster each node enforces its "
        "share (docs/api.md, "
        "tests/cluster/test_presence.py::test_each_node_enforces_its_share_of_the_per_user_write_limit)"
    )
)
async def test_send_rate_limit(api_with: ApiFactory) -> None:
    limited_api = await api_with(send_burst=3, send_rate=0.01)
    a, _, chat = await make_pair(limited_api)
    for i in range(3):
        r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": str(i)})
        assert r.status_code == 201
    r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "too many"})
    assert (r.status_code, r.json()["code"]) == (429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    items = (await a.api.get(f"/api/chats/{chat}/messages")).json()["items"]
    assert len(items) == 3
