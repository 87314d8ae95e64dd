"""The ChatRouter's refusal, retry and failure paths (docs/cluster.md §3's outcome table),
on real PostgreSQL and NATS with two nodes of ``ClusterHarness`` in this process.

A "fake owner" is a row in ``cluster_nodes`` that no node runs, holding a chat's lease: its
inbox is either absent (NATS answers no-responders) or served by the test on a bus of its
own, answering as the test decides (a protocol mismatch, an unreadable frame, nothing).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from fechatter.actors.commands import Command, SendMessage, SendResult
from fechatter.bus import Message, NatsBus, open_nats_bus
from fechatter.bus.nats import ERROR_HEADER
from fechatter.cluster import codec
from fechatter.cluster import router as router_module
from fechatter.cluster.events import PREFIX
from fechatter.cluster.router import MAX_ATTEMPTS, inbox_subject
from fechatter.errors import (
    ChatMoved,
    CodecError,
    Forbidden,
    NotFound,
    ProtocolMismatch,
    Unavailable,
)
from fechatter.models import NewMessage
from tests.cluster.harness import ClusterHarness, RunningNode, open_cluster_harness, wait_nodes
from tests.cluster.test_router import Clients, _admin, group_chat, lease, messages, router, running
from tests.conftest import User
from tests.nats import NatsServer

START_CEILING = 30.0  # two nodes: storage, NATS, registration each
TEST_CEILING = 40.0
CALL_TIMEOUT = 3.0  # actor_call_timeout of the nodes: bounds every routed call (seconds)
_fakes = itertools.count(1)


@pytest.fixture
async def cluster(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[ClusterHarness]:
    async with open_cluster_harness(nursery, tmp_path, pg_database, nats_server.url) as harness:
        with trio.fail_after(START_CEILING):
            for _ in range(2):
                await harness.start_node(actor_call_timeout=CALL_TIMEOUT)
        yield harness


@pytest.fixture
async def clients(cluster: ClusterHarness) -> AsyncIterator[Clients]:
    async with AsyncExitStack() as stack:
        made = Clients(stack, cluster.nodes)
        await made.open()
        yield made


@pytest.fixture
async def raw(nats_server: NatsServer) -> AsyncIterator[NatsBus]:
    """A bus of the test's own: to send raw frames and to serve a fake owner's inbox."""
    async with open_nats_bus(nats_server.url, op_timeout=5.0) as bus:
        yield bus


def fake_owner(url: str, chat_id: int, ttl: float = 60.0) -> str:
    """Register a live node row no process runs and give it ``chat_id``'s lease (next epoch)."""
    node_id = f"ghost{next(_fakes)}.{time.monotonic_ns()}"
    _admin(
        url,
        "INSERT INTO cluster_nodes (node_id, role, protocol, expires_at, nats_ok)"
        " VALUES (%s, 'all', 1, now() + make_interval(secs => %s), true)",
        node_id,
        ttl,
    )
    _admin(
        url,
        "INSERT INTO chat_leases (chat_id, node_id, epoch) VALUES (%s, %s, 1)"
        " ON CONFLICT (chat_id) DO UPDATE"
        " SET node_id = EXCLUDED.node_id, epoch = chat_leases.epoch + 1",
        chat_id,
        node_id,
    )
    return node_id


Answer = Callable[[Message, int], Awaitable[bytes | None]]


async def serve_fake(
    bus: NatsBus,
    node_id: str,
    answer: Answer,
    seen: list[Message],
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    """Serve ``node_id``'s inbox: ``answer(request, n)`` (n from 1) is published as the reply,
    None answers nothing (the sender times out). Every request is recorded in ``seen``."""
    sub = await bus.subscribe(inbox_subject(PREFIX, node_id), buffer=64)
    # The SUB travels on this bus's connection, the requests on the nodes' own: NATS orders
    # nothing across connections, so a request sent before the server processed the SUB found
    # no responder (CI: `seen` empty, the call timed out). The PONG says it was processed.
    await bus.flush()
    task_status.started()
    async for item in sub:
        assert isinstance(item, Message)
        seen.append(item)
        reply = await answer(item, len(seen))
        if reply is not None:
            await bus.publish(item.reply, reply)


def send_command(user: User, content: str, client_id: str | None) -> SendMessage:
    return SendMessage(NewMessage(user.id, content, (), None, client_id))


def request_frame(chat_id: int, command: Command[object], in_seconds: float = 10.0) -> bytes:
    return codec.encode_request(chat_id, command, time.time() + in_seconds)


async def ask(
    bus: NatsBus, node: RunningNode, frame: bytes, proto: str | None = str(codec.PROTO)
) -> Message:
    headers = None if proto is None else {codec.PROTO_HEADER: proto}
    return await bus.request(inbox_subject(PREFIX, node.node_id), frame, 5.0, headers)


def error_of(reply: Message, command: Command[object]) -> BaseException:
    outcome = codec.decode_reply(reply.payload, command)
    assert isinstance(outcome, codec.Err), outcome
    return outcome.error


# -- the inbox's answers ---------------------------------------------------------------------
@pytest.mark.expect_log_errors(
    r"forwarded command with protocol",
    r"undecodable forwarded command",
    reason="each refusal is logged at ERROR: mixed versions must show in the log",
)
async def test_the_inbox_refuses_other_protocols_unreadable_and_expired_requests_unrun(
    cluster: ClusterHarness, clients: Clients, raw: NatsBus
) -> None:
    n1, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        cmd = send_command(a, "never", "p1")
        frame = request_frame(chat, cmd)
        served = router(n1).served
        for proto in ("99", None, "x1", "0"):
            err = error_of(await ask(raw, n1, frame, proto), cmd)
            assert isinstance(err, ProtocolMismatch), (proto, err)
            assert err.code == "protocol_mismatch"
        # A plain publish (no reply subject) is ignored; the inbox keeps serving.
        await raw.publish(inbox_subject(PREFIX, n1.node_id), frame, {codec.PROTO_HEADER: "1"})
        err = error_of(await ask(raw, n1, b"{not json"), cmd)
        assert isinstance(err, CodecError)
        # A request whose deadline passed on the way is refused without running.
        late = codec.encode_request(chat, cmd, time.time() - 1.0)
        err = error_of(await ask(raw, n1, late), cmd)
        assert isinstance(err, Unavailable)
        assert err.code == "chat_unavailable"
        assert router(n1).served == served + 6  # the plain publish was not served
        assert await messages(clients.on(a, n1), chat) == []  # nothing ran
        assert running(cluster, chat) == []
        # The same frame in time and in our protocol runs.
        ok = codec.decode_reply((await ask(raw, n1, request_frame(chat, cmd))).payload, cmd)
        assert isinstance(ok, codec.Ok)
        assert [m["content"] for m in await messages(clients.on(a, n1), chat)] == ["never"]


async def test_a_node_that_does_not_own_the_chat_answers_chat_moved_unrun(
    cluster: ClusterHarness, clients: Clients, raw: NatsBus, pg_database: str
) -> None:
    n1, n2 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        await router(n1).call(chat, send_command(a, "one", "m1"))
        assert lease(pg_database, chat) == (n1.node_id, 1)
        cmd = send_command(a, "two", "m2")
        err = error_of(await ask(raw, n2, request_frame(chat, cmd)), cmd)
        assert isinstance(err, ChatMoved)
        assert router(n2).cached_owner(chat) is None  # it forgot what it had learnt
        assert running(cluster, chat) == ["n1"]
        assert [m["content"] for m in await messages(clients.on(a, n1), chat)] == ["one"]


async def test_a_self_fenced_node_answers_chat_moved_and_routes_nothing_locally(
    cluster: ClusterHarness, clients: Clients, raw: NatsBus, pg_database: str
) -> None:
    n1, n2 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        await router(n2).call(chat, send_command(a, "one", "f1"))
        assert lease(pg_database, chat) == (n2.node_id, 1)
        n2.cluster.halt_heartbeat()  # a hung node: its watchdog fences it after 4 s
        while not n2.cluster.self_fenced:
            await n2.cluster.wait_changed()
        cmd = send_command(a, "two", "f2")
        err = error_of(await ask(raw, n2, request_frame(chat, cmd)), cmd)
        assert isinstance(err, ChatMoved)
        # Its own callers get 503 at once: a fenced node neither runs nor takes chats.
        with pytest.raises(Unavailable) as caught:
            await router(n2).call(chat, cmd)
        assert caught.value.code == "chat_unavailable"
        other = (await group_chat(cluster, clients))[1]
        with pytest.raises(ChatMoved):
            await n2.info.system.directory.call(other, send_command(a, "x", "f3"))
        assert [m["content"] for m in await messages(clients.on(a, n1), chat)] == ["one"]


# -- the router's outcomes ---------------------------------------------------------------------
async def test_a_chat_that_does_not_exist_is_not_found(cluster: ClusterHarness) -> None:
    n1, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING), pytest.raises(NotFound) as caught:
        await router(n1).call(2_000_000_000, SendMessage(NewMessage(1, "x", (), None, None)))
    assert caught.value.code == "chat_not_found"


async def test_a_peer_answering_protocol_mismatch_is_retried_then_503(
    cluster: ClusterHarness, clients: Clients, raw: NatsBus, pg_database: str
) -> None:
    """Mixed versions fail clearly: every attempt is refused unrun, retried (re-resolved)
    ``MAX_ATTEMPTS`` times, then 503 ``chat_unavailable``; a peer that is upgraded between
    two attempts (here: hands the chat over) gets the retry."""
    n1, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        ghost = fake_owner(pg_database, chat)
        seen: list[Message] = []

        async def mismatch(request: Message, n: int) -> bytes:
            return codec.encode_error(ProtocolMismatch("protocol '1' not in [7]"))

        async with trio.open_nursery() as nursery:
            await nursery.start(serve_fake, raw, ghost, mismatch, seen)
            r = await clients.on(a, n1).post(
                f"/api/chats/{chat}/messages", json={"content": "x", "client_id": "v1"}
            )
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "chat_unavailable"
            assert len(seen) == MAX_ATTEMPTS
            assert all(m.headers == {codec.PROTO_HEADER: str(codec.PROTO)} for m in seen)
            nursery.cancel_scope.cancel()
        # The next call's first attempt is refused too, and the ghost's row ends meanwhile
        # (the old node retired): the retry takes the chat.
        seen.clear()
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_fake, raw, ghost, _leave(pg_database, ghost), seen)
            r = await clients.on(a, n1).post(
                f"/api/chats/{chat}/messages", json={"content": "y", "client_id": "v2"}
            )
            assert r.status_code == 201, r.text
            nursery.cancel_scope.cancel()
        assert len(seen) == 1
        assert lease(pg_database, chat)[0] == n1.node_id
        assert running(cluster, chat) == ["n1"]
        assert [m["content"] for m in await messages(clients.on(a, n1), chat)] == ["y"]


def _leave(url: str, ghost: str) -> Answer:
    """Answer protocol_mismatch and end the ghost's row (an operator retired the old node)."""

    async def answer(request: Message, n: int) -> bytes:
        _admin(url, "UPDATE cluster_nodes SET expires_at = now() WHERE node_id = %s", ghost)
        return codec.encode_error(ProtocolMismatch("protocol '1' not in [7]"))

    return answer


async def test_a_live_owner_without_an_inbox_is_polled_until_its_row_expires(
    cluster: ClusterHarness, clients: Clients, pg_database: str
) -> None:
    """No responders: the owner's row is live but nobody serves its inbox (a crashed node).
    The router waits for the row to expire, then takes the chat at the next epoch."""
    n1, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        ghost = fake_owner(pg_database, chat, ttl=1.0)
        epoch = lease(pg_database, chat)[1]
        start = trio.current_time()
        before = router(n1).forwarded
        reply = await router(n1).call(chat, send_command(a, "after", "h1"))
        assert reply.created
        assert trio.current_time() - start < CALL_TIMEOUT
        assert router(n1).forwarded == before + 1  # no-responders once, then polled the lease
        assert lease(pg_database, chat) == (n1.node_id, epoch + 1)
        assert ghost != n1.node_id


async def test_a_live_owner_without_an_inbox_past_the_deadline_is_503(
    cluster: ClusterHarness, clients: Clients, pg_database: str
) -> None:
    n1, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        ghost = fake_owner(pg_database, chat, ttl=60.0)
        start = trio.current_time()
        r = await clients.on(a, n1).post(
            f"/api/chats/{chat}/messages", json={"content": "x", "client_id": "d1"}
        )
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "chat_unavailable"
        assert trio.current_time() - start >= CALL_TIMEOUT * 0.9
        assert lease(pg_database, chat)[0] == ghost  # never taken from a live row
        assert running(cluster, chat) == []


async def test_an_unknown_outcome_is_retried_only_when_retry_safe(
    cluster: ClusterHarness, clients: Clients, raw: NatsBus, pg_database: str
) -> None:
    """An unreadable answer or a timeout leaves the outcome unknown: a SendMessage without
    ``client_id`` (a repeat would be a second message) is 503 at once after one request;
    with one it is retried — here the retry finds the chat handed over and succeeds."""
    n1, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        ghost = fake_owner(pg_database, chat)
        seen: list[Message] = []

        async def garbage(request: Message, n: int) -> bytes:
            if n == 2:  # the retried request: the ghost hands the chat over
                _admin(pg_database, "DELETE FROM cluster_nodes WHERE node_id = %s", ghost)
            return b"\x00 not a reply frame"

        async with trio.open_nursery() as nursery:
            await nursery.start(serve_fake, raw, ghost, garbage, seen)
            unsafe = send_command(a, "no id", None)
            assert not codec.retry_safe(unsafe)
            with pytest.raises(Unavailable) as caught:
                await router(n1).call(chat, unsafe)
            assert caught.value.code == "chat_unavailable"
            assert len(seen) == 1

            safe = send_command(a, "with id", "u1")
            assert codec.retry_safe(safe)
            reply = await router(n1).call(chat, safe)
            assert reply.created
            assert len(seen) == 2
            nursery.cancel_scope.cancel()
        assert lease(pg_database, chat)[0] == n1.node_id
        assert [m["content"] for m in await messages(clients.on(a, n1), chat)] == ["with id"]


async def test_a_timeout_or_failed_responder_of_a_command_not_retry_safe_is_503_unretried(
    cluster: ClusterHarness, clients: Clients, raw: NatsBus, pg_database: str
) -> None:
    """A silent owner (the call's deadline passes) and an owner whose responder failed (the
    bus's error header): both unknown outcomes, one request each, never a second message."""
    n1, _ = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        ghost = fake_owner(pg_database, chat)
        seen: list[Message] = []

        async def silent_then_failing(request: Message, n: int) -> None:
            if n == 2:
                await raw.publish(request.reply, b"", {ERROR_HEADER: "RuntimeError"})

        async with trio.open_nursery() as nursery:
            await nursery.start(serve_fake, raw, ghost, silent_then_failing, seen)
            start = trio.current_time()
            with pytest.raises(Unavailable) as caught:
                await router(n1).call(chat, send_command(a, "x", None))
            assert caught.value.code == "chat_unavailable"
            assert trio.current_time() - start >= CALL_TIMEOUT * 0.9
            assert len(seen) == 1
            start = trio.current_time()
            with pytest.raises(Unavailable) as caught:
                await router(n1).call(chat, send_command(a, "y", None))
            assert caught.value.code == "chat_unavailable"
            assert trio.current_time() - start < CALL_TIMEOUT / 2  # at once, no retry
            assert len(seen) == 2
            nursery.cancel_scope.cancel()
        assert lease(pg_database, chat)[0] == ghost
        assert await messages(clients.on(a, n1), chat) == []


async def test_the_owner_cache_is_bounded_and_an_evicted_chat_is_resolved_again(
    cluster: ClusterHarness, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    n1, n2 = cluster.nodes
    monkeypatch.setattr(router_module, "OWNER_CACHE_MAX", 2)
    with trio.fail_after(TEST_CEILING):
        chats = []
        users: list[User] = []
        for _ in range(3):
            users, chat = await group_chat(cluster, clients)
            chats.append((users[0], chat))
        for k, (user, chat) in enumerate(chats):
            await router(n2).call(chat, send_command(user, "hi", f"c{k}"))
        first, second, third = (chat for _, chat in chats)
        assert router(n2).cached_owner(first) is None  # the oldest entry went
        assert router(n2).cached_owner(second) is not None
        assert router(n2).cached_owner(third) is not None
        # Using the evicted chat again resolves it (and evicts the next oldest).
        await router(n2).call(first, send_command(chats[0][0], "again", "c9"))
        assert router(n2).cached_owner(first) is not None
        assert router(n2).cached_owner(second) is None
    assert n1.name == "n1"


async def test_a_cached_owner_whose_row_expired_is_not_asked_again(
    cluster: ClusterHarness, clients: Clients, raw: NatsBus, pg_database: str
) -> None:
    """A frozen or cut-off owner can keep its inbox subscription after its row expired (issue
    13, tests/cluster/test_failover.py): a node that cached it resolves the chat again
    instead of forwarding and waiting out the request timeout."""
    n1, n2 = cluster.nodes
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        ghost = fake_owner(pg_database, chat)
        seen: list[Message] = []

        async def refuse_then_freeze(request: Message, n: int) -> bytes | None:
            if n == 1:  # a domain answer: the ghost stays cached as the owner
                return codec.encode_error(Forbidden("not yours", code="forbidden"))
            return None  # frozen: subscribed, never answers

        async with trio.open_nursery() as nursery:
            await nursery.start(serve_fake, raw, ghost, refuse_then_freeze, seen)
            with pytest.raises(Forbidden):
                await router(n1).call(chat, send_command(a, "refused", "f1"))
            assert router(n1).cached_owner(chat) is not None
            _admin(
                pg_database, "UPDATE cluster_nodes SET expires_at = now() WHERE node_id = %s", ghost
            )
            await wait_nodes(n1, {n1.node_id, n2.node_id})
            reply = await router(n1).call(chat, send_command(a, "taken", "f2"))
            assert reply.created
            assert len(seen) == 1  # the expired owner was not asked again
            nursery.cancel_scope.cancel()
        assert lease(pg_database, chat)[0] == n1.node_id


async def test_a_forward_waiting_on_an_owner_whose_row_expires_is_abandoned_and_taken_over(
    cluster: ClusterHarness, clients: Clients, raw: NatsBus, pg_database: str
) -> None:
    """A killed owner never answers a request it had received (issue 13: one chat's takeover
    took 5.1 s, the request timeout, instead of the row's TTL): when the owner leaves the
    live list the forward is abandoned as an unknown outcome, and a retry-safe command (a
    send with ``client_id``) takes the chat over within the same call. Without
    ``serve_departures`` the call waits out its request timeout and ends 503."""
    n1 = cluster.nodes[0]
    with trio.fail_after(TEST_CEILING):
        users, chat = await group_chat(cluster, clients)
        a = users[0]
        ghost = fake_owner(pg_database, chat)
        seen: list[Message] = []
        received = trio.Event()

        async def freeze(request: Message, n: int) -> bytes | None:
            received.set()
            return None  # received, never answered: a process killed mid-request

        replies: list[SendResult] = []

        async def send() -> None:
            replies.append(await router(n1).call(chat, send_command(a, "taken", "d1")))

        async with trio.open_nursery() as nursery:
            await nursery.start(serve_fake, raw, ghost, freeze, seen)
            async with trio.open_nursery() as calls:
                calls.start_soon(send)
                await received.wait()
                _admin(
                    pg_database,
                    "UPDATE cluster_nodes SET expires_at = now() WHERE node_id = %s",
                    ghost,
                )
            nursery.cancel_scope.cancel()
        (reply,) = replies
        assert reply.created
        assert router(n1).abandoned == 1
        assert len(seen) == 1
        assert [m["content"] for m in await messages(clients.on(a, n1), chat)] == ["taken"]
    assert lease(pg_database, chat)[0] == n1.node_id
