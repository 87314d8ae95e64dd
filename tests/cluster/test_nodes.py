"""Cluster membership at run time (docs/cluster.md §1, Phase 0 + A1): nodes register, beat,
list each other in ``/api/sse/health``, leave on a graceful stop, expire when their beats
stop, and are not ready without NATS. Real PostgreSQL (embedded) and real NATS servers; all
nodes in this one process (``ClusterHarness``)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import trio

from fechatter.bus import BusState
from fechatter.cluster.node import HEARTBEAT_INTERVAL, NODE_TTL, SELF_FENCE_AFTER
from tests.cluster.harness import ClusterHarness, RunningNode, open_cluster_harness, wait_nodes
from tests.nats import NatsServer
from tests.pg import PgServer, free_port
from tests.test_lifecycle import CHECKOUT, _serve_command

START_CEILING = 30.0  # three nodes: storage, NATS, registration each
# One refresh after the change, plus the beat in flight, plus scheduling slack on 2 cores.
REFRESH_CEILING = 2 * HEARTBEAT_INTERVAL + 1.0


@pytest.fixture
async def cluster(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[ClusterHarness]:
    async with open_cluster_harness(nursery, tmp_path, pg_database, nats_server.url) as harness:
        with trio.fail_after(START_CEILING):
            for _ in range(3):
                await harness.start_node()
        yield harness


async def health(node: RunningNode) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=node.api_url, timeout=10) as client:
        r = await client.get("/api/sse/health")
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


async def ready_status(node: RunningNode) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.api_url, timeout=10) as client:
        return await client.get("/ready")


async def test_three_nodes_list_each_other_in_health(
    cluster: ClusterHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # A cluster start warns of nothing (the preview warning is gone: issue 12 is built).
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    ids = {node.node_id for node in cluster.nodes}
    assert len(ids) == 3
    # Ids are <--node-id>.<boot>: a restart never reuses one.
    assert {i.split(".")[0] for i in ids} == {"n1", "n2", "n3"}
    with trio.fail_after(REFRESH_CEILING):
        for node in cluster.nodes:
            await wait_nodes(node, ids)
    for node in cluster.nodes:
        body = await health(node)
        assert body["node_id"] == node.node_id
        assert sorted(body["nodes"]) == sorted(ids)  # type: ignore[call-overload]
        assert (await ready_status(node)).status_code == 200


async def test_graceful_stop_leaves_the_others_lists_within_a_beat(
    cluster: ClusterHarness,
) -> None:
    ids = {node.node_id for node in cluster.nodes}
    with trio.fail_after(REFRESH_CEILING):
        for node in cluster.nodes:
            await wait_nodes(node, ids)
    first, second, leaving = cluster.nodes
    gone = leaving.node_id
    await leaving.stop()
    # Released at once (not expired after the TTL): the next refresh no longer lists it.
    with trio.fail_after(REFRESH_CEILING):
        await wait_nodes(first, ids - {gone})
        await wait_nodes(second, ids - {gone})
    assert gone not in (await health(first))["nodes"]  # type: ignore[operator]


async def test_node_whose_beats_stop_expires_and_fences_itself(cluster: ClusterHarness) -> None:
    ids = {node.node_id for node in cluster.nodes}
    with trio.fail_after(REFRESH_CEILING):
        for node in cluster.nodes:
            await wait_nodes(node, ids)
    first, second, hung = cluster.nodes
    hung.cluster.halt_heartbeat()  # no release: as if the process hung
    with trio.fail_after(SELF_FENCE_AFTER + 2.0):
        while not hung.cluster.self_fenced:
            await hung.cluster.wait_changed()
    r = await ready_status(hung)
    assert r.status_code == 503
    assert r.json()["code"] == "not_ready"
    assert "fenced" in r.json()["detail"]
    with trio.fail_after(NODE_TTL + REFRESH_CEILING):
        await wait_nodes(first, ids - {hung.node_id})
        await wait_nodes(second, ids - {hung.node_id})


async def test_expired_row_fences_and_registers_under_a_new_boot(
    cluster: ClusterHarness, pg_server: PgServer
) -> None:
    ids = {node.node_id for node in cluster.nodes}
    with trio.fail_after(REFRESH_CEILING):
        for node in cluster.nodes:
            await wait_nodes(node, ids)
    first, _, expired = cluster.nodes
    old = expired.node_id

    def expire() -> None:  # as after a pause longer than the TTL
        database = cluster.database_url.rsplit("/", 1)[1]
        with pg_server.connect(database) as conn:
            conn.execute("UPDATE cluster_nodes SET expires_at = now() WHERE node_id = %s", (old,))

    await trio.to_thread.run_sync(expire)
    with trio.fail_after(REFRESH_CEILING):
        while expired.node_id == old:
            await expired.cluster.wait_changed()
    new = expired.node_id
    assert old not in expired.cluster.nodes  # dead at once, before the next refresh
    assert new.split(".")[0] == "n3"
    assert new != old
    with trio.fail_after(REFRESH_CEILING):
        await wait_nodes(first, ids - {old} | {new})
        await wait_nodes(expired, ids - {old} | {new})
    assert not expired.cluster.self_fenced  # its new row's beat is confirmed
    assert (await health(expired))["node_id"] == new


async def test_ready_is_503_while_nats_is_down(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str
) -> None:
    server = await trio.to_thread.run_sync(NatsServer.create)
    try:
        async with open_cluster_harness(nursery, tmp_path, pg_database, server.url) as cluster:
            with trio.fail_after(START_CEILING):
                node = await cluster.start_node()
            assert (await ready_status(node)).status_code == 200
            await trio.to_thread.run_sync(server.stop)
            with trio.fail_after(10):
                await node.cluster.bus.wait_state(BusState.RECONNECTING)
            r = await ready_status(node)
            assert r.status_code == 503
            assert r.json()["code"] == "not_ready"
            assert "NATS" in r.json()["detail"]
            # Liveness stays 200, and the heartbeat goes on (PostgreSQL decides liveness).
            async with httpx.AsyncClient(base_url=node.api_url, timeout=10) as client:
                assert (await client.get("/health")).status_code == 200
            assert not node.cluster.self_fenced
            await trio.to_thread.run_sync(server.start)
            with trio.fail_after(10):
                await node.cluster.bus.wait_state(BusState.CONNECTED)
            assert (await ready_status(node)).status_code == 200
    finally:
        await trio.to_thread.run_sync(server.stop_and_remove)


@pytest.mark.parametrize(
    ("database", "secret", "named"),
    [
        ("sqlite", "s" * 40, "database_url"),
        ("postgresql://127.0.0.1:1/fechatter", "", "jwt_secret"),
    ],
)
async def test_cli_refuses_cluster_mode_without_postgres_or_secret(
    tmp_path: Path, database: str, secret: str, named: str
) -> None:
    """A NATS URL needs a shared PostgreSQL and a shared JWT secret: exit 2, one line."""
    flags = ["--nats-url", "nats://127.0.0.1:4222"]
    if database != "sqlite":
        flags += ["--database-url", database]  # the later flag wins in argparse
    command = _serve_command(tmp_path, *flags)
    env = {**os.environ, "PYTHONPATH": CHECKOUT, "FECHATTER_JWT_SECRET": secret}
    with trio.fail_after(30):
        result = await trio.run_process(
            command, capture_stderr=True, check=False, cwd=tmp_path, env=env
        )
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, err
    assert err.startswith(f"fechatter: bad configuration: {named}: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


async def test_cli_says_nats_is_unreachable_without_a_traceback(
    tmp_path: Path, pg_database: str
) -> None:
    """NATS down at start is the operator's to fix: a last line naming it, exit 1."""
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    command = _serve_command(
        tmp_path, "--realtime-port", "0", "--database-url", pg_database, "--nats-url", url
    )
    env = {**os.environ, "PYTHONPATH": CHECKOUT, "FECHATTER_JWT_SECRET": "s" * 40}
    with trio.fail_after(30):
        result = await trio.run_process(
            command, capture_stderr=True, check=False, cwd=tmp_path, env=env
        )
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 1, err
    assert err.splitlines()[-1].startswith(f"fechatter: cannot reach NATS at {url}: ")
    assert "Traceback" not in err


async def test_a_full_pool_does_not_delay_the_heartbeat(cluster: ClusterHarness) -> None:
    """The node's row is written on a reserved connection (``PostgresStorage.reserved``):
    with every pooled connection held (slow writes), beats go on and the node never fences
    itself. Without the reservation the beat waits for the pool and the node fences."""
    node = cluster.nodes[0].cluster
    storage = node.store.storage
    held = trio.Event()
    release = trio.Event()

    async def hold_every_connection() -> None:
        async with AsyncExitStack() as stack:
            for _ in range(storage.pool_size):
                await stack.enter_async_context(storage._pool.connection())
            held.set()
            await release.wait()

    with trio.fail_after(REFRESH_CEILING * 3):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold_every_connection)
            await held.wait()
            for _ in range(int(node.timing.self_fence_after / node.timing.interval) + 1):
                await node.wait_changed()  # a beat and a refresh, each on the reserved one
            assert not node.self_fenced
            release.set()
