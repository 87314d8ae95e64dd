"""Property-based fuzzing of every route and every WebSocket op (hypothesis).

The property, for every generated input: the answer is a success (2xx; for a WebSocket op an
answer frame or none) or a 4xx problem document (``application/problem+json`` with ``status``
and ``code``; on a WebSocket an ``error`` frame whose data is one) — never a 5xx, never a
closed connection — and the server keeps serving: ``/health`` and a real signed-in request
answer after every example, and the server log stays clean (no traceback, no ERROR record;
see tests/serverlog.py). A failure names the example (route, raw body, answer).

What is thrown comes from two tables: ``ROUTES`` (method, path template, body fields with a
hint of what a valid value looks like, query parameters) and ``WS_OPS``. ``ROUTES`` is kept
complete by ``tests/test_openapi.py``, which fails when an operation of ``/openapi.json`` is
missing from it (schemathesis covers the description's own shapes; this table aims hostile
JSON at fields by name). Each test function is one *kind*
of bad input (wrong types, odd numbers, unpaired surrogates, deep nesting, unknown fields,
non-object bodies, odd query strings), thrown at routes and ops alike, so a kind that is
not fixed yet can be marked ``xfail`` on its own.

How hypothesis and trio meet: hypothesis drives a *synchronous* test function (``@given``
with a bounded ``max_examples``, ``derandomize=True`` so CI sees the same examples every run,
no example database, ``deadline=None`` because the machine is slow and shared, no shrinking
phase to keep failures fast). One in-process server runs for the whole module in its own
thread under ``trio.run``; each example crosses into that trio loop with
``trio.from_thread.run`` (the "portal"), where the requests are made with the same clients
as the rest of the suite, under a ``trio.fail_after`` ceiling. pytest-trio's own hypothesis
support would start a new ``trio.run`` per example, and with it a new server. Every test
function gets a fresh workspace and chats (``World``), so a chat an earlier kind broke
(an actor past its restart budget) cannot fail a later kind.

To see every failing example of a run rather than the first of each kind (hypothesis stops
there), set ``FECHATTER_FUZZ_COLLECT=<file>``: failures are appended to the file and the
tests pass. A debugging aid only; CI never sets it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
import trio
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from fechatter.app import ServerInfo, serve
from tests.conftest import Api, User, make_chat, make_settings, make_workspace
from tests.realtime.clients import RawWs
from tests.serverlog import LogWatch

T = TypeVar("T")
PROBLEM = "application/problem+json"
EXAMPLE_CEILING = 30.0  # seconds for one example, all its requests included


# --- The tables -----------------------------------------------------------------------------

# Hints say what a valid value of a field looks like. Names (ws, chat, public_chat, message,
# user, foreign_*) are ids of the World the test runs in; the others are literal shapes.
VALID: dict[str, Any] = {
    "name": "fuzz name",
    "text": "hello",
    "email": "someone@example.com",
    "password": "correct horse",
    "token": "t" * 43,
    "role": "member",
    "chat_type": "Group",
    "files": [],
    "int": 10,
    "bool": True,
    "status": "away",
    "time": "2026-01-31T12:00:00Z",
    "file_urls": ["/files/abc"],
}


@dataclass(frozen=True)
class Route:
    """One API route: ``body`` maps field → hint (None: the route reads no body)."""

    method: str
    path: str
    body: dict[str, str] | None = None
    query: dict[str, str] = field(default_factory=dict)
    auth: bool = True
    # Routes that may end the caller's session (logout, a password change) are sent as a
    # bystander, replaced when its token stops working; the actor's stream stays open.
    ends_session: bool = False


@dataclass(frozen=True)
class WsOp:
    """One WebSocket client op: ``fields`` maps field → hint, like a route's body."""

    op: str
    fields: dict[str, str]


# Routes that delete or leave point at the World's *foreign* workspace and chat (owned by
# someone else), so they are refused and the World stays whole for the next example.
ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/auth/signup", {"fullname": "name", "email": "email",
          "password": "password", "workspace": "name"}, auth=False),
    Route("POST", "/api/auth/signin", {"email": "email", "password": "password"}, auth=False),
    Route("POST", "/api/auth/refresh", {"refresh_token": "token"}, auth=False),
    Route("POST", "/api/auth/logout", {"refresh_token": "token"}, ends_session=True),
    Route("GET", "/api/users/me"),
    Route("PATCH", "/api/users/me", {"fullname": "name", "avatar": "text",
          "password": "password", "current_password": "password"}, ends_session=True),
    Route("GET", "/api/workspaces"),
    Route("POST", "/api/workspaces", {"name": "name", "description": "text"}),
    Route("GET", "/api/workspaces/{ws}"),
    Route("PUT", "/api/workspaces/{ws}", {"name": "name", "description": "text"}),
    Route("DELETE", "/api/workspaces/{foreign_ws}"),
    Route("GET", "/api/workspaces/{ws}/members"),
    Route("POST", "/api/workspaces/{ws}/members", {"email": "email", "role": "role"}),
    Route("DELETE", "/api/workspaces/{foreign_ws}/members/{foreign_owner}"),
    Route("GET", "/api/workspaces/{ws}/chats", query={"type": "chat_type"}),
    Route("GET", "/api/chats", query={"workspace_id": "ws"}),
    Route("POST", "/api/chats", {"workspace_id": "ws", "type": "chat_type", "name": "name",
          "description": "text", "members": "user_ids"}),
    Route("GET", "/api/chats/{chat}"),
    Route("PUT", "/api/chats/{chat}", {"name": "name", "description": "text"}),
    Route("DELETE", "/api/chats/{foreign_chat}"),
    Route("GET", "/api/chats/{chat}/members"),
    Route("POST", "/api/chats/{chat}/members", {"user_ids": "user_ids"}),
    Route("DELETE", "/api/chats/{foreign_chat}/members/{foreign_owner}"),
    Route("POST", "/api/chats/{public_chat}/join"),
    Route("GET", "/api/chats/{chat}/messages", query={"limit": "int", "before": "message",
          "after": "message", "thread_id": "message", "around": "message",
          "top_level": "text"}),
    Route("POST", "/api/chats/{chat}/messages", {"content": "text", "files": "files",
          "reply_to": "message", "thread_id": "message", "client_id": "text"}),
    Route("GET", "/api/chats/{chat}/messages/{message}"),
    Route("PATCH", "/api/chats/{chat}/messages/{message}", {"content": "text"}),
    Route("DELETE", "/api/chats/{foreign_chat}/messages/{foreign_message}"),
    Route("POST", "/api/chats/{chat}/read", {"message_id": "message"}),
    Route("PUT", "/api/chats/{chat}/members/{other}", {"role": "role"}),
    Route("PUT", "/api/chats/{chat}/messages/{message}/reactions/%F0%9F%91%8D"),
    Route("DELETE", "/api/chats/{chat}/messages/{message}/reactions/%3A%2B1%3A"),
    Route("POST", "/api/chats/{chat}/typing"),
    Route("GET", "/health", auth=False),
    Route("GET", "/ready", auth=False),
    Route("GET", "/metrics", auth=False),
    Route("GET", "/api/online-users", query={"chat_id": "chat", "workspace_id": "ws"}),
    Route("GET", "/api/sse/health"),
    Route("GET", "/", auth=False),
    Route("GET", "/api/client-config", auth=False),
    # Added when tests/test_openapi.py began checking this table against /openapi.json.
    Route("PUT", "/api/chats/{chat}/notifications", {"muted": "bool"}),
    Route("GET", "/api/invites/" + "t" * 43, auth=False),
    Route("POST", "/api/invites/" + "t" * 43 + "/accept"),
    Route("GET", "/api/search/messages", query={"q": "text", "workspace_id": "ws",
          "chat_id": "chat", "from": "other", "before": "time", "after": "time",
          "limit": "int", "cursor": "text", "sort": "text"}),
    Route("PUT", "/api/users/me/status", {"status": "status", "text": "text",
          "expires_in": "int"}),
    Route("GET", "/api/users/{other}"),
    Route("POST", "/api/workspaces/{ws}/invites", {"email": "email", "role": "role",
          "max_uses": "int", "expires_in": "int"}),
    Route("GET", "/api/workspaces/{ws}/invites"),
    Route("DELETE", "/api/workspaces/{foreign_ws}/invites/1"),
    Route("PUT", "/api/workspaces/{foreign_ws}/members/{foreign_owner}", {"role": "role"}),
    Route("POST", "/api/files/sign", {"urls": "file_urls"}),
    Route("GET", "/api/password-resets/" + "t" * 43, auth=False),
    Route("POST", "/api/password-resets/" + "t" * 43, {"password": "password"}, auth=False),
)  # fmt: skip

WS_OPS: tuple[WsOp, ...] = (
    WsOp("ping", {}),
    WsOp("typing", {"chat_id": "chat"}),
    WsOp("read", {"chat_id": "chat", "message_id": "message"}),
    WsOp("send", {"chat_id": "chat", "content": "text", "files": "files",
                  "reply_to": "message", "thread_id": "message", "client_id": "text"}),
)  # fmt: skip

BODY_ROUTES = tuple(r for r in ROUTES if r.method != "GET")
QUERY_ROUTES = tuple(r for r in ROUTES if r.query)


# --- JSON with the tokens Python's json module will not write -------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON text written as is: numbers out of every range, nesting past any limit."""

    text: str

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''} len={len(self.text)})"


@dataclass(frozen=True)
class Ref:
    """The id of one of the World's objects (``VALID`` hints are literal instead)."""

    name: str


def encode(value: Any, ids: dict[str, int]) -> str:
    """JSON text of ``value``; strings are ASCII-escaped, so a lone surrogate is ``\\ud83d``."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Ref):
        return str(ids[value.name])
    if isinstance(value, dict):
        return "{" + ",".join(f"{encode(k, ids)}:{encode(v, ids)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, ids) for v in value) + "]"
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


def valid_value(hint: str) -> Any:
    if hint == "user_ids":
        return [Ref("other")]
    return VALID[hint] if hint in VALID else Ref(hint)


# --- Kinds of input ------------------------------------------------------------------------

LONE_SURROGATES = ("\ud83d", "\udc00", "\udbff", "\udfff")

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

ODD_NUMBER_TOKENS = (
    str(2**64), str(2**63), str(-(2**63) - 1), "-0", "-0.0", "1e400", "-1e400", "1e-400",
    "1E+99999", "9" * 5000, "-" + "9" * 5000, "0." + "0" * 5000 + "1", "1" + "0" * 4300,
    "123456789012345678901234567890.5",
)  # fmt: skip
odd_numbers: st.SearchStrategy[Any] = st.sampled_from(
    [Raw(t) for t in ODD_NUMBER_TOKENS]
) | st.integers(min_value=-(2**80), max_value=2**80)

surrogate_text: st.SearchStrategy[Any] = st.builds(
    lambda a, s, b: a + s + b,
    st.text(max_size=6),
    st.sampled_from(LONE_SURROGATES),
    st.text(max_size=6),
)


def _nested(depth: int, kind: str) -> Raw:
    if kind == "array":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


deep_nesting: st.SearchStrategy[Any] = st.builds(
    _nested, st.sampled_from([64, 1_000, 5_000, 100_000]), st.sampled_from(["array", "object"])
)

non_object_bodies: st.SearchStrategy[Any] = (
    st.lists(json_values, max_size=3)
    | st.text(max_size=10)
    | st.integers()
    | st.none()
    | st.booleans()
    | st.sampled_from([Raw(""), Raw(" "), Raw("{"), Raw('{"a":'), Raw("[1,]"), Raw("NaN"),
                       Raw("Infinity"), Raw("\ufeff{}"), Raw("{}{}")])
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """A route or a WebSocket op, with the body (or frame) to send it."""

    route: Route | None
    op: WsOp | None
    body: Any
    query: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        where = f"{self.route.method} {self.route.path}" if self.route else f"ws op {self.op}"
        return f"Target({where}, body={self.body!r}, query={self.query!r})"


def _base(fields: dict[str, str]) -> dict[str, Any]:
    return {name: valid_value(hint) for name, hint in fields.items()}


@st.composite
def field_values(draw: st.DrawFn, kind: st.SearchStrategy[Any]) -> Target:
    """A route or op whose body has one or more fields replaced by a ``kind`` value."""
    route, op, fields = _pick(draw)
    body = _base(fields)
    if fields:
        names = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=3, unique=True))
        for name in names:
            body[name] = draw(kind)
    else:
        body["x"] = draw(kind)
    return _target(route, op, body)


@st.composite
def extra_fields(draw: st.DrawFn) -> Target:
    """A valid body plus unknown fields of any value (also the ``op`` field's neighbours)."""
    route, op, fields = _pick(draw)
    body = _base(fields)
    body.update(draw(st.dictionaries(st.text(max_size=10), json_values, min_size=1, max_size=4)))
    return _target(route, op, body)


@st.composite
def whole_bodies(draw: st.DrawFn, kind: st.SearchStrategy[Any]) -> Target:
    """A route or op whose whole body (frame) is a ``kind`` value."""
    route, op, _ = _pick(draw)
    return Target(route, op, draw(kind))


@st.composite
def query_strings(draw: st.DrawFn) -> Target:
    """A GET route with its query parameters set to odd text (percent-encoded as UTF-8,
    lone surrogates included, which become bytes no UTF-8 decoder accepts)."""
    route = draw(st.sampled_from(QUERY_ROUTES))
    odd = (
        st.text(max_size=10)
        | surrogate_text
        | st.sampled_from(ODD_NUMBER_TOKENS)
        | st.integers(min_value=-(2**70), max_value=2**70).map(str)
    )
    names = st.sampled_from(sorted(route.query))
    query = draw(st.dictionaries(names, odd, min_size=1))
    return Target(route, None, None, query)


def _pick(draw: st.DrawFn) -> tuple[Route | None, WsOp | None, dict[str, str]]:
    if draw(st.integers(0, 3)) == 0:  # a quarter of the examples go to a WebSocket op
        op = draw(st.sampled_from(WS_OPS))
        return None, op, op.fields
    route = draw(st.sampled_from(BODY_ROUTES))
    return route, None, route.body or {}


def _target(route: Route | None, op: WsOp | None, body: dict[str, Any]) -> Target:
    if op is not None:
        body = {"op": op.op, **body}
    return Target(route, op, body)


# --- The server, in its own thread, for the whole module ------------------------------------


@dataclass
class World:
    """The objects the examples aim at. ``actor`` sends the examples (``bystander`` those
    that may end a session); ``sentinel`` is the "real signed-in request" that must keep
    working."""

    actor: User
    bystander: User
    sentinel: User
    ids: dict[str, int]
    ws: RawWs | None = None


class Portal:
    """Runs coroutines in the server's trio loop from the (synchronous) hypothesis thread."""

    def __init__(self, token: trio.lowlevel.TrioToken, info: ServerInfo, client: httpx.AsyncClient):
        self.token = token
        self.info = info
        self.client = client

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def bounded() -> T:
            with trio.fail_after(EXAMPLE_CEILING):
                return await fn(*args)

        return trio.from_thread.run(bounded, trio_token=self.token)


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    server_settings = make_settings(folder, send_rate=10_000.0, send_burst=10_000)
    handoff: queue.Queue[Portal | BaseException] = queue.Queue()
    stop = trio.Event()
    watch = LogWatch()
    logging.getLogger().addHandler(watch)

    async def main() -> None:
        try:
            async with trio.open_nursery() as nursery:
                shutdown = trio.Event()
                info: ServerInfo = await nursery.start(serve, server_settings, shutdown)
                async with httpx.AsyncClient(base_url=info.api_url, timeout=10) as client:
                    handoff.put(Portal(trio.lowlevel.current_trio_token(), info, client))
                    await stop.wait()
                shutdown.set()
        except BaseException as exc:
            handoff.put(exc)
            raise

    thread = threading.Thread(target=trio.run, args=(main,), name="fuzz-server")
    thread.start()
    try:
        started = handoff.get(timeout=60)
        if isinstance(started, BaseException):
            raise started
        assert watch.take() == [], "the server logged problems while starting"
        yield started
        watch.take()  # the tests checked their own examples' records
        trio.from_thread.run_sync(stop.set, trio_token=started.token)
    finally:
        thread.join(timeout=60)
        logging.getLogger().removeHandler(watch)
    assert not thread.is_alive(), "the fuzz server did not stop"
    assert watch.take() == [], "the server logged problems while stopping"


async def _new_world(portal: Portal) -> World:
    api = Api(portal.client)
    actor, other, sentinel = await api.signup(), await api.signup(), await api.signup()
    ws = await make_workspace(actor, other, sentinel)
    chat = await make_chat(actor, ws, "Group", other, sentinel)
    public = await make_chat(sentinel, ws, "PublicChannel")
    r = await actor.api.post(f"/api/chats/{chat}/messages", json={"content": "first"})
    assert r.status_code == 201, r.text
    message = r.json()["id"]
    foreign_ws = await make_workspace(sentinel, actor)
    foreign_chat = await make_chat(sentinel, foreign_ws, "PublicChannel")
    await actor.api.post(f"/api/chats/{foreign_chat}/join")
    theirs = await sentinel.api.post(f"/api/chats/{foreign_chat}/messages", json={"content": "x"})
    assert theirs.status_code == 201, theirs.text
    ids = {
        "ws": ws,
        "chat": chat,
        "public_chat": public,
        "message": message,
        "other": other.id,
        "foreign_ws": foreign_ws,
        "foreign_chat": foreign_chat,
        "foreign_owner": sentinel.id,
        "foreign_message": theirs.json()["id"],
    }
    world = World(actor, await api.signup(), sentinel, ids)
    world.ws = await RawWs.connect(portal.info.realtime_url, actor.auth["token"])
    ready = await world.ws.next_message()
    assert ready["event"] == "ready", ready
    return world


@pytest.fixture
def world(portal: Portal) -> Iterator[World]:
    w = portal.run(_new_world, portal)
    yield w
    if w.ws is not None:
        portal.run(w.ws.aclose)


# --- The property -----------------------------------------------------------------------------


def _is_problem(status: int, content_type: str, data: Any) -> bool:
    return (
        content_type.startswith(PROBLEM)
        and isinstance(data, dict)
        and data.get("status") == status
        and isinstance(data.get("code"), str)
    )


async def _http_example(portal: Portal, world: World, target: Target) -> str | None:
    route = target.route
    assert route is not None
    path = route.path.format(**world.ids)
    if target.query:
        pairs = [
            f"{quote(k)}={quote(str(v).encode('utf-8', 'surrogatepass'))}"
            for k, v in target.query.items()
        ]
        path += "?" + "&".join(pairs)
    caller = world.bystander if route.ends_session else world.actor
    headers = {"Authorization": f"Bearer {caller.auth['token']}"} if route.auth else {}
    content: bytes | None = None
    if target.body is not None:
        content = encode(target.body, world.ids).encode("utf-8")  # a Raw body may hold a BOM
        headers["Content-Type"] = "application/json"
    r = await portal.client.request(route.method, path, content=content, headers=headers)
    if r.status_code >= 400:
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code >= 500 or not _is_problem(
            r.status_code, r.headers.get("content-type", ""), data
        ):
            return f"{route.method} {path} answered {r.status_code}: {r.text[:300]}"
    elif not 200 <= r.status_code < 300:
        return f"{route.method} {path} answered {r.status_code}"
    return None


async def _ws_example(portal: Portal, world: World, target: Target) -> str | None:
    ws = world.ws
    assert ws is not None
    try:
        await ws.send_text(encode(target.body, world.ids))
        await ws.send_text('{"op":"ping","fuzz":"end of example"}')
        # Read up to the pong that answers the ping: every answer to the example came before.
        while True:
            frame = await ws.next_message()
            event = frame.get("event")
            if event == "pong":
                return None
            if event == "error":
                data = frame.get("data")
                status = data.get("status") if isinstance(data, dict) else None
                if not (isinstance(status, int) and 400 <= status < 500 and "code" in data):
                    return f"ws op answered the error frame {frame}"
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        # A fresh connection for the next example (there is one only in exploration runs).
        await ws.aclose()
        world.ws = await RawWs.connect(portal.info.realtime_url, world.actor.auth["token"])
        await world.ws.next_message()  # ready
        return f"the server closed the WebSocket: {exc!r}"


async def _still_serving(portal: Portal, world: World, target: Target) -> str | None:
    if target.route is not None and target.route.ends_session:
        r = await world.bystander.api.get("/api/users/me")
        if r.status_code == 401:  # the example ended its session: a new bystander
            world.bystander = await Api(portal.client).signup()
    r = await portal.client.get("/health")
    if r.status_code != 200:
        return f"/health answered {r.status_code}"
    r = await world.sentinel.api.get(f"/api/chats/{world.ids['chat']}/messages?limit=1")
    if r.status_code != 200:
        return f"a signed-in request answered {r.status_code}: {r.text[:200]}"
    return None


def check(portal: Portal, world: World, server_log: LogWatch, target: Target) -> None:
    """Run one example and assert the property (see the module docstring)."""
    run = _http_example if target.route is not None else _ws_example
    failure = portal.run(run, portal, world, target)
    failure = failure or portal.run(_still_serving, portal, world, target)
    logged = server_log.take()
    if logged:
        failure = (failure or "") + "\nthe server logged:\n" + "\n".join(logged)
    if failure is not None and (collect := os.environ.get("FECHATTER_FUZZ_COLLECT")):
        with open(collect, "a") as f:
            f.write(f"=== {target!r}\n{failure}\n")
        return
    assert failure is None, failure


FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    # The module-wide server and the per-test World are meant to outlive the examples; the
    # log watch is taken (emptied) after every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(target=field_values(json_values))
def test_fields_of_the_wrong_type(
    portal: Portal, world: World, server_log: LogWatch, target: Target
) -> None:
    check(portal, world, server_log, target)


@FUZZ
@given(target=field_values(odd_numbers))
def test_huge_and_odd_numbers(
    portal: Portal, world: World, server_log: LogWatch, target: Target
) -> None:
    check(portal, world, server_log, target)


def _route(method: str, path: str) -> Route:
    return next(r for r in ROUTES if (r.method, r.path) == (method, path))


@FUZZ
@given(target=field_values(surrogate_text))
# The examples: half an emoji in a message, and in a new user's name.
@example(
    target=Target(
        _route("POST", "/api/chats/{chat}/messages"), None, {"content": "half an emoji \ud83d"}
    )
)
@example(
    target=Target(
        _route("POST", "/api/auth/signup"),
        None,
        {"fullname": "\ud83d", "email": "half@example.com", "password": "correct horse"},
    )
)
def test_unpaired_surrogates(
    portal: Portal, world: World, server_log: LogWatch, target: Target
) -> None:
    check(portal, world, server_log, target)


@FUZZ
@given(target=field_values(deep_nesting) | whole_bodies(deep_nesting))
# The example: 100,000 `[` then 100,000 `]` on sign-in.
@example(target=Target(_route("POST", "/api/auth/signin"), None, _nested(100_000, "array")))
# Several deep fields make a body over the 1 MB limit: the server rightly answers 413 before
# it has read it all, which leaves httpx's request-body generator unfinished (a client-side
# artefact, reported when it is garbage collected).
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object ByteStream.__aiter__"
    ":pytest.PytestUnraisableExceptionWarning"
)
def test_deep_nesting(portal: Portal, world: World, server_log: LogWatch, target: Target) -> None:
    check(portal, world, server_log, target)


@FUZZ
@given(target=extra_fields())
def test_unknown_fields(portal: Portal, world: World, server_log: LogWatch, target: Target) -> None:
    check(portal, world, server_log, target)


@FUZZ
@given(target=whole_bodies(non_object_bodies))
def test_bodies_that_are_not_objects(
    portal: Portal, world: World, server_log: LogWatch, target: Target
) -> None:
    check(portal, world, server_log, target)


@FUZZ
@given(target=query_strings())
def test_odd_query_strings(
    portal: Portal, world: World, server_log: LogWatch, target: Target
) -> None:
    check(portal, world, server_log, target)
