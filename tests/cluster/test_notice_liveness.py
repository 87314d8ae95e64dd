"""A user's notice subscription is live at the server before their stream opens
(docs/cluster.md "Built: event wiring", liveness of the notice subscription).

A user with no chat yet learns of a new chat only from the publisher's notice on
``<prefix>.rt.user.<uid>``. If the node reads the user's chats before NATS has processed the
notice subscription's ``SUB``, a chat created in between is in neither: its notice goes to
nobody, the stream opens without it, and the chat's messages never reach the stream until a
reconnect. The node now flushes (PING/PONG) after the SUB and before the read.

The instant is made long on purpose: node 2 reaches NATS through a proxy that holds what the
node sends while the test creates the chat through node 1 and sees its notice published.
Real PostgreSQL (embedded), a real nats-server, two nodes in this process, a real SSE client.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import trio

from fechatter.bus import Message, open_nats_bus
from tests.cluster.harness import open_cluster_harness
from tests.cluster.test_outages import GatedProxy
from tests.conftest import Api, make_workspace
from tests.nats import NatsServer
from tests.realtime.clients import SseClient

START_CEILING = 30.0  # two nodes: storage, NATS, registration each
TEST_CEILING = 45.0  # the whole test on 2 shared cores
DELIVERY_CEILING = 10.0  # the message sent after `ready` reaches the stream by then


class HoldingProxy(GatedProxy):
    """``GatedProxy`` whose node → server direction can be held: while held, what the node
    sends waits in the proxy, in order, and is recorded in ``held``; ``release()`` lets it
    (and everything after it) through. The server → node direction always flows."""

    def __init__(self, upstream: int) -> None:
        super().__init__(upstream)
        self._released = trio.Event()
        self._released.set()
        self.held = bytearray()
        self._held_more = trio.Event()

    def hold(self) -> None:
        self._released = trio.Event()

    def release(self) -> None:
        self._released.set()

    async def wait_held(self, needle: bytes) -> None:
        """Return once ``needle`` is among the held bytes (bound it with a ceiling)."""
        while needle not in self.held:
            self._held_more = trio.Event()
            await self._held_more.wait()

    async def _relay(self, down: trio.SocketStream) -> None:
        async with down:
            try:
                up = await trio.open_tcp_stream("127.0.0.1", self.upstream)
            except OSError:
                return
            async with up, trio.open_nursery() as pipes:
                pipes.start_soon(self._held_pipe, down, up, pipes.cancel_scope)
                pipes.start_soon(self._pipe, up, down, pipes.cancel_scope)

    async def _held_pipe(
        self, source: trio.SocketStream, sink: trio.SocketStream, both: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if not self._released.is_set():
                    self.held += data
                    self._held_more.set()
                    await self._released.wait()
                await sink.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            both.cancel()


async def test_a_chat_made_while_the_notice_sub_is_in_flight_reaches_the_new_stream(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> None:
    proxy = HoldingProxy(nats_server.port)
    proxy_port: int = await nursery.start(proxy.serve)
    prefix = f"t{uuid.uuid4().hex[:10]}"  # a stream of this test's own
    async with (
        open_cluster_harness(nursery, tmp_path, pg_database, nats_server.url) as harness,
        open_nats_bus(nats_server.url, name="watcher", op_timeout=2.0) as watcher,
    ):
        with trio.fail_after(START_CEILING):
            n1 = await harness.start_node(nats_prefix=prefix)
            harness.nats_url = f"nats://127.0.0.1:{proxy_port}"
            n2 = await harness.start_node(nats_prefix=prefix)
        with trio.fail_after(TEST_CEILING):
            async with httpx.AsyncClient(base_url=n1.api_url, timeout=10.0) as client:
                anon = Api(client)
                owner, other, newcomer = [await anon.signup() for _ in range(3)]
                ws = await make_workspace(owner, other, newcomer)  # the newcomer has no chat
                notices = await watcher.subscribe(f"{prefix}.rt.user.{newcomer.id}", buffer=16)
                await watcher.flush()

                proxy.hold()
                ready = trio.Event()
                got: list[tuple[str, dict[str, object]]] = []
                delivered = trio.Event()

                async def stream() -> None:
                    sse = await SseClient.connect(n2.info.realtime_url, newcomer.api.token)
                    try:
                        assert (await sse.next_event()).event == "ready"
                        ready.set()
                        while True:
                            event = await sse.next_event()
                            got.append((event.event, event.data))
                            if event.event == "message.created":
                                delivered.set()
                    finally:
                        with trio.CancelScope(shield=True):
                            await sse.aclose()

                async with trio.open_nursery() as streams:
                    streams.start_soon(stream)
                    # Node 2 has sent the notice SUB; NATS has not seen it (held here).
                    await proxy.wait_held(f".rt.user.{newcomer.id} ".encode())
                    r = await Api(client, owner.api.token).post(
                        "/api/chats",
                        json={
                            "workspace_id": ws,
                            "type": "Group",
                            "members": [other.id, newcomer.id],
                        },
                    )
                    assert r.status_code == 201, r.text
                    chat = int(r.json()["id"])
                    notice = await notices.receive()  # published while node 2 was not listening
                    assert isinstance(notice, Message), notice
                    assert not ready.is_set()  # the stream waits for its routing
                    proxy.release()
                    await ready.wait()
                    r = await Api(client, owner.api.token).post(
                        f"/api/chats/{chat}/messages", json={"content": "after ready"}
                    )
                    assert r.status_code == 201, r.text
                    with trio.move_on_after(DELIVERY_CEILING):
                        await delivered.wait()
                    assert delivered.is_set(), f"the new chat's message never came: {got}"
                    created = [d for name, d in got if name == "message.created"]
                    assert created[0]["chat_id"] == chat
                    assert created[0]["content"] == "after ready"
                    streams.cancel_scope.cancel()
