"""Every failure a client can provoke is a problem document; ops endpoints answer."""

from __future__ import annotations

import re
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fechatter.app import ServerInfo
from fechatter.config import default_node_id
from fechatter.http.common import MAX_ID, decimal_at_most
from tests.conftest import Api, ApiFactory, make_chat, make_workspace

PROBLEM = "application/problem+json"


async def test_unknown_route_and_wrong_method(api: Api) -> None:
    r = await api.get("/api/nope")
    assert (r.status_code, r.headers["content-type"], r.json()["code"]) == (
        404,
        PROBLEM,
        "route_not_found",
    )
    r = await api.delete("/api/auth/signup")
    assert (r.status_code, r.headers["content-type"]) == (405, PROBLEM)
    assert "POST" in r.headers["allow"]
    # Ids that are not positive 64-bit integers are not routes either.
    user = await api.signup()
    for bad in ("0", "-1", "abc", "99999999999999999999", str(2**63), "0" + str(2**63 - 1)):
        r = await user.api.get(f"/api/chats/{bad}")
        assert r.status_code == 404, bad
    # Whatever the method: a 19-digit id past 2^63 - 1 once matched the pattern and was refused
    # by the converter, which made werkzeug answer 405 for routes other methods share.
    too_big = str(2**63)
    for method, path in [
        ("PATCH", f"/api/chats/1/messages/{too_big}"),
        ("DELETE", f"/api/chats/1/messages/{too_big}"),
        ("PUT", f"/api/chats/1/members/{too_big}"),
        ("DELETE", f"/api/chats/{too_big}"),
    ]:
        r = await user.api.request(method, path, json={})
        assert (r.status_code, r.json()["code"]) == (404, "route_not_found"), (method, path)


@given(st.integers(min_value=-5, max_value=2**64))
def test_the_id_pattern_matches_exactly_1_to_2_63_minus_1(value: int) -> None:
    pattern = re.compile(decimal_at_most(MAX_ID))
    assert (pattern.fullmatch(str(value)) is not None) == (1 <= value <= MAX_ID)


async def test_malformed_json_and_wrong_content_type(api: Api) -> None:
    r = await api.post(
        "/api/auth/signup", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (r.status_code, r.json()["code"]) == (400, "malformed_json")
    r = await api.post(
        "/api/auth/signup",
        content=b"a=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (r.status_code, r.json()["code"]) == (400, "unsupported_content_type")
    r = await api.post("/api/auth/signup", json=[1, 2])
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "body")
    r = await api.post(
        "/api/auth/signup", content=b"\xff\xfe", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400


# httpx may still be streaming the body when the server answers 413 and closes.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_oversized_body_is_413_and_writes_nothing(api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    chat = await make_chat(a, ws, "Single", b)
    huge = b'{"content": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    r = await a.api.post(
        f"/api/chats/{chat}/messages", content=huge, headers={"Content-Type": "application/json"}
    )
    assert (r.status_code, r.headers["content-type"]) == (413, PROBLEM)
    assert (await a.api.get(f"/api/chats/{chat}/messages")).json()["items"] == []


async def test_wrong_types_are_422_not_500(api: Api) -> None:
    user = await api.signup()
    ws = await make_workspace(user)
    bodies = [
        {"workspace_id": "1", "type": "Group", "members": []},
        {"workspace_id": ws, "type": "Nope"},
        {"workspace_id": ws, "type": "Group", "members": "x"},
        {"workspace_id": ws, "type": "Group", "members": [True]},
        {"workspace_id": 2**70, "type": "Group"},
        {"workspace_id": ws, "type": "PublicChannel", "name": "x" * 129},
    ]
    for body in bodies:
        r = await user.api.post("/api/chats", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"], body


@pytest.mark.direct_listener(reason="reads /metrics, which the proxy hides (deploy/nginx.conf)")
async def test_health_ready_metrics(api: Api) -> None:
    assert (await api.get("/health")).json() == {"status": "ok"}
    assert (await api.get("/ready")).status_code == 200
    text = (await api.get("/metrics")).text
    assert "fechatter_http_requests_total" in text
    assert "fechatter_chat_actors" in text


async def test_online_users_and_realtime_health(api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    chat = await make_chat(a, ws, "Single", b)
    r = await a.api.get(f"/api/online-users?chat_id={chat}")
    assert r.json() == {"user_ids": []}
    r = await a.api.get(f"/api/online-users?workspace_id={ws}")
    assert r.json() == {"user_ids": []}
    assert (await a.api.get("/api/online-users")).status_code == 400
    outsider = await api.signup()
    assert (await outsider.api.get(f"/api/online-users?chat_id={chat}")).status_code == 404
    health = (await a.api.get("/api/sse/health")).json()
    assert health["status"] == "healthy"
    assert health["transport"] == ["sse", "websocket"]


@pytest.mark.single_process(
    reason=(
        "the default node id and a one-node `nodes` list are those of one process (the "
        "cluster modes name their nodes n1..n3)"
    )
)
async def test_realtime_health_names_the_node_by_host_worker_and_boot_epoch(
    server: ServerInfo, api: Api
) -> None:
    health = (await api.get("/api/sse/health")).json()
    # The boot epoch is the one of this process's event ids (not a second one).
    epoch = server.system.users.position.partition("-")[0]
    assert health["node_id"] == default_node_id(epoch) == server.node_id
    assert health["node_id"].startswith(socket.gethostname()[:8].replace(" ", "-"))
    assert health["node_id"].endswith(f"-0-{epoch}")
    assert health["nodes"] == [health["node_id"]]


@pytest.mark.single_process(
    reason=("one process configured with one node id (the cluster modes name their nodes n1..n3)")
)
async def test_realtime_health_reports_a_configured_node_id(api_with: ApiFactory) -> None:
    api = await api_with(node_id="eu-1.node_A")
    health = (await api.get("/api/sse/health")).json()
    assert (health["node_id"], health["nodes"]) == ("eu-1.node_A", ["eu-1.node_A"])
