"""Workspace events committed while NATS is down (docs/cluster.md "Built: workspace events",
Publish): the committing node answers at once and leaves its outbox rows; once NATS is back
the sweeper (rows older than 2 s) stores them, so a member's live stream gets them with no
further traffic, and a resume from before the outage on another node replays them exactly.
Real PostgreSQL (embedded), a nats-server of this test's own stopped and started again, two
nodes in this process, real SSE clients."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import trio

from fechatter.bus import BusState
from tests.cluster.harness import open_cluster_harness
from tests.cluster.test_outages import own_nats
from tests.conftest import Api, make_workspace
from tests.nats import NatsServer
from tests.realtime.clients import Received, SseClient

pytestmark = pytest.mark.slow  # the sweeper's 2 s age, an outage of a server

__all__ = ["own_nats"]  # the fixture

START_CEILING = 30.0  # two nodes: storage, NATS, registration each
TEST_CEILING = 60.0  # outage and sweeper included, on 2 shared cores
WS_EVENTS = ("workspace.updated", "workspace.member_added", "resync")


async def next_ws(sse: SseClient) -> Received:
    return await sse.next_of(*WS_EVENTS)


async def test_a_workspace_change_made_while_nats_is_down_reaches_streams_once_it_is_back(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, own_nats: NatsServer
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"  # a stream of this test's own
    async with open_cluster_harness(nursery, tmp_path, pg_database, own_nats.url) as harness:
        with trio.fail_after(START_CEILING):
            n1 = await harness.start_node(nats_prefix=prefix)
            n2 = await harness.start_node(nats_prefix=prefix)
        with trio.fail_after(TEST_CEILING):
            async with httpx.AsyncClient(base_url=n1.api_url, timeout=10.0) as client:
                anon = Api(client)
                owner, member, joiner = [await anon.signup() for _ in range(3)]
                ws = await make_workspace(owner, member)
                as_owner = Api(client, owner.api.token)
                live = await SseClient.connect(n2.info.realtime_url, member.api.token)
                assert (await live.next_event()).event == "ready"
                r = await as_owner.put(f"/api/workspaces/{ws}", json={"description": "before"})
                assert r.status_code == 200, r.text
                before = await next_ws(live)
                assert (before.event, before.data["description"]) == (
                    "workspace.updated",
                    "before",
                )
                assert before.id

                await trio.to_thread.run_sync(own_nats.stop)
                for node in (n1, n2):
                    await node.cluster.bus.wait_state(BusState.RECONNECTING)
                # Committed and answered while NATS is down: the rows wait in the outbox.
                r = await as_owner.put(f"/api/workspaces/{ws}", json={"description": "down"})
                assert r.status_code == 200, r.text
                r = await as_owner.post(
                    f"/api/workspaces/{ws}/members", json={"email": joiner.email}
                )
                assert r.status_code == 201, r.text
                await trio.to_thread.run_sync(own_nats.start)
                for node in (n1, n2):
                    await node.cluster.bus.wait_state(BusState.CONNECTED)

                # The live stream gets both, in commit order, with no further traffic.
                got = [await next_ws(live) for _ in range(2)]
                assert [(e.event, e.data.get("description")) for e in got] == [
                    ("workspace.updated", "down"),
                    ("workspace.member_added", None),
                ]
                assert got[1].data["user"]["id"] == joiner.id
                await live.aclose()

                # A resume from before the outage, on the other node: exactly those two.
                again = await SseClient.connect(
                    n1.info.realtime_url, member.api.token, last_event_id=before.id
                )
                assert (await again.next_event()).event == "ready"
                replayed = [await next_ws(again) for _ in range(2)]
                assert [(e.event, e.id) for e in replayed] == [(e.event, e.id) for e in got]
                r = await as_owner.put(f"/api/workspaces/{ws}", json={"description": "after"})
                assert r.status_code == 200, r.text
                nxt = await next_ws(again)  # the next live one: nothing doubled
                assert (nxt.event, nxt.data["description"]) == ("workspace.updated", "after")
                await again.aclose()
