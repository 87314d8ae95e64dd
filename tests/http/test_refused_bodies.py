"""Requests answered before their body was read (401, 404, 405, 400, a handler that never
reads it) get their own answer — on every backend, and in ``proxy`` mode through nginx, which
sends a buffered body whole before it reads the answer: a node that answered and closed with
body bytes unread made nginx's send fail (broken pipe) and answer 502 instead
(docs/api.md "Proxy fixes"; nginx's error log is checked clean when the proxy stops)."""

from __future__ import annotations

import json

import httpx
import trio

from tests.conftest import Api, make_chat, make_workspace

CEILING = 90  # seconds: about forty 900 KB requests, through nginx and TLS in proxy mode
BODY = json.dumps({"content": "x" * 900_000}).encode()  # under client_max_body_size 1m
JSON = {"Content-Type": "application/json"}
ROUNDS = 5  # each node in turn, several times, in the cluster and proxy modes


def status_and_code(r: httpx.Response) -> tuple[int, str]:
    assert r.headers["content-type"] == "application/problem+json", (r.status_code, r.text)
    code: str = r.json()["code"]
    return r.status_code, code


async def test_early_answers_to_large_json_bodies_arrive_and_the_api_stays_up(api: Api) -> None:
    with trio.fail_after(CEILING):
        a, b = await api.signup(), await api.signup()
        chat = await make_chat(a, await make_workspace(a, b), "Single", b)
        unknown = 2**62
        refusals = [
            # Anonymous: 401 before the handler reads the body.
            (api, "POST", f"/api/chats/{chat}/messages", JSON, (401, "missing_token")),
            (api, "POST", "/api/workspaces", JSON, (401, "missing_token")),
            # No such route, wrong method: werkzeug's routing answers before any handler.
            (a.api, "POST", "/api/nowhere", JSON, (404, "route_not_found")),
            (a.api, "PUT", "/api/auth/signin", JSON, (405, "method_not_allowed")),
            # Not JSON: refused on its Content-Type, body unread.
            (
                a.api,
                "POST",
                "/api/workspaces",
                {"Content-Type": "text/plain"},
                (400, "unsupported_content_type"),
            ),
            # A handler that takes no body: 404 for a chat that does not exist.
            (a.api, "POST", f"/api/chats/{unknown}/typing", JSON, (404, "chat_not_found")),
        ]
        # Each answer raced quart's reading of the body: through nginx, about one in seven was
        # a 502 before the fix; five rounds (35 requests) make missing the race unlikely.
        for _ in range(ROUNDS):
            for client, method, path, headers, expected in refusals:
                r = await client.request(method, path, content=BODY, headers=headers)
                assert status_and_code(r) == expected, (method, path)
                r = await api.get("/health")
                assert r.status_code == 200, r.text
            # A handler that never reads the body answers with success: that too arrives.
            r = await a.api.post(f"/api/chats/{chat}/typing", content=BODY, headers=JSON)
            assert r.status_code == 204, r.text
        # The API is fine: a real message goes through.
        r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "still here"})
        assert r.status_code == 201, r.text
